"""Audio: MIDI rendering and the Oobleck VAE."""

from studio import hookimpl
from studio_audio.render import AudioRender
from studio_audio.vae import AudioVAE
from studio_audio.vae_train import VAETrainer


@hookimpl
def register_generators(register):
    register(AudioRender)
    register(AudioVAE)


@hookimpl
def register_trainers(register):
    register(VAETrainer)
