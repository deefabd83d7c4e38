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
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from studio.errors import UserError, clip, echo, printable
from studio.execute.manifest import MANIFEST, read_manifest

LAYOUTS = ("imagefolder", "classes")
LABEL_DEFAULTS = ("class_label", "label")
CAPTION_DEFAULTS = ("prompt", "text", "caption")
UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
# a split is one plain folder name: train, validation, test, holdout-2 ...
SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,99}")
MAX_NAME = 100  # characters of a file or class folder name made from an item's name or label
MAX_VALUE_CHARS = 100_000  # a label or caption as text (a long prompt is a few thousand)
FINISHED = ("done", "cached")


@dataclass
class Row:
    source: Path
    file_name: str
    label: str | None
    text: str | None
    labels: dict[str, Any]  # the item's sweep values
    seed: int | None


# --- a run's manifest, read with every field checked for the type Studio writes ----------


class RunReader:
    """A finished run's manifest.json as `studio dataset` and `studio eval` read it. Each
    field is checked for its type where it is read; a damaged one is a UserError naming
    manifest.json and the field (steps.STEP.items[3].artifacts.image.path), and an
    artifact path must name a regular file inside the run folder."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST
        self.manifest = read_manifest(self.run_dir)
        self.root = self.run_dir.resolve()

    def damaged(self, field: str, value: Any, expected: str) -> UserError:
        return UserError(f"{_shown(self.path)}: {printable(clip(field, 300))}: {_echo(value)}; expected {expected}. "
                         "The run's manifest is damaged (Studio writes it): run the pipeline again "
                         "(nothing was written)")

    def steps(self) -> dict[str, dict[str, Any]]:
        steps = self.manifest["steps"]  # a mapping: read_manifest checked
        for step_id, record in steps.items():
            if not isinstance(record, dict):
                raise self.damaged(f"steps.{step_id}", record, "a mapping (uses, status, items)")
        return steps

    def items(self, step_id: str) -> list[tuple[int, dict[str, Any]]]:
        items = self.steps()[step_id].get("items")
        if items is None:
            return []
        if not isinstance(items, list):
            raise self.damaged(f"steps.{step_id}.items", items, "a list of items")
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise self.damaged(f"steps.{step_id}.items[{index}]", item, "a mapping (name, status, artifacts)")
        return list(enumerate(items))

    def finished_items(self, step_id: str) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for index, item in self.items(step_id):
            status = item.get("status")
            if not isinstance(status, str):
                raise self.damaged(f"steps.{step_id}.items[{index}].status", status,
                                   "a string (done, cached, failed, skipped ...)")
            if status in FINISHED:
                out.append((index, item))
        return out

    def _mapping(self, step_id: str, index: int, item: dict[str, Any], key: str) -> dict[str, Any]:
        value = item.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.damaged(f"steps.{step_id}.items[{index}].{key}", value, "a mapping of names to values")
        return value

    def params(self, step_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
        return self._mapping(step_id, index, item, "params")

    def labels(self, step_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
        return self._mapping(step_id, index, item, "labels")

    def name(self, step_id: str, index: int, item: dict[str, Any]) -> str | None:
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise self.damaged(f"steps.{step_id}.items[{index}].name", name, "a string (the item's name)")
        return name

    def seed(self, step_id: str, index: int, item: dict[str, Any]) -> int | None:
        seed = item.get("seed")
        if seed is not None and (type(seed) is not int or not -2**64 < seed < 2**64):
            raise self.damaged(f"steps.{step_id}.items[{index}].seed", seed, "an integer or null")
        return seed

    def param(self, step_id: str, index: int, item: dict[str, Any], name: str) -> str | None:
        """The parameter (or sweep label) `name` of an item as text; None when the item
        has none or it is a media input (a mapping)."""
        params, labels = self.params(step_id, index, item), self.labels(step_id, index, item)
        field, value = ("params", params[name]) if name in params else ("labels", labels.get(name))
        if value is None or isinstance(value, dict):
            return None
        if isinstance(value, (str, int, float)):  # bool is an int
            text = value if isinstance(value, str) else json.dumps(value)
        else:
            try:
                text = json.dumps(value, ensure_ascii=False)
            except (ValueError, TypeError, RecursionError):
                raise self.damaged(f"steps.{step_id}.items[{index}].{field}.{name}", value,
                                   "a value (a string, number or short list)") from None
        if len(text) > MAX_VALUE_CHARS:
            raise self.damaged(f"steps.{step_id}.items[{index}].{field}.{name}", value,
                               f"at most {MAX_VALUE_CHARS:,} characters")
        return text

    def artifacts(self, step_id: str, index: int, item: dict[str, Any]) -> dict[str, dict[str, Any]]:
        artifacts = self._mapping(step_id, index, item, "artifacts")
        for port, artifact in artifacts.items():
            where = f"steps.{step_id}.items[{index}].artifacts.{port}"
            if not isinstance(artifact, dict):
                raise self.damaged(where, artifact, "a mapping (path, media_type, sha256, size)")
            if not isinstance(artifact.get("media_type"), str):
                raise self.damaged(f"{where}.media_type", artifact.get("media_type"), "a media type such as image/png")
            if not isinstance(artifact.get("path"), str):
                raise self.damaged(f"{where}.path", artifact.get("path"), "a path inside the run folder")
        return artifacts

    def artifact_file(self, step_id: str, index: int, port: str, artifact: dict[str, Any]) -> Path:
        """The regular file inside the run folder an artifact names (checked: a path
        that is absolute, climbs out with `..`, or links out of the run is refused)."""
        field = f"steps.{step_id}.items[{index}].artifacts.{port}.path"
        value = artifact["path"]
        relative = PurePosixPath(value)
        if (not value or "\0" in value or len(value) > 4096 or relative.is_absolute() or ".." in relative.parts
                or Path(value).is_absolute()):
            raise self.damaged(field, value, "a path relative to the run folder, inside it")
        path = self.run_dir / relative
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):  # a loop of links
            raise self.damaged(field, value, "a file inside the run folder (it is a loop of links)") from None
        if not resolved.is_relative_to(self.root):
            raise self.damaged(field, value, f"a file inside the run folder; it links to {_shown(resolved)}")
        try:
            mode = os.stat(resolved).st_mode
        except OSError as exc:
            raise self.damaged(field, value, f"a file of the run; it cannot be read ({exc.strerror or exc})") from None
        if not stat.S_ISREG(mode):
            raise self.damaged(field, value, "a regular file of the run; it is a folder, a pipe or a device")
        return resolved


def _shown(path: Path) -> str:
    return printable(clip(str(path), 300))


def _echo(value: Any) -> str:
    return printable(echo(value))


# --- the export ---------------------------------------------------------------------------


def export(run_dir: Path, out: Path, *, step: str | None = None, port: str | None = None,
           layout: str = "imagefolder", label: str | None = None, caption: str | None = None,
           split: str | None = None) -> tuple[Path, int]:
    """Write the chosen step's outputs under `out` (or out/split); returns the folder
    written and the number of files."""
    if layout not in LAYOUTS:
        raise UserError(f"--layout {_echo(layout)}: use one of {', '.join(LAYOUTS)}")
    if split is not None and (not SPLIT.fullmatch(split) or split in (".", "..")):
        raise UserError(f"--split {_echo(split)}: a split is one folder name inside -o (train, validation, test): "
                        "letters, digits and _ . = + - (at most 100), not a path")
    for option, value in (("--label", label), ("--caption", caption), ("--step", step), ("--port", port)):
        if value is not None and (not value or len(value) > 1000):
            raise UserError(f"{option} {_echo(value)}: give a name of 1 to 1,000 characters")
    target = _target(Path(out), split)
    reader = RunReader(run_dir)
    step_id, items = _pick_step(reader, step)
    port = port or _pick_port(reader, items, step_id)
    label = label if label is not None else _first_param(reader, step_id, items, LABEL_DEFAULTS)
    caption = caption if caption is not None else _first_param(reader, step_id, items, CAPTION_DEFAULTS)
    if layout == "classes" and label is None:
        raise UserError(f"--layout classes needs a class per file: step {_echo(step_id)} has no class_label or "
                        "label parameter; name the parameter that is the class with --label (e.g. --label prompt)")
    rows = _rows(reader, items, step_id, port, label, caption)
    made = _make_parent(target.parent)  # the folders created here, removed again if the export fails
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        if os.path.lexists(partial):
            _remove(partial)
        _write(partial, rows, layout, label)
        if os.path.lexists(target):
            target.rmdir()  # empty, checked above
        partial.rename(target)
    except BaseException as exc:
        _remove(partial)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
        if isinstance(exc, OSError):
            from studio.execute.artifacts import os_error_text

            raise UserError(f"-o {_shown(out)}: {os_error_text(exc)} (nothing was written)") from None
        raise
    return target, len(rows)


def _target(out: Path, split: str | None) -> Path:
    """Where the set goes: a new or empty folder, never reached through a link (a link
    could take the files anywhere), never a file."""
    checked = [(out, "-o")] + ([(out / split, "--split")] if split else [])
    for path, option in checked:
        if path.is_symlink():
            raise UserError(f"{option} {_shown(path)} is a link (to {_shown(Path(os.readlink(path)))}); give a "
                            "real folder (nothing was written)")
        if os.path.lexists(path) and not path.is_dir():
            raise UserError(f"{option} {_shown(path)} exists and is not a folder; give a new folder "
                            "(nothing was written)")
    target = out / split if split else out
    if target.is_dir():
        try:
            with os.scandir(target) as entries:
                empty = next(entries, None) is None
        except OSError as exc:
            raise UserError(f"{_shown(target)}: cannot be read ({exc.strerror or exc})") from None
        if not empty:
            raise UserError(f"{_shown(target)} exists and is not empty; give a new folder (nothing was written)")
    for parent in target.parents:  # the nearest folder that exists must take new files
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise UserError(f"-o {_shown(out)}: {_shown(parent)} is not a folder (nothing was written)")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"-o {_shown(out)}: cannot write in {_shown(parent)} (nothing was written)")
            break
    return target


def _make_parent(folder: Path) -> list[Path]:
    missing = []
    for path in [folder, *folder.parents]:
        if os.path.lexists(path):
            break
        missing.append(path)
    made = []
    try:
        for path in reversed(missing):
            path.mkdir()
            made.append(path)
    except OSError as exc:
        for path in reversed(made):
            try:
                path.rmdir()
            except OSError:
                pass
        from studio.execute.artifacts import os_error_text

        raise UserError(f"-o: {os_error_text(exc)} (nothing was written)") from None
    return made


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _pick_step(reader: RunReader, step: str | None) -> tuple[str, list[tuple[int, dict]]]:
    steps = reader.steps()
    if step is not None:
        if step not in steps:
            raise UserError(f"--step {_echo(step)}: no such step in {_shown(reader.run_dir)}; its steps: "
                            f"{printable(clip(', '.join(steps), 300)) or 'none'}")
        chosen = step
    else:  # the step with the most finished items: a sweep rather than its contact sheet
        counts = {s: len(reader.finished_items(s)) for s in steps}
        if not counts or max(counts.values()) == 0:
            raise UserError(f"{_shown(reader.run_dir)}: no finished items to export")
        chosen = max(counts, key=lambda s: counts[s])
    items = reader.finished_items(chosen)
    if not items:
        raise UserError(f"step {_echo(chosen)} of {_shown(reader.run_dir)} has no finished items to export")
    return chosen, items


def _pick_port(reader: RunReader, items: list[tuple[int, dict]], step_id: str) -> str:
    ports = sorted({p for index, item in items for p in reader.artifacts(step_id, index, item)})
    if len(ports) != 1:
        raise UserError(f"step {_echo(step_id)} writes {len(ports)} outputs "
                        f"({printable(clip(', '.join(ports), 300))}); choose one with --port")
    return ports[0]


def _first_param(reader: RunReader, step_id: str, items: list[tuple[int, dict]],
                 names: tuple[str, ...]) -> str | None:
    for name in names:
        if any(reader.params(step_id, index, item).get(name) not in (None, "") for index, item in items):
            return name
    return None


def _rows(reader: RunReader, items: list[tuple[int, dict]], step_id: str, port: str, label: str | None,
          caption: str | None) -> list[Row]:
    rows: list[Row] = []
    names: set[str] = set()
    for index, item in items:
        artifact = reader.artifacts(step_id, index, item).get(port)
        if not artifact:
            continue
        source = reader.artifact_file(step_id, index, port, artifact)
        suffix = source.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", source.suffix) else ""
        stem = safe_name(reader.name(step_id, index, item) or "", f"item{len(rows)}")[:MAX_NAME - 20]
        name = f"{stem}{suffix}"
        while name in names:
            name = f"{stem}-{len(names)}{suffix}"
        names.add(name)
        rows.append(Row(source, name, None if label is None else reader.param(step_id, index, item, label),
                        None if caption is None else reader.param(step_id, index, item, caption),
                        reader.labels(step_id, index, item), reader.seed(step_id, index, item)))
    if not rows:
        raise UserError(f"step {_echo(step_id)} has no {_echo(port)} files to export")
    return rows


def safe_name(value: str, fallback: str) -> str:
    """`value` as one file or folder name: letters, digits and . _ = + - only, no
    leading dot, at most MAX_NAME characters; `fallback` when nothing is left."""
    return UNSAFE.sub("_", value).strip("._")[:MAX_NAME].rstrip("._") or fallback


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # the same bytes, no second copy
    except OSError:
        shutil.copy2(source, target)


def _class_folders(rows: list[Row]) -> dict[str | None, str]:
    """Each label's folder name; labels that read the same once made safe (a/b, a_b)
    keep apart by a short hash."""
    import hashlib

    folders: dict[str | None, str] = {}
    taken: dict[str, str | None] = {}
    for label in dict.fromkeys(row.label for row in rows):
        folder = safe_name(label or "unlabelled", "_")
        if folder in taken and taken[folder] != label:
            digest = hashlib.sha256((label or "").encode("utf-8", "surrogatepass")).hexdigest()[:8]
            folder = f"{folder[:MAX_NAME - 9]}-{digest}"
        taken[folder] = label
        folders[label] = folder
    return folders


def _write(folder: Path, rows: list[Row], layout: str, label: str | None) -> None:
    folder.mkdir()
    if layout == "classes":
        folders = _class_folders(rows)
        for row in rows:
            _place(row.source, folder / folders[row.label] / row.file_name)
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
        try:
            lines.append(json.dumps(record, ensure_ascii=False, default=str))
        except (ValueError, RecursionError):
            raise UserError(f"{row.file_name}: its sweep labels in the manifest are nested too deep to write "
                            "(the run's manifest is damaged; nothing was written)") from None
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
