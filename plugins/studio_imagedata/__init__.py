"""Image data shared by the image and eval plugins: training and reference sets from a
folder or a named source (`studio_imagedata.sources.load_images`), and the conversions
between PIL images and [-1, 1] tensors (`studio_imagedata.images`). Not a plugin (it
registers nothing); any plugin may import it."""
