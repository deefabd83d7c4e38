"""Style transfer: CycleGAN ResnetGenerators, compatible with the reference checkpoints."""

from studio import hookimpl
from studio_style.cyclegan import StyleCycleGAN
from studio_style.cyclegan_train import CycleGANTrainer


@hookimpl
def register_generators(register):
    register(StyleCycleGAN)


@hookimpl
def register_trainers(register):
    register(CycleGANTrainer)
