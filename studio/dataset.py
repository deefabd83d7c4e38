"""`studio dataset`: a run's outputs written out as a training set, in the layouts
training scripts read:

- `imagefolder`: Hugging Face's ImageFolder / AudioFolder layout: the files, and a
  metadata.jsonl with one row per file: `file_name`, the `label` and `text` asked for,
  and every swept parameter (`datasets.load_dataset("imagefolder", data_dir=OUT)`);
- `classes`: one folder per class (torchvision's ImageFolder, Keras'
  image_dataset_from_directory): OUT/<label>/<file>.

Files are hard-linked from the run where the file system allows (copied otherwise), and
the set is written into a temporary folder renamed into place at the end: an
interrupted export leaves nothing half written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import UserError
from studio.manifest import read_manifest

LAYOUTS = ("imagefolder", "classes")
LABEL_DEFAULTS = ("class_label", "label")
CAPTION_DEFAULTS = ("prompt", "text", "caption")
UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@dataclass
class Row:
    source: Path
    file_name: str
    label: str | None
    text: str | None
    labels: dict[str, Any]  # the item's sweep values
    seed: int | None


def export(run_dir: Path, out: Path, *, step: str | None = None, port: str | None = None,
           layout: str = "imagefolder", label: str | None = None, caption: str | None = None,
           split: str | None = None) -> tuple[Path, int]:
    """Write the chosen step's outputs under `out` (or out/split); returns the folder
    written and the number of files."""
    if layout not in LAYOUTS:
        raise UserError(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    manifest = read_manifest(run_dir)
    step_id, items = _pick_step(manifest, step, run_dir)
    port = port or _pick_port(items, step_id)
    label = label if label is not None else _first_param(items, LABEL_DEFAULTS)
    caption = caption if caption is not None else _first_param(items, CAPTION_DEFAULTS)
    rows = _rows(run_dir, items, step_id, port, label, caption)
    if layout == "classes" and label is None:
        raise UserError(f"--layout classes needs a class per file: step {step_id!r} has no class_label or label "
                        "parameter; name the parameter that is the class with --label (e.g. --label prompt)")
    target = out / split if split else out
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} exists and is not empty; give a new folder (nothing was written)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write(partial, rows, layout, label)
        if target.exists():
            target.rmdir()  # empty, checked above
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target, len(rows)


def _pick_step(manifest: dict, step: str | None, run_dir: Path) -> tuple[str, list[dict]]:
    steps = manifest.get("steps") or {}
    if step is not None:
        if step not in steps:
            raise UserError(f"--step {step!r}: no such step in {run_dir}; its steps: {', '.join(steps) or 'none'}")
        chosen = step
    else:  # the step with the most finished items: a sweep rather than its contact sheet
        counts = {s: sum(i.get("status") in ("done", "cached") for i in r.get("items", [])) for s, r in steps.items()}
        if not counts or max(counts.values()) == 0:
            raise UserError(f"{run_dir}: no finished items to export")
        chosen = max(counts, key=lambda s: counts[s])
    items = [i for i in steps[chosen].get("items", []) if i.get("status") in ("done", "cached")]
    if not items:
        raise UserError(f"step {chosen!r} of {run_dir} has no finished items to export")
    return chosen, items


def _pick_port(items: list[dict], step_id: str) -> str:
    ports = sorted({p for item in items for p in (item.get("artifacts") or {})})
    if len(ports) != 1:
        raise UserError(f"step {step_id!r} writes {len(ports)} outputs ({', '.join(ports)}); choose one with --port")
    return ports[0]


def _first_param(items: list[dict], names: tuple[str, ...]) -> str | None:
    for name in names:
        if any((item.get("params") or {}).get(name) not in (None, "") for item in items):
            return name
    return None


def _value(item: dict, name: str | None) -> str | None:
    if name is None:
        return None
    value = (item.get("params") or {}).get(name, (item.get("labels") or {}).get(name))
    if isinstance(value, dict) or value is None:  # a media input is not a label
        return None
    return str(value)


def _rows(run_dir: Path, items: list[dict], step_id: str, port: str, label: str | None,
          caption: str | None) -> list[Row]:
    root = run_dir.resolve()
    rows, names = [], set()
    for item in items:
        artifact = (item.get("artifacts") or {}).get(port)
        if not artifact:
            continue
        source = (run_dir / str(artifact.get("path", ""))).resolve()
        if not source.is_relative_to(root) or not source.is_file():
            raise UserError(f"{run_dir}: item {item.get('name')!r}'s {port} file {artifact.get('path')!r} is missing "
                            "or outside the run; the run is damaged (nothing was written)")
        stem = UNSAFE.sub("_", str(item.get("name") or len(rows))).strip("._") or f"item{len(rows)}"
        name = f"{stem}{source.suffix}"
        while name in names:
            name = f"{stem}-{len(names)}{source.suffix}"
        names.add(name)
        rows.append(Row(source, name, _value(item, label), _value(item, caption), item.get("labels") or {},
                        item.get("seed")))
    if not rows:
        raise UserError(f"step {step_id!r} has no {port!r} files to export")
    return rows


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # the same bytes, no second copy
    except OSError:
        shutil.copy2(source, target)


def _write(folder: Path, rows: list[Row], layout: str, label: str | None) -> None:
    folder.mkdir(parents=True)
    if layout == "classes":
        for row in rows:
            _place(row.source, folder / (UNSAFE.sub("_", row.label or "unlabelled").strip("._") or "_") / row.file_name)
        return
    lines = []
    for row in rows:
        _place(row.source, folder / row.file_name)
        record: dict[str, Any] = {"file_name": row.file_name}
        if row.label is not None:
            record["label"] = row.label
        if row.text is not None:
            record["text"] = row.text
        record.update({k: v for k, v in row.labels.items() if k not in record and k != label})
        record["seed"] = row.seed
        lines.append(json.dumps(record, ensure_ascii=False, default=str))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
