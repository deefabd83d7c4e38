"""What every command shares: option types that word their refusals safely, the one
`echo` (control characters made visible), how paths and sizes are shown, and the plugin
host."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from studio.errors import UserError, printable

PRECISION_CHOICES = click.Choice(["auto", "fp32", "bf16", "fp16"])


class IntRange(click.IntRange):
    """click's IntRange, with the rejected value clipped in the message (a 5,000-digit
    --seed is not echoed whole)."""

    def fail(self, message, param=None, ctx=None):
        from studio.errors import clip

        super().fail(printable(clip(str(message), 200)), param, ctx)


class FloatRange(click.FloatRange):
    """click's FloatRange, refusing NaN (which compares false with both bounds and so
    slips through a plain range) and clipping the rejected value in the message."""

    def convert(self, value, param, ctx):
        import math

        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number; give a value in the range {self._describe_range()}", param, ctx)
        return number

    def fail(self, message, param=None, ctx=None):
        from studio.errors import clip

        super().fail(printable(clip(str(message), 200)), param, ctx)


OUT_OPTION = click.option("--out", default="runs", show_default=True, metavar="DIR", type=click.Path(path_type=Path),
                          help="The folder runs were written to (studio run --out).")


def host():
    """The plugin host, its loading warnings shown: `load_host`, looked up at each call,
    so that one replacement there (a test's fake plugins) serves every command."""
    return load_host()


def load_host():
    # from studio.host.plugins, not studio.api: listing commands must not import the executor
    from studio.host.plugins import default_host

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = default_host()
    for w in caught:
        echo(f"warning: {w.message} (see `studio plugins list`)", err=True)
    return found


def echo(message: Any = "", err: bool = False) -> None:
    """click.echo with control characters shown as escapes (see studio.errors.printable):
    messages repeat file names and values that came from files."""
    click.echo(printable(str(message)), err=err)


def stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def display(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_notes(notes: list[str], shown: int = 20) -> None:
    """What the run index could not use (a damaged manifest, an index that was a link),
    on stderr, clipped: the listing itself stays on stdout."""
    from studio.errors import clip

    for note in notes[:shown]:
        echo(f"note: {clip(note, 1000)}", err=True)
    if len(notes) > shown:
        echo(f"note: ... and {len(notes) - shown} more", err=True)


def size_text(n: int) -> str:
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"



def refuse_existing(output: Path | None) -> None:
    """`-o FILE` never replaces a file: asked before anything is read (no answer is
    worked out that cannot be written) and again just before writing."""
    from studio.runs.provenance import shown

    if output is not None and os.path.lexists(output):
        raise UserError(f"{shown(output)} exists; give another -o, or remove it first")


def print_or_write(output: Path | None, text: str) -> None:
    """`studio export` and `studio import`: the YAML on standard output, or written to
    `-o FILE` whole (a temporary file renamed into place), never over an existing file."""
    from studio.execute.artifacts import atomic_write, os_error_text
    from studio.runs.provenance import shown

    if output is None:
        echo(text.rstrip("\n"))
        return
    refuse_existing(output)
    try:
        atomic_write(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:  # nothing is left half written: the temporary file is removed
        raise UserError(os_error_text(exc, shown(output))) from None
    echo(f"wrote {shown(output)}")
