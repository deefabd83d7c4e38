"""Image generation: diffusion (diffusers) and a DCGAN, with their trainers; classical augmentation."""

from studio import hookimpl
from studio_image.augment import ImageAugment
from studio_image.diffusion import ImageDiffusion
from studio_image.diffusion_train import DiffusionTrainer
from studio_image.gan import ImageGAN
from studio_image.gan_train import GANTrainer


@hookimpl
def register_generators(register):
    register(ImageDiffusion)
    register(ImageGAN)
    register(ImageAugment)


@hookimpl
def register_trainers(register):
    register(DiffusionTrainer)
    register(GANTrainer)


@hookimpl
def identify_model(path, header):
    """The Stable Diffusion family of a checkpoint, LoRA or embedding file, from its header."""
    from studio_image.diffusion_embeddings import embedding_family
    from studio_image.diffusion_single_file import identify

    return (identify(header) or embedding_family(header)) if header else None
