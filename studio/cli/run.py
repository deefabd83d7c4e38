"""`studio run`: a pipeline file, or the pipeline inside a file Studio made, checked and
run, its progress shown and its outcome turned into a summary and an exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings
from pathlib import Path

import click

from studio.cli.common import (
    PRECISION_CHOICES,
    FloatRange,
    IntRange,
    display,
    echo,
    host,
    stdout_to_devnull,
)
from studio.cli.models import MODELS_OPTION
from studio.errors import GeneratorFailed, UserError


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--out", default="runs", show_default=True, metavar="DIR",
              help="Root directory for runs: OUT/<pipeline>/<run-id>/.")
@click.option("--set", "overrides", multiple=True, metavar="STEP.PARAM=VALUE",
              help="Override a step parameter (repeatable). VALUE is read as YAML.")
@click.option("--seed", type=IntRange(0, 2**63 - 1), help="Run seed (overrides the pipeline's).")
@click.option("--device", help="auto | cpu | cuda | cuda:N (overrides the pipeline's).")
@click.option("--precision", type=PRECISION_CHOICES, help="Overrides the pipeline's precision.")
@click.option("--no-cache", is_flag=True, help="Recompute every step instead of reusing finished ones.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; print only the run directory.")
@click.option("--json-events", is_flag=True, help="Print one JSON object per event on stdout.")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile every step's models (CUDA graphs on a GPU); the manifest reports "
                   "the first batch's time, which includes compiling.")
@click.option("--max-ram-gb", type=FloatRange(0.1, 100000), metavar="GB",
              help="Memory for loaded models on the CPU; least recently used models are unloaded "
                   "beyond it. Default: half the machine's memory.")
@click.option("--max-vram-gb", type=FloatRange(0.1, 100000), metavar="GB",
              help="The same on a GPU. Default: 80% of the GPU's memory.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where generators run: this process, or a Ray cluster (overrides the pipeline's "
                   "`executor:`; see docs/scale-out.md).")
@click.option("--ray-address", metavar="ADDRESS",
              help="The Ray cluster to join (default: RAY_ADDRESS, else a cluster started for this run).")
@click.option("--ray-keep-workers", type=FloatRange(0, 7 * 24 * 3600), metavar="SECONDS",
              help="How long the cluster's workers wait, idle, with their models loaded, for the next "
                   "run (default 300; 0 stops them when this run ends).")
@MODELS_OPTION
def run(pipeline, out, overrides, seed, device, precision, no_cache, quiet, json_events, compile_, max_ram_gb,
        max_vram_gb, executor, ray_address, ray_keep_workers, model_dirs) -> None:
    """Run PIPELINE and write its outputs under OUT. PIPELINE is a pipeline file, or a
    PNG, WAV or MIDI file Studio made, a manifest.json or a run directory: the pipeline
    that made it runs again (fully cached when nothing changed; --set applies)."""
    from studio.errors import StorageError
    from studio.execute.events import GuardedSink, sink_for
    from studio.execute.runtime import ModelBudget
    from studio.pipeline.options import PipelineOptions, RunOptions

    if ray_address is not None or executor == "ray":  # checked before anything is read or started
        from studio.execute.cluster import resolve_address

        resolve_address(ray_address)  # --ray-address, or RAY_ADDRESS when Ray would read it
    if not out.strip():
        raise StorageError("--out is empty: give a folder for the runs, e.g. --out runs")
    pipeline_options = PipelineOptions(overrides=overrides, seed=seed, device=device, precision=precision,
                                       compile=True if compile_ else None, model_dirs=model_dirs)
    loaded = load_or_reopen(pipeline, pipeline_options, host())
    budget = ModelBudget(cpu=None if max_ram_gb is None else int(max_ram_gb * 2**30),
                         gpu=None if max_vram_gb is None else int(max_vram_gb * 2**30))
    # a broken or full stdout (`--json-events | head`) closes the sink; the run goes on
    events = GuardedSink(sink_for(quiet=quiet, json_events=json_events))
    run_options = RunOptions(out=Path(out), use_cache=not no_cache, events=events, memory=budget,
                             executor=executor, ray_address=ray_address, keep_workers=ray_keep_workers)
    result = _run(loaded, run_options, json_events)
    _print_outcome(result, events, quiet=quiet, json_events=json_events)
    _raise_for_failures(result)


def _run(loaded, options, json_events: bool):
    """The run itself; Ctrl-C and file problems it did not put in words become messages."""
    from studio.errors import StorageError
    from studio.execute.artifacts import os_error_text

    events = options.events
    try:
        with _run_warnings_as_lines():
            return loaded.run_with(options)
    except KeyboardInterrupt:
        events.close()
        echo("interrupted: finished artifacts are kept; run again to reuse them", err=True)
        sys.exit(130)
    except OSError as exc:  # a file problem the run did not put in words
        raise StorageError(os_error_text(exc, writing=False)) from None
    finally:
        events.close()
        if json_events and events.error is not None:
            stdout_to_devnull()  # what is still buffered for it must not fail again at exit


@contextlib.contextmanager
def _run_warnings_as_lines():
    """The run's warnings (a read-only step cache ...) as plain lines, when they happen."""
    from studio.execute.executor import RunWarning

    with warnings.catch_warnings():
        show_others = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, RunWarning):
                try:
                    echo(f"warning: {message}", err=True)
                except OSError:
                    pass  # stderr is gone: the manifest keeps the warning
            else:
                show_others(message, category, *args, **kwargs)

        warnings.showwarning = show
        warnings.simplefilter("always", RunWarning)
        yield


