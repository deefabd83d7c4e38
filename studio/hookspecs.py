"""Every hook a plugin can implement. Each docstring says when it fires and how its
results are combined. `docs/plugins.md` documents the same signatures (a test checks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from studio.execute.artifacts import Writer
    from studio.execute.records import StepRun
    from studio.generator import Artifact, Generator
    from studio.training import Trainer

hookspec = pluggy.HookspecMarker("studio")
hookimpl = pluggy.HookimplMarker("studio")


@hookspec
def register_generators(register: Callable[[type[Generator]], None]) -> None:
    """Register generator classes: call `register(MyGenerator)` once per class.

    Fires once per plugin when the plugin manager starts, before any command runs.
    A name registered by two plugins is an error that names both."""


@hookspec
def register_artifact_writers(register: Callable[[Writer], None]) -> None:
    """Register writers for media types: `register(Writer(media_type, extension, fn))`.

    Fires once per plugin at start-up. A plugin's writer replaces the host's writer for
    the same media type."""


@hookspec
def register_trainers(register: Callable[[type[Trainer]], None]) -> None:
    """Register trainer classes for `studio train <generator>`: `register(MyTrainer)`.

    Fires once per plugin at start-up. A trainer names the generator whose weights it
    makes; two trainers for one generator is an error that names both plugins."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the `studio` command line: `@cli.command()`.

    Fires once when the CLI starts. Keep heavy imports inside the command body."""


@hookspec(firstresult=True)
def run_step(step: StepRun) -> list[dict[str, Any]] | None:
    """Run the generator for the items of `step` that are not cached and return one
    dict of port -> value per item, in order.

    Fires once per step (or per batch of sweep items). Stops at the first non-None
    result. The host's own implementation is `trylast`, so a plugin can replace it, or
    wrap it with `@hookimpl(wrapper=True)` to time, log or annotate errors."""


@hookspec
def artifact_saved(artifact: Artifact, step: StepRun) -> None:
    """Called after an artifact is written to the run directory (or restored from the
    step cache). Results are ignored; an exception here fails the step."""


@hookspec(firstresult=True)
def identify_model(path: Path, header: dict[str, Any]) -> dict[str, Any] | None:
    """Say what family a model file belongs to, for `studio models list` and `show`:
    return e.g. `{"family": "SDXL"}` (more keys are shown as given), or None when the
    file is not one this plugin knows. `header` is a safetensors file's table of
    tensors (name -> {"dtype", "shape"}, plus "__metadata__" when it has one), already
    checked; empty for other files and for model folders. Read nothing else heavy: this
    runs for every file listed.

    Fires once per model file listed; stops at the first non-None result. With no
    answer the family shows as "?"."""
