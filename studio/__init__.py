"""Studio: a plugin-based creative-media generation pipeline.

Scripting:
    import studio
    result = studio.run("pipelines/showcase.yaml", overrides=["title.template=Hi"])
    for artifact in result.artifacts():
        print(artifact.path)

Plugin authors import the contract from here (docs/plugins.md documents every name):
the generator contract (Generator, Params, StepContext, Artifact, media_input,
model_input, batch_groups, check_finite), errors to raise (UserError for a mistake in
the user's input: exit code 2), hookimpl and Writer for the hooks, Trainer and
TrainerOptions for `studio train`, and the helper modules in PUBLIC_MODULES
(`from studio.weights import loading`, ...). Nothing else is promised to stay put.
"""

from __future__ import annotations

from studio import media
from studio.artifacts import Writer
from studio.errors import NonFiniteOutput, PipelineError, StudioError, UserError
from studio.generator import Artifact, Generator, Params, StepContext, batch_groups, media_input, model_input
from studio.hookspecs import hookimpl
from studio.runtime import check_finite
from studio.version import __version__

# Modules whose `__all__` is public too: checkpoint guards, resource limits, content
# sniffing, media types, training, and test helpers for plugin authors.
PUBLIC_MODULES = ("limits", "media", "sniff", "testing", "training", "weights")

_API = {"load", "validate", "plan", "run", "Pipeline"}
_TRAINING = {"Trainer", "TrainerOptions", "TrainConfig"}


def __getattr__(name: str):
    # The API pulls in the executor; plugins importing `studio` should not pay for it.
    if name in _API:
        from studio import api

        return getattr(api, name)
    if name in _TRAINING:
        from studio import training

        return getattr(training, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")


__all__ = ["Artifact", "Generator", "NonFiniteOutput", "Params", "PipelineError", "StepContext", "StudioError",
           "UserError", "Writer", "__version__", "batch_groups", "check_finite", "hookimpl", "media", "media_input",
           "model_input", *sorted(_TRAINING), *sorted(_API)]
