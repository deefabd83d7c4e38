"""`studio eval`: measure a run's outputs, or a folder, against a reference set."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import click

from studio import UserError
from studio.errors import clip, echo, printable


@click.command("eval")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--against", "reference", type=click.Path(path_type=Path), default=None,
              help="The reference set: a folder of real examples (sub-folders as classes), another run, or "
                   "sklearn:digits / emoji:noto.")
@click.option("--step", default=None, help="The step of SOURCE to measure (default: the one with the most items).")
@click.option("--reference-step", default=None, help="The step of a reference run to compare with.")
@click.option("--features", default="default", show_default=True,
              help="Image feature network: 'default' or a directory from `studio train eval.metrics`.")
@click.option("--lm", default="default", show_default=True,
              help="Language model for perplexity: 'default' (text.gpt's) or a causal LM directory.")
@click.option("--vae", default="default", show_default=True,
              help="Audio VAE for the latent Fréchet distance: 'default' (audio.vae's), a directory, or 'none'.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the results here (a run's always go to RUN/eval-STEP.json, its manifest and gallery).")
def eval_command(source: Path, reference: Path | None, step: str | None, reference_step: str | None, features: str,
                 lm: str, vae: str, json_out: Path | None) -> None:
    """Measure what a generator made: SOURCE is a run directory (its manifest says what
    each item is) or a folder of files. Images: FID, KID, precision, recall, class
    coverage and a mode-collapse check, in Studio's own feature network. MIDI: muspy's
    metrics. Text: perplexity, distinct-n, repetition. Audio: log-mel and audio-VAE
    Fréchet distances."""
    from studio_eval.collect import collect
    from studio_eval.measure import evaluate, out_of_memory

    if json_out is not None:
        json_out = _json_target(json_out)  # checked before anything is measured
    models = {"features": _model(features, "--features"), "lm": _model(lm, "--lm"), "vae": _model(vae, "--vae")}
    generated = collect(source, step=step)
    if generated.step:  # a run: its folder must take eval-STEP.json, known before the work
        from studio import evaluation_problem

        problem = evaluation_problem(source, generated.step)
        if problem:
            raise UserError(problem)
    against = collect(reference, step=reference_step, family=generated.family()) if reference else None
    try:
        result = evaluate(generated, against, **models)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        raise UserError(f"out of memory while measuring {generated.where}"
                        + (f" against {against.where}" if against else "")
                        + ": measure fewer or smaller files (a folder with fewer, or --step a smaller step), "
                          "or free memory, then run again") from None
    _print(result)
    if generated.step:  # a run: the numbers join its manifest and gallery
        from studio import record_evaluation
        from studio_eval.metrics_step import summary

        written = record_evaluation(source, generated.step, result, summary(result["metrics"]))
        click.echo(f"written: {written} (and the run's manifest.json and gallery.html)")
    if json_out is not None:
        _write_json(json_out, result)
        click.echo(f"written: {json_out}")


def _shown(path: Path | str) -> str:
    return printable(clip(str(path), 300))


def _json_target(path: Path) -> Path:
    """--json's file, checked before any work: a file (new, or a regular file to
    replace) in a folder that exists and takes new files."""
    if not str(path) or str(path).endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        raise UserError(f"--json {_shown(path)}: give a file name, e.g. --json results.json")
    if os.path.lexists(path):
        if path.is_dir():
            raise UserError(f"--json {_shown(path)}: a folder; give a file name, e.g. --json {_shown(path / 'eval.json')}")
        if path.is_symlink():
            raise UserError(f"--json {_shown(path)}: a link; give a file name of its own (nothing was written)")
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise UserError(f"--json {_shown(path)}: not a regular file (a pipe or a device); give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"--json {_shown(path)}: the folder {_shown(parent)} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--json {_shown(path)}: cannot write in {_shown(parent)}; give a path you may write to")
    return path


def _write_json(path: Path, result: dict) -> None:
    """The results as JSON, through a new temporary file beside `path` (never through a
    link) renamed over it: whole or not at all."""
    text = json.dumps(result, indent=2, default=str) + "\n"
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        why = ("disk full: free space or give --json a path on another disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
               else f"cannot be written ({exc.strerror or exc})")
        raise UserError(f"--json {_shown(path)}: {why}") from None


def _model(value: str, option: str) -> str:
    """'default'/'none', or a path made absolute (and checked) from the working directory."""
    if value in ("default", "none"):
        if value == "none" and option != "--vae":
            raise UserError(f"{option} 'none': only --vae may be 'none'; give 'default' or a model directory")
        return value
    if not value or "\0" in value or len(value) > 4096:
        raise UserError(f"{option} {_echo(value)}: give 'default' or a model directory")
    try:
        path = Path(value).expanduser()
        found = path.exists()
        path = path.resolve()
    except (OSError, RuntimeError) as exc:  # ~nobody/x, a name too long, a loop of links
        raise UserError(f"{option} {_echo(value)}: cannot be used ({clip(str(exc), 200)}); give 'default' or a "
                        "model directory") from None
    if not found:
        raise UserError(f"{option} {_echo(value)}: no such directory; give 'default' or a model directory")
    if option == "--features":  # the network's files, checked before anything is measured
        from studio_eval.features import network_problem

        problem = network_problem(path)
        if problem:
            raise UserError(f"--features {_echo(value)}: {problem}")
    return str(path)


def _echo(value: str) -> str:
    return printable(echo(value))


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{result['family']}[/bold]: {escape(result['generated'])}", soft_wrap=True)
    if result["reference"]:
        console.print(f"against {escape(result['reference'])}", soft_wrap=True)
    table = Table("metric", "value")
    for name, value in _flat(result["metrics"]):
        table.add_row(escape(name), escape(f"{value:.4g}" if isinstance(value, float) else str(value)))
    console.print(table)
    console.print(result["note"], style="dim", soft_wrap=True)


def _flat(metrics: dict, prefix: str = ""):
    for name, value in metrics.items():
        if isinstance(value, dict) and name not in ("class_counts",):
            yield from _flat(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            yield f"{prefix}{name}", ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            yield f"{prefix}{name}", ", ".join(f"{k} {v}" for k, v in value.items())
        else:
            yield f"{prefix}{name}", value
