"""Measurements attached to a finished run after it ran (`studio eval`): the full result
as RUN/eval-NAME.json, its headline numbers under `evaluations` in manifest.json, and a
section in gallery.html. Attaching the same name again replaces the earlier one."""

from __future__ import annotations

import html
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from studio.errors import UserError, clip, echo, printable
from studio.execute.artifacts import atomic_write, os_error_text, write_json_atomic
from studio.execute.manifest import MANIFEST, read_bounded, read_manifest
from studio.runs.report import EVALUATIONS as MARKER  # where gallery.html takes evaluation sections

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,99}")
MAX_GALLERY_BYTES = 64 << 20  # a gallery of 10,000 items is a few MB of HTML


def record_evaluation(run_dir: Path, name: str, result: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Attach `result` (any JSON) to the finished run in `run_dir` under `name` (a step
    id, say), with `summary` (a few numbers) in the manifest and the gallery. Returns
    the JSON file written."""
    run_dir = Path(run_dir)
    problem = evaluation_problem(run_dir, name)
    if problem:
        raise UserError(problem)
    manifest = read_manifest(run_dir)
    if manifest.get("status") == "running":
        raise UserError(f"{_where(run_dir)}: the run is still running; measure it when it has finished")
    target = run_dir / f"eval-{name}.json"
    try:
        write_json_atomic(target, result)
        evaluations = manifest.get("evaluations")
        if not isinstance(evaluations, dict):  # absent, or damaged: this run's evaluations start again
            evaluations = manifest["evaluations"] = {}
        evaluations[name] = {
            "file": target.name, "summary": summary, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(run_dir / MANIFEST, manifest)
        _add_to_gallery(run_dir / "gallery.html", name, target.name, summary)
    except OSError as exc:
        raise UserError(f"{_where(run_dir)}: the evaluation could not be recorded ({os_error_text(exc)})") from None
    return target


def evaluation_problem(run_dir: Path, name: str) -> str | None:
    """Why the evaluation `name` cannot be recorded in `run_dir`, or None; cheap, so a
    command asks before it measures anything: the name must be a plain one, the folder
    must take new files, and eval-NAME.json must not be a folder or a pipe."""
    run_dir = Path(run_dir)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return (f"evaluation name {printable(echo(name))}: use letters, digits and _ . = + - (at most 100); "
                f"the step ids of {_where(run_dir)} are not ones Studio writes")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        return (f"{_where(run_dir)}: cannot write in the run folder, where eval-{name}.json goes; measure a copy "
                "of the run, or make the folder writable")
    for file in (run_dir / f"eval-{name}.json", run_dir / MANIFEST, run_dir / "gallery.html"):
        if os.path.lexists(file) and not file.is_symlink() and not stat.S_ISREG(os.lstat(file).st_mode):
            return f"{_where(file)}: not a regular file (a folder, a pipe or a device); the run is damaged"
    if read_manifest(run_dir).get("status") == "running":
        return f"{_where(run_dir)}: the run is still running; measure it when it has finished"
    return None


def _where(path: Path) -> str:
    return printable(clip(str(path), 300))


def _add_to_gallery(page: Path, name: str, file_name: str, summary: dict[str, Any]) -> None:
    if page.is_symlink() or not page.is_file():
        return  # a link is not followed: the gallery Studio writes is a file of the run
    try:
        data = read_bounded(page, MAX_GALLERY_BYTES, "gallery")
        text = data.decode("utf-8") if data is not None else ""
    except (UserError, UnicodeDecodeError):
        return  # a gallery too large or not UTF-8 is not one Studio wrote: the manifest and the file hold the numbers
    if MARKER not in text:
        return  # a gallery from before evaluations had a place: the manifest and the file hold them
    start, end = f'<section class=evaluation data-name="{html.escape(name)}">', "</section><!-- /evaluation -->"
    if start in text:  # the same name measured again: the new numbers replace the old
        before, rest = text.split(start, 1)
        text = before + rest.split(end, 1)[1]
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_shown(v))}</td></tr>"
                   for k, v in summary.items())
    section = (f'{start}<h2>evaluation: {html.escape(name)}</h2><table class=notes>{rows}</table>'
               f'<p class=meta><a href="{html.escape(file_name)}">{html.escape(file_name)}</a></p>{end}')
    text = text.replace(MARKER, section + MARKER, 1)
    atomic_write(page, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
