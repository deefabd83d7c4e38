"""diffusers support shared by the image and audio plugins: readying a pipeline or an
autoencoder for the device and precision a step runs in. Not a plugin (it registers
nothing); it exists so the host never has to know diffusers."""
