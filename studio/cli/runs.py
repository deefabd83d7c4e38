"""`studio runs list | find | show | rm` and `studio dataset`: looking back at finished
runs, and writing a run's outputs as a training set."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from studio.cli.common import (
    OUT_OPTION,
    IntRange,
    display,
    echo,
    print_notes,
    size_text,
)
from studio.errors import UserError, printable


@click.group()
def runs() -> None:
    """Look at finished runs."""



@runs.command("list")
@OUT_OPTION
@click.option("--name", "pipeline", metavar="PIPELINE", help="Only this pipeline's runs.")
@click.option("--status", type=click.Choice(["done", "failed", "interrupted", "running", "unreadable"]))
@click.option("--since", metavar="DATE", help="Started on or after, e.g. 2026-11-24 or 2026-11-24T10:00.")
@click.option("--until", metavar="DATE", help="Started on or before (a date includes its whole day).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs_list(out, pipeline, status, since, until, limit, as_json) -> None:
    """Runs, newest first: name, run id, status, items, time, pipeline file, size."""
    from studio.runs.history import runs as find_runs

    notes: list[str] = []
    found = find_runs(out, pipeline=pipeline, status=status, since=since, until=until, limit=limit, notes=notes)
    print_notes(notes + [f"{r.run_dir}: {r.note}" for r in found if r.note])
    if as_json:
        echo(json.dumps([r.as_dict() for r in found], indent=2))
        return
    if not found:
        echo(f"no runs in {out}" + (" match" if pipeline or status or since or until else ""))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for col in ("pipeline", "run", "status", "done/failed/cached", "time", "pipeline file", "size"):
        table.add_column(col, overflow="fold", no_wrap=col == "run")
    from studio.execute.manifest import shown

    def text(value, limit: int = 300) -> str:  # from the manifests: escape sequences made visible
        return escape(shown(value, limit))

    for r in found:
        seconds = "" if r.seconds is None else f"{r.seconds:.1f} s"
        table.add_row(text(r.pipeline), text(r.run_id), text(r.status, 100), f"{r.done}/{r.failed}/{r.cached}",
                      seconds, text(r.source), size_text(r.bytes) + (
                          f" (+{size_text(r.shared_bytes)} shared)" if r.shared_bytes else ""))
    # a table piped to a file or pager keeps its rows on one line each
    Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 200).print(table)



@runs.command("find")
@OUT_OPTION
@click.option("--step", help="Step id.")
@click.option("--uses", help="Generator, e.g. image.diffusion.")
@click.option("--seed", type=IntRange(0, 2**63 - 1))
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter's value (YAML: 7, 0.5, true, red heart); an input by file name or sha256. Repeatable.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs_find(out, step, uses, seed, params, limit, as_json) -> None:
    """Items of any run by step, generator, seed or parameter value."""
    import yaml

    from studio.errors import clip
    from studio.runs.history import (
        MAX_PARAMS_DEPTH,
        _too_deep_or_large,
        find,
        printable_text,
    )

    wanted = {}
    for entry in params:
        key, sep, value = entry.partition("=")
        shown = clip(printable_text(entry), 80)
        if not sep or not key.strip():
            raise UserError(f"--param {shown!r}: expected KEY=VALUE, e.g. --param prompt='red heart'")
        if len(value) > 10_000:
            raise UserError(f"--param {clip(printable_text(key), 80)}: the value is {len(value):,} characters; "
                            "at most 10,000")
        # a YAML value, nested at most MAX_PARAMS_DEPTH deep: checked on the text first, so a
        # 5,000-deep list is refused before the (recursive) YAML parser sees it
        depth = max_depth = 0
        for char in value:
            depth += char in "[{"
            depth -= char in "]}"
            max_depth = max(max_depth, depth)
        parsed: Any = value
        if value.strip() and max_depth <= MAX_PARAMS_DEPTH:
            try:
                parsed = yaml.safe_load(value)
            except (yaml.YAMLError, ValueError, RecursionError):  # not YAML, or a 5,000-digit number: as text
                parsed = value
        problem = _too_deep_or_large(parsed, MAX_PARAMS_DEPTH, 10_000) if max_depth <= MAX_PARAMS_DEPTH else (
            f"nested more than {MAX_PARAMS_DEPTH} deep")
        if problem:
            raise UserError(f"--param {clip(printable_text(key), 80)}: the value is {problem}; give a plain value "
                            f"(a number, text, or a list or mapping at most {MAX_PARAMS_DEPTH} deep)")
        wanted[key.strip()] = parsed
    notes: list[str] = []
    found = find(out, step=step, uses=uses, seed=seed, params=wanted, limit=limit, notes=notes)
    print_notes(notes)
    if as_json:
        echo(json.dumps(found, indent=2, default=str))
        return
    for item in found:
        echo(f"{item['run_dir']}  {item['name']}  {item['status']}  seed {item['seed']}")
    if not found:
        echo(f"no items in {out} match")


@runs.command("rm")
@OUT_OPTION
@click.argument("targets", nargs=-1, required=True, metavar="RUN...")
@click.option("--yes", is_flag=True, help="Do not ask.")
def runs_rm(out, targets, yes) -> None:
    """Delete runs: run directories, `latest`, or a pipeline name (its newest run)."""
    from studio.runs.history import remove, resolve

    chosen, seen = [], set()
    for target in targets:  # every target is found before anything is removed
        run_dir = resolve(out, target)
        real = os.path.realpath(run_dir)
        if real not in seen:
            seen.add(real)
            chosen.append(run_dir)
    for run_dir in chosen:
        try:
            if not yes and not click.confirm(printable(f"delete {run_dir}?"), default=False):
                continue
        except click.Abort:  # no answer (stdin closed) or Ctrl-C at the question
            raise UserError(f"{run_dir} was not removed: no answer to the question; give --yes to remove "
                            "without asking") from None
        remove(out, run_dir)
        echo(f"removed {run_dir}")



@runs.command("show")
@click.argument("run_dir", metavar="RUN")
@OUT_OPTION
@click.option("--json", "as_json", is_flag=True)
def runs_show(run_dir, out, as_json) -> None:
    """What a run made: status, seeds, timings and artifacts per item. RUN is a run
    directory, a pipeline's folder or name (its newest run), or `latest`."""
    from rich.markup import escape

    from studio.execute.manifest import read_manifest, shown
    from studio.runs.history import resolve

    given = Path(run_dir)
    # a name, `latest` or a pipeline's folder of runs: which run; any other path is read as
    # given, so that what is wrong with it is said about it
    if not os.path.lexists(given) or (os.path.isdir(given) and not os.path.lexists(given / "manifest.json")
                                      and _holds_runs(given)):
        given = resolve(out, run_dir)
    run_dir = given
    # completed from the run's journal when the run was killed, and saved back
    manifest = read_manifest(run_dir, repair=True)
    try:
        if as_json:
            try:
                text = json.dumps(manifest, indent=2)
            except (RecursionError, ValueError):  # the pure-Python encoder (indent) recurses per level
                raise UserError(f"{display(Path(run_dir))}/manifest.json: nested too deep to print as JSON; it is "
                                "not a manifest Studio wrote") from None
            echo(text)
            return
        _show_manifest(manifest, escape, shown)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # `studio runs show DIR | head`: main() ends quietly
    except OSError as exc:
        from studio.errors import StorageError

        raise StorageError(f"cannot write to standard output: {exc.strerror or exc}") from None