def _print_outcome(result, events, *, quiet: bool, json_events: bool) -> None:
    """The run folder (--quiet) or the summary table; a stdout that broke on the way is
    an error only when nothing else went wrong."""
    from studio.errors import StorageError

    try:
        if json_events:
            pass
        elif quiet:
            echo(display(result.run_dir))
        else:
            _print_summary(result)
        sys.stdout.flush()
        broken = events.error if json_events else None  # the other sinks write to stderr
    except OSError as exc:
        broken = exc
    if broken is not None:
        stdout_to_devnull()  # what is still buffered for it must not fail again at exit
        import errno

        if not isinstance(broken, BrokenPipeError) and broken.errno != errno.EPIPE:
            message = f"cannot write to standard output ({broken.strerror or broken})"
            if not (result.error or result.failed):
                raise StorageError(f"{message}; the run itself is {result.status}: {display(result.run_dir)}")
            try:
                echo(f"warning: {message}", err=True)
            except OSError:
                pass


def _raise_for_failures(result) -> None:
    """A run that stopped, or whose items failed, is an error: exit 1 for a generator
    that crashed, else 2."""
    from studio.errors import StorageError

    if result.error:  # the run stopped, or could not record itself: a full disk ...
        raise StorageError(f"{result.error}\n  finished artifacts are kept in {display(result.run_dir)}")
    if result.failed:
        lines = [f"{len(result.failed)} item(s) failed; finished artifacts are kept in {display(result.run_dir)}"]
        for r in result.failed:
            lines.append(f"  step {r.step_id!r}, item {r.name!r}: {r.error}")
        if (result.run_dir / "errors.log").exists():
            lines.append(f"  tracebacks: {result.run_dir / 'errors.log'}")
        # exit 1 only when a generator crashed on valid input; the user's input or the
        # machine (memory, disk) is for the user to fix: exit 2
        crashed = any(r.error_kind == "generator" for r in result.failed)
        raise (GeneratorFailed if crashed else UserError)("\n".join(lines))


def load_or_reopen(pipeline: Path, options, plugin_host):
    """A pipeline file, or the pipeline inside a file Studio made (PNG, WAV, MIDI), a
    manifest.json or a run directory: loaded and validated like any pipeline file, its
    relative inputs read from the folder they were read from when it first ran. Every
    problem found in a re-opened pipeline names the file the user gave."""
    import tempfile

    from studio import api
    from studio.errors import Issue, PipelineError
    from studio.runs.reopen import MEDIA, as_yaml, reopen, shown

    if not (pipeline.is_dir() or pipeline.name == "manifest.json" or pipeline.suffix.lower() in MEDIA):
        return api.load_with(pipeline, options, plugin_host)
    reopened = reopen(pipeline)
    try:
        if reopened.base_dir is not None and not reopened.base_dir.is_dir():
            # made on another machine: its input files are looked for here instead
            reopened.base_dir = None
    except (OSError, ValueError):
        reopened.base_dir = None
    origin = shown(pipeline) + (" (its embedded pipeline)" if pipeline.suffix.lower() in MEDIA
                                else " (the pipeline its manifest records)")
    text = as_yaml(reopened, pipeline)
    with tempfile.TemporaryDirectory(prefix="studio-reopened-") as tmp:
        path = Path(tmp) / "pipeline.yaml"
        try:
            path.write_text(text, encoding="utf-8")
            here = dataclasses.replace(options, base_dir=reopened.base_dir or Path.cwd())
            loaded = api.load_with(path, here, plugin_host)
        except PipelineError as exc:
            # the temporary file is no place the user knows: the file they gave, and the
            # YAML path in the pipeline (the lines are those `studio export` writes)
            raise PipelineError([Issue(i.message.replace(str(path), origin), origin if i.file == str(path) else i.file,
                                       None if i.file == str(path) else i.line, i.path, i.step)
                                 for i in exc.issues]) from None
        except UserError as exc:
            raise UserError(str(exc).replace(str(path), origin)) from None
        except OSError as exc:
            raise UserError(f"{shown(pipeline)}: its pipeline cannot be re-opened: the temporary folder "
                            f"{shown(tmp)} refuses it ({exc.strerror or exc}); set TMPDIR to a writable folder") from None
    loaded.spec.source = pipeline  # the manifest says where this run came from
    return loaded


def _print_summary(result) -> None:
    """A row per item; a row per step when there are too many items to read."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{display(result.run_dir)}  [{result.status}]", title_justify="left")
    per_step = len(result.items) > 40
    for col in ("step" if per_step else "item", "status", "seconds", "outputs"):
        table.add_column(col)
    if per_step:
        steps: dict[str, list] = {}
        for r in result.items.values():
            steps.setdefault(r.step_id, []).append(r)
        for step_id, items in steps.items():
            counts: dict[str, int] = {}
            for r in items:
                counts[r.status] = counts.get(r.status, 0) + 1
            seconds = sum(r.seconds or 0 for r in items)
            table.add_row(step_id, ", ".join(f"{n} {s}" for s, n in counts.items()), f"{seconds:.2f}",
                          f"{step_id}*/")
    else:
        for r in result.items.values():
            outputs = "  ".join(str(a.path.relative_to(result.run_dir)) for a in r.artifacts.values())
            seconds = "" if r.seconds is None else f"{r.seconds:.2f}"
            table.add_row(r.name, r.status, seconds, outputs or (r.error or ""))
    Console().print(table)
    Console().print(f"gallery: {display(result.run_dir / 'gallery.html')}")

