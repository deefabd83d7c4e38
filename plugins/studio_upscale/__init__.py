"""Upscaling: ESRGAN-family models (through spandrel), tiled so any size fits in memory."""

from studio import hookimpl
from studio_upscale.upscale import ImageUpscale


@hookimpl
def register_generators(register):
    register(ImageUpscale)
