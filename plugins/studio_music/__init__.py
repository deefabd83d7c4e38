"""Music: an autoregressive transformer over MIDI performance events."""

from studio import hookimpl
from studio_music.generator import MusicTransformer
from studio_music.train import MusicTrainer


@hookimpl
def register_generators(register):
    register(MusicTransformer)


@hookimpl
def register_trainers(register):
    register(MusicTrainer)
