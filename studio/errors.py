"""One error hierarchy. The CLI turns a StudioError into a message and an exit code;
nothing else in the host prints tracebacks or exits."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["NonFiniteOutput", "PipelineError", "StudioError", "UserError", "clip", "did_you_mean", "echo", "printable"]

MAX_ECHO = 80  # characters of a user's value a message repeats


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """Text cut to `limit` characters: a message never repeats megabytes of input."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


# Characters a terminal acts on instead of showing: C0 controls but tab and newline, DEL,
# C1 controls, and the bidirectional overrides that reorder what is shown.
_TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe to print on a terminal: each control character shown as an escape
    (ESC as \\x1b), so a file name or value from a pipeline cannot move the cursor,
    retitle the window or hide text."""
    return _TERMINAL_CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def echo(value: Any, limit: int = MAX_ECHO) -> str:
    """A user's value as a message repeats it: its repr, clipped."""
    if isinstance(value, (list, dict)) and len(value) > 20:  # no repr of a huge structure
        return f"<a {'list' if isinstance(value, list) else 'mapping'} of {len(value):,} entries>"
    return clip(repr(value), limit)


def short(exc: BaseException, limit: int = 300) -> str:
    """An exception in one line: its type and the first line of its message (public
    as studio.weights.short)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """" Did you mean 'x'?" naming the closest of `choices` to a misspelled `word`, or ""
    when none is close. Every unknown-name message in Studio ends with it."""
    hint = difflib.get_close_matches(str(word)[:200], list(choices), n=1, cutoff=0.6)
    return f" Did you mean {hint[0]!r}?" if hint else ""


class StudioError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1


class UserError(StudioError):
    """Bad input from the user: a pipeline, a parameter, a file. Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Issue:
    """One problem found while validating a pipeline, with where it is."""

    message: str
    file: str | None = None
    line: int | None = None
    path: str | None = None  # YAML path, e.g. "steps[1].with.steps"
    step: str | None = None

    def format(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        what = self.path or ""
        if self.step:
            what += f" (step '{self.step}')" if what else f"step '{self.step}'"
        return f"{where}{what + ': ' if what else ''}{self.message}"


class PipelineError(UserError):
    """A pipeline failed validation. Carries every issue found, not just the first."""

    SHOWN = 50  # a pipeline with 10,000 problems is shown by its first ones

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        n = len(self.issues)
        header = f"pipeline is invalid ({n:,} problem{'s' if n != 1 else ''}):"
        lines = ["  " + clip(i.format(), 2000) for i in self.issues[:self.SHOWN]]
        if n > self.SHOWN:
            lines.append(f"  ... and {n - self.SHOWN:,} more; fix these first")
        super().__init__("\n".join([header] + lines))


class PluginError(StudioError):
    """A plugin is broken or conflicts with another."""


class GeneratorFailed(StudioError):
    """A generator raised at run time. Finished artifacts are kept. Exit code 1."""

    exit_code = 1


class NonFiniteOutput(StudioError):
    """A generator produced NaN or Inf values."""

    exit_code = 1


class MachineError(UserError):
    """The machine needs fixing, not the pipeline or a generator: the run stops, keeps
    what finished and says why; exit code 2."""


class StorageError(MachineError):
    """A file could not be written: a full disk, a read-only folder, an --out that is a
    file."""


class ClusterError(MachineError):
    """A Ray cluster that cannot serve the run: unreachable, or a node whose Studio or
    plugin versions differ from the driver's."""
