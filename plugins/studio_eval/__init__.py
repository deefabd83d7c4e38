"""Measures what generators make: the eval.metrics step, `studio eval`, and the trainer
of the image feature network both use."""

from __future__ import annotations

from studio import hookimpl


@hookimpl
def register_generators(register):
    from studio_eval.metrics_step import Metrics

    register(Metrics)


@hookimpl
def register_trainers(register):
    from studio_eval.features_train import FeatureTrainer

    register(FeatureTrainer)


@hookimpl
def register_commands(cli):
    from studio_eval.command import eval_command

    cli.add_command(eval_command)
