"""The host's own plugin: built-in artifact writers and the default `run_step`."""

from __future__ import annotations

from typing import Any

from studio.execute.artifacts import BUILTIN_WRITERS
from studio.hookspecs import hookimpl


@hookimpl
def register_artifact_writers(register) -> None:
    for writer in BUILTIN_WRITERS:
        register(writer)


@hookimpl(trylast=True)
def run_step(step) -> list[dict[str, Any]]:
    gen = step.generator
    with step.runtime.inference():
        if len(step.items) == 1:
            item = step.items[0]
            return [gen.generate(item.params, item.ctx)]
        return gen.generate_batch([i.params for i in step.items], [i.ctx for i in step.items])
