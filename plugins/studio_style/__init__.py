"""Style transfer: CycleGAN ResnetGenerators, compatible with the reference checkpoints."""

from studio import hookimpl
from studio_style.generator import StyleCycleGAN
from studio_style.train import CycleGANTrainer


@hookimpl
def register_generators(register):
    register(StyleCycleGAN)


@hookimpl
def register_trainers(register):
    register(CycleGANTrainer)
