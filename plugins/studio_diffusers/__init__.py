"""diffusers support shared by the image, audio and eval plugins: readying a pipeline or
an autoencoder for the device and precision a step runs in, and loading Stable Audio's
Oobleck autoencoder (its latents are audio.vae's medium and eval's audio measure). Not
a plugin (it registers nothing); it exists so the host never has to know diffusers."""
