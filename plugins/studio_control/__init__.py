"""Control images and outpainting canvases, made from an image without any model:
`image.preprocess` (canny edges, scribbles, soft edges, content shuffle, tile, grayscale,
inverted line art; OpenCV) and `image.outpaint` (a larger canvas and its inpainting mask).
Registered through the "studio" entry-point group, like any third-party plugin."""

from studio import hookimpl

from studio_control.outpaint import ImageOutpaint
from studio_control.preprocess import ImagePreprocess


@hookimpl
def register_generators(register):
    for generator in (ImagePreprocess, ImageOutpaint):
        register(generator)
