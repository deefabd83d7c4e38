"""Music: an autoregressive transformer over MIDI performance events."""

from studio import hookimpl
from studio_music.transformer import MusicTransformer
from studio_music.transformer_train import MusicTrainer


@hookimpl
def register_generators(register):
    register(MusicTransformer)


@hookimpl
def register_trainers(register):
    register(MusicTrainer)
