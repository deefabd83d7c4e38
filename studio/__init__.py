"""Studio: a plugin-based creative-media generation pipeline.

Scripting:
    import studio
    result = studio.run("pipelines/showcase.yaml", overrides=["title.template=Hi"])
    for artifact in result.artifacts():
        print(artifact.path)

Plugin authors import the contract from here: Generator, Params, media_input, hookimpl.
"""

from __future__ import annotations

__version__ = "0.1.0"

from studio.generator import Artifact, Generator, Params, StepContext, media_input  # noqa: E402
from studio.hookspecs import hookimpl  # noqa: E402

_API = {"load", "validate", "plan", "run", "Pipeline"}


def __getattr__(name: str):
    # The API pulls in the executor; plugins importing `studio` should not pay for it.
    if name in _API:
        from studio import api

        return getattr(api, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")


__all__ = ["Artifact", "Generator", "Params", "StepContext", "hookimpl", "media_input", *sorted(_API)]
