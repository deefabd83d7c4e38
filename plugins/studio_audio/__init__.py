"""Audio: MIDI rendering, the Oobleck VAE, classical augmentation."""

from studio import hookimpl
from studio_audio.augment import AudioAugment
from studio_audio.render import AudioRender
from studio_audio.vae import AudioVAE
from studio_audio.vae_train import VAETrainer


@hookimpl
def register_generators(register):
    register(AudioRender)
    register(AudioVAE)
    register(AudioAugment)


@hookimpl
def register_trainers(register):
    register(VAETrainer)
