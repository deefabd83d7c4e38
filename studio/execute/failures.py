"""The failure policy's words: the kind of a failed item and its message.

Each failure has a kind: "user" (the user's input is wrong: a UserError, parameters
that do not validate), "environment" (the machine: out of memory even alone, a full
disk, a cluster worker that kept dying) or "generator" (it crashed on valid input). A
generator's crash also leaves its traceback in RUN/errors.log."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from studio.errors import MachineError, StudioError, UserError, echo
from studio.execute.artifacts import is_storage_problem, os_error_text
from studio.execute.records import StepRun
from studio.execute.runtime import is_out_of_memory


def generator_failure(run: StepRun, exc: Exception, run_dir: Path) -> tuple[str, str]:
    """The kind of an item whose batch failed with `exc`, and its message."""
    if isinstance(exc, MachineError):  # a cluster worker that kept dying ...
        return "environment", f"{run.uses}: {exc}"
    if isinstance(exc, UserError):
        return "user", f"{run.uses}: {exc}"
    log_traceback(run_dir, run, exc)
    if is_out_of_memory(exc):
        return "environment", ("out of memory with a batch of 1: lower the sizes in its parameters "
                               "(image size, steps, audio length, batch) or free memory "
                               f"({short_error(exc)})")
    if is_storage_problem(exc):
        return "environment", f"{run.uses}: {os_error_text(exc, writing=False)}"
    return "generator", f"{run.uses} (plugin {run.plugin!r}) raised {short_error(exc)}"


def parameter_failure(run: StepRun, exc: Exception, run_dir: Path) -> tuple[str, str]:
    """Resolved values that the generator's parameters refuse are the user's input;
    anything else raised on the way is the generator's (`run` names the step)."""
    if isinstance(exc, (ValidationError, UserError)):
        return "user", short_error(exc)
    if isinstance(exc, OSError):  # an input file that cannot be read
        return "user", os_error_text(exc, writing=False)
    log_traceback(run_dir, run, exc)
    return "generator", short_error(exc)


def output_failure(run: StepRun, exc: Exception, run_dir: Path) -> str:
    """The message of an item whose outputs could not be checked or written (the
    generator's fault: wrong ports, values that are not finite, a writer's refusal)."""
    log_traceback(run_dir, run, exc)
    return f"{run.uses} (plugin {run.plugin!r}): {short_error(exc)}"


def short_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        # "field: message (got ...)" for a field, the message alone for a rule between fields
        return "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + str(e["msg"]).removeprefix("Value error, ")
            + (_received(e.get("input")) if e["loc"] else "")
            for e in exc.errors(include_url=False))
    if isinstance(exc, StudioError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _received(value: Any) -> str:
    """What a parameter received at run time, as a message shows it (clipped)."""
    if isinstance(value, str) and len(value) > 60:
        return f" (got a text of {len(value):,} characters: {echo(value[:40] + '...')})"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f" (got {echo(value)})"
    return ""


def log_traceback(run_dir: Path, run: StepRun, exc: BaseException) -> None:
    try:
        with open(run_dir / "errors.log", "a", encoding="utf-8") as log:
            names = ", ".join(i.item.name for i in run.items)
            log.write(f"--- {time.strftime('%H:%M:%S')} step {run.step_id!r} ({run.uses}, "
                      f"plugin {run.plugin!r}) items: {names}\n")
            # an error from a cluster's worker carries its traceback as text
            log.write(getattr(exc, "remote_traceback", None)
                      or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except OSError:
        pass  # the item's message says what failed; the traceback is a bonus
