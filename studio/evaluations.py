"""Measurements attached to a finished run after it ran (`studio eval`): the full result
as RUN/eval-NAME.json, its headline numbers under `evaluations` in manifest.json, and a
section in gallery.html. Attaching the same name again replaces the earlier one."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

from studio.artifacts import atomic_write, write_json_atomic
from studio.errors import UserError
from studio.manifest import MANIFEST, read_manifest
from studio.report import EVALUATIONS as MARKER  # where gallery.html takes evaluation sections

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,99}")


def record_evaluation(run_dir: Path, name: str, result: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Attach `result` (any JSON) to the finished run in `run_dir` under `name` (a step
    id, say), with `summary` (a few numbers) in the manifest and the gallery. Returns
    the JSON file written."""
    run_dir = Path(run_dir)
    if not NAME.fullmatch(name):
        raise UserError(f"evaluation name {name!r}: use letters, digits and _ . = + - (at most 100)")
    manifest = read_manifest(run_dir)
    if manifest.get("status") == "running":
        raise UserError(f"{run_dir}: the run is still running; measure it when it has finished")
    target = run_dir / f"eval-{name}.json"
    write_json_atomic(target, result)
    manifest.setdefault("evaluations", {})[name] = {
        "file": target.name, "summary": summary, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(run_dir / MANIFEST, manifest)
    _add_to_gallery(run_dir / "gallery.html", name, target.name, summary)
    return target


def _add_to_gallery(page: Path, name: str, file_name: str, summary: dict[str, Any]) -> None:
    if not page.is_file():
        return
    text = page.read_text(encoding="utf-8")
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