def _holds_runs(folder: Path) -> bool:
    from studio.runs.history import newest_in

    return newest_in(folder) is not None


def _show_manifest(manifest, escape, shown) -> None:
    """The table `runs show` prints. Every field of the file may be any JSON type, and
    every string is shown with its control characters made visible, clipped."""
    from rich.console import Console
    from rich.table import Table

    def text(value, limit: int = 500) -> str:  # the manifest is a file: show what is there, markup escaped
        return escape(shown(value, limit))

    def as_list(value) -> list:
        return value if isinstance(value, list) else [] if value is None else [value]

    rt = manifest.get("runtime") if isinstance(manifest.get("runtime"), dict) else {}
    console = Console(emoji=False, highlight=False)
    console.print(f"[bold]{text(manifest.get('pipeline'), 200)}[/]  {text(manifest.get('status'), 100)}  "
                  f"{text(manifest.get('started'), 100)}  {text(manifest.get('seconds'), 100)} s  "
                  f"device {text(rt.get('device'), 100)}  seed {text(manifest.get('seed'), 100)}")
    lines = as_list(manifest.get("error") or None) + as_list(manifest.get("warnings"))
    for line in lines[:50]:
        console.print(f"  {text(line)}")
    if len(lines) > 50:
        console.print(f"  ... and {len(lines) - 50} more")
    table = Table()
    for col in ("item", "uses", "status", "seed", "seconds", "artifacts"):
        table.add_column(col, overflow="fold")
    for step in manifest["steps"].values():
        if not isinstance(step, dict):
            continue
        for item in as_list(step.get("items")):
            if not isinstance(item, dict):
                continue
            artifacts = item.get("artifacts")
            artifacts = artifacts.values() if isinstance(artifacts, dict) else as_list(artifacts)
            arts = "\n".join(f"{text(a.get('path'))} ({text(a.get('size'), 40)} B)" if isinstance(a, dict)
                             else text(a) for a in artifacts)
            seconds = item.get("seconds")
            seconds = f"{seconds:.2f}" if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else ""
            table.add_row(text(item.get("name"), 200), text(step.get("uses"), 200), text(item.get("status"), 100),
                          text(item.get("seed"), 100), seconds, arts or text(item.get("error")))
    console.print(table)



@click.command()
@click.argument("run_dir", metavar="RUN")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The folder to write the training set into (new or empty).")
@click.option("--step", help="The step whose outputs to export (default: the one with the most items).")
@click.option("--port", help="Its output to export, when it writes several.")
@click.option("--layout", type=click.Choice(["imagefolder", "classes"]), default="imagefolder", show_default=True,
              help="imagefolder: files + metadata.jsonl (Hugging Face); classes: one folder per class.")
@click.option("--label", help="The parameter that is the class (default: class_label or label when swept).")
@click.option("--caption", help="The parameter that is the caption (default: prompt, text or caption).")
@click.option("--split", help="Write into OUTPUT/SPLIT (train, validation, test...).")
@click.option("--out", "runs_root", default="runs", show_default=True, metavar="DIR", type=click.Path(path_type=Path),
              help="The folder runs were written to, for RUN given as a name or `latest`.")
def dataset(run_dir, output, step, port, layout, label, caption, split, runs_root) -> None:
    """Write a run's outputs as a training set: RUN is a run directory, a pipeline's
    folder or name (its newest run), or `latest`. Labels and captions come from the
    items' parameters (a sweep's class_label, an upstream text's prompt)."""
    from studio.runs.dataset import export as export_dataset
    from studio.runs.history import resolve

    given = Path(run_dir)
    # a run folder's manifest is read (and checked) by the export, whatever kind of file it is
    run = given if os.path.lexists(given / "manifest.json") else resolve(runs_root, run_dir)
    written, count = export_dataset(run, output, step=step, port=port, layout=layout, label=label,
                                    caption=caption, split=split)
    echo(f"wrote {count} files to {written} ({layout})")
