"""The `studio` command line: a thin layer over studio.api. This is the only place a
StudioError becomes an exit code and a message; no traceback reaches the user for a
mistake of theirs.

The group and main() are here; each family of commands has its module: run (run a
pipeline), pipeline (validate, plan, export), runs (look at finished runs, dataset),
cache, plugins and train. They import what they need inside the commands, so that
`studio --help` stays fast; plugins add their own commands through `register_commands`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from studio.cli import common
from studio.cli.common import echo
from studio.errors import StudioError, printable
from studio.version import __version__


class StudioException(click.ClickException):
    def __init__(self, error: StudioError):
        super().__init__(printable(str(error)))
        self.exit_code = error.exit_code


class StudioGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StudioError as exc:
            raise StudioException(exc) from None
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=StudioGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="studio")
def cli() -> None:
    """Run YAML pipelines of generators: images, music, audio and text, on your machine.

    \b
    Start with:  studio run pipelines/showcase.yaml
    Then:        studio plugins list     (what generators you have)
                 studio plan FILE        (what a pipeline will make)
    """


def _add_commands() -> None:
    """Studio's own commands onto the group (plugins add theirs in main()). The modules
    import only click at their top: what a command needs loads when it runs."""
    from studio.cli import cache, imports, models, pipeline, plugins, run, runs, train

    for command in (run.run, pipeline.validate, pipeline.plan, pipeline.export, runs.runs, runs.dataset,
                    cache.cache, plugins.plugins, models.models, train.train, imports.import_):
        cli.add_command(command)


_add_commands()


def main() -> None:
    """The console entry point: whatever happens, the user gets a message and an exit
    code, never a Python traceback (that goes to a crash log the message names)."""
    try:
        host = common.host()
        host.call_each("register_commands", cli=cli)
        stdout_was = _stdout_identity()
        try:
            cli(prog_name="studio")
        except SystemExit as exc:
            # a broken pipe that click or rich handled: click turns EPIPE into a silent
            # exit 1 with stdout wrapped in its _PacifyFlushWrapper; rich points stdout at
            # /dev/null and exits 1. Either is a broken pipe, handled below.
            if exc.code == 1 and (type(sys.stdout).__name__ == "_PacifyFlushWrapper"
                                  or _stdout_identity() != stdout_was):
                raise BrokenPipeError() from None
            raise
    except StudioError as exc:
        echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `studio plan x | head`: the reader left; say nothing more
        _quiet_broken_pipe()
    except OSError as exc:
        from studio.execute.artifacts import os_error_text

        echo(f"Error: {os_error_text(exc, writing=False)}", err=True)
        sys.exit(2)
    except MemoryError:  # the machine, not a bug: exit 2 as an item that does not fit alone
        echo("Error: out of memory. Lower the sizes in the pipeline (width, height, sweep lengths, "
                   "batch) or free memory, then run again.", err=True)
        sys.exit(2)
    except Exception as exc:
        log = _write_crash_log(exc)
        echo(f"Error: internal error, not a mistake of yours: {type(exc).__name__}: {str(exc)[:300]}\n"
                   f"  The details are in {log}; please report them with the command you ran.", err=True)
        sys.exit(1)


def _stdout_identity() -> tuple[int, int] | None:
    """Which file descriptor 1 is, to tell when something pointed it at /dev/null."""
    try:
        st = os.fstat(1)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _quiet_broken_pipe() -> None:
    """Exit 141 (as a shell reports SIGPIPE) without a word: what is still buffered for
    stdout goes to /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass
    except OSError:
        pass
    sys.exit(141)


def _write_crash_log(exc: BaseException) -> str:
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix=f"studio-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"studio {__version__}, argv: {sys.argv!r}\n{text}")
        return path
    except OSError:
        return "(no crash log: the temporary directory is not writable)"
