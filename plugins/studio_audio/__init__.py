"""Audio: MIDI rendering (and, next, the Oobleck VAE)."""

from studio import hookimpl
from studio_audio.render import AudioRender


@hookimpl
def register_generators(register):
    register(AudioRender)
