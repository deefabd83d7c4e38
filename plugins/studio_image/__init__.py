"""Image generation: diffusion (diffusers) and a DCGAN, with their trainers."""

from studio import hookimpl
from studio_image.diffusion import ImageDiffusion
from studio_image.diffusion_train import DiffusionTrainer


@hookimpl
def register_generators(register):
    register(ImageDiffusion)


@hookimpl
def register_trainers(register):
    register(DiffusionTrainer)
