"""Audio file support shared by the audio and eval plugins: decoding a clip safely
(bounded, every failure a UserError naming the file) and converting it to the sample
rate and channel count a model takes. Not a plugin (it registers nothing); any plugin
may import `studio_audio_io.reading`."""
