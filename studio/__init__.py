"""Studio: a plugin-based creative-media generation pipeline.

Scripting:
    import studio
    result = studio.run("pipelines/showcase.yaml", overrides=["title.template=Hi"])
    for artifact in result.artifacts():
        print(artifact.path)

Plugin authors import the contract from here: Generator, Params, media_input,
model_input, hookimpl, and UserError (raise it for a mistake in the user's input: the
run reports it as one, exit code 2).
"""

from __future__ import annotations

__version__ = "0.1.0"

from studio.errors import PipelineError, UserError  # noqa: E402
from studio.generator import Artifact, Generator, Params, StepContext, media_input, model_input  # noqa: E402
from studio.hookspecs import hookimpl  # noqa: E402

_API = {"load", "validate", "plan", "run", "Pipeline"}


def __getattr__(name: str):
    # The API pulls in the executor; plugins importing `studio` should not pay for it.
    if name in _API:
        from studio import api

        return getattr(api, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")


__all__ = ["Artifact", "Generator", "Params", "PipelineError", "StepContext", "UserError", "hookimpl", "media_input",
           "model_input", *sorted(_API)]
