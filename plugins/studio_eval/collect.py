"""The sets `studio eval` and eval.metrics measure: what a run made (read from its
manifest.json), or the files of a folder, with their classes.

A folder's classes are its sub-folders (the image-folder-by-class layout) or the
`label` column of a metadata.jsonl (the Hugging Face imagefolder layout); a run's are
the class each item asked for (`class_label`), when it asked for one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from studio import UserError
from studio.limits import data_files

FAMILIES = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
    "audio": (".wav", ".flac", ".ogg"),
    "midi": (".mid", ".midi"),
    "text": (".txt",),
}
MEDIA_FAMILY = {"image/png": "image", "audio/wav": "audio", "audio/midi": "midi", "text/plain": "text"}
MAX_ITEMS = 20_000
MAX_MANIFEST_BYTES = 64 << 20
MAX_METADATA_BYTES = 64 << 20


@dataclass
class Member:
    path: Path
    family: str  # image | audio | midi | text
    label: str | None = None  # its class, when the set has classes


@dataclass
class MediaSet:
    where: str  # what was read, in words ("run .../manifest.json, step draw")
    members: list[Member]
    step: str | None = None  # the run's step it came from

    def family(self) -> str:
        return self.members[0].family

    def labels(self) -> list[str] | None:
        labels = [m.label for m in self.members]
        return None if any(label is None for label in labels) else labels  # type: ignore[return-value]


# image sets Studio can make without a folder (studio_image.data's sources), drawn at 16 x 16
SOURCES = ("sklearn:digits", "emoji:noto")


def collect(source: Path, *, step: str | None = None, family: str | None = None) -> MediaSet:
    """The set at `source`: a run directory (it holds manifest.json), a folder, or one of
    SOURCES (sklearn:digits, emoji:noto: real images by class, made on the spot)."""
    if str(source) in SOURCES:
        found = _from_folder(_source_folder(str(source)), family)
        return MediaSet(f"{source} ({len(found.members)} real images by class)", found.members)
    if not source.exists():
        raise UserError(f"{source}: not found; give a run directory (with manifest.json) or a folder of files")
    if source.is_dir() and (source / "manifest.json").is_file():
        return _from_run(source, step, family)
    if step:
        raise UserError(f"--step {step!r}: {source} is a folder, not a run directory (no manifest.json); "
                        "--step only picks a step of a run")
    if not source.is_dir():
        raise UserError(f"{source}: a file; give a run directory or a folder of files")
    return _from_folder(source, family)


@functools.lru_cache(maxsize=None)
def _source_folder(name: str) -> Path:
    """A built-in image source as PNGs by class, in a temporary folder removed when the
    process ends (1,797 digits take about a second to write)."""
    import atexit
    import shutil
    import tempfile

    from PIL import Image

    from studio_image.data import load_images

    data = load_images(name, 16, 1 if name == "sklearn:digits" else 3)
    folder = Path(tempfile.mkdtemp(prefix=f"studio-{name.replace(':', '-')}-"))
    atexit.register(shutil.rmtree, folder, True)
    for i, (image, label) in enumerate(zip(data.images, data.labels.tolist())):
        pixels = ((image.permute(1, 2, 0).squeeze(-1).numpy() + 1) * 127.5).round().clip(0, 255).astype("uint8")
        target = folder / data.classes[label].replace("/", "_")
        target.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(target / f"{i:05d}.png")
    return folder


def _from_run(run: Path, step: str | None, family: str | None) -> MediaSet:
    manifest_path = run / "manifest.json"
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise UserError(f"{manifest_path}: over {MAX_MANIFEST_BYTES >> 20} MB; not a manifest Studio wrote")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        steps = manifest["steps"]
        assert isinstance(steps, dict)
    except (ValueError, KeyError, AssertionError, TypeError) as exc:
        raise UserError(f"{manifest_path}: not a Studio manifest ({exc})") from None
    found: dict[tuple[str, str], list[Member]] = {}
    for step_id, record in steps.items():
        if step and step_id != step:
            continue
        for item in record.get("items", []) if isinstance(record, dict) else []:
            if item.get("status") not in ("done", "cached"):
                continue
            params = item.get("params") or {}
            asked = params.get("class_label")
            for artifact in (item.get("artifacts") or {}).values():
                kind = MEDIA_FAMILY.get(artifact.get("media_type"))
                path = (run / str(artifact.get("path", ""))).resolve()
                if kind is None or (family and kind != family) or not path.is_relative_to(run.resolve()):
                    continue  # a path that would leave the run is not one Studio wrote
                found.setdefault((step_id, kind), []).append(
                    Member(path, kind, None if asked is None else str(asked)))
    if step and step not in steps:
        raise UserError(f"--step {step!r}: no such step in {run}; its steps: {', '.join(steps) or 'none'}")
    if not found:
        wanted = f"{family} " if family else ""
        raise UserError(f"{run}: no finished {wanted}outputs to measure" + (f" in step {step!r}" if step else ""))
    # several steps made media: the one with the most items (a sweep, rather than its contact sheet)
    (step_id, kind), members = max(found.items(), key=lambda entry: len(entry[1]))
    others = sorted(f"{s} ({k})" for s, k in found if (s, k) != (step_id, kind))
    where = f"run {run}, step {step_id!r}" + (f" (also there: {', '.join(others)}; pick with --step)" if others else "")
    return MediaSet(where, members[:MAX_ITEMS], step_id)


def _from_folder(root: Path, family: str | None) -> MediaSet:
    wanted = {kind: suffixes for kind, suffixes in FAMILIES.items() if not family or kind == family}
    by_family: dict[str, list[Path]] = {}
    for path in data_files(root, tuple(s for suffixes in wanted.values() for s in suffixes)):  # one walk, sorted
        if not path.name.startswith("."):
            kind = next(k for k, suffixes in wanted.items() if path.suffix.lower() in suffixes)
            by_family.setdefault(kind, []).append(path)
    if not by_family:
        listed = ", ".join(s for suffixes in wanted.values() for s in suffixes)
        raise UserError(f"{root}: no {family + ' ' if family else ''}files to measure ({listed})"
                        + (f"; the set it is compared with is {family}" if family else ""))
    kind, files = max(by_family.items(), key=lambda entry: len(entry[1]))
    if len(files) > MAX_ITEMS:
        raise UserError(f"{root}: {len(files):,} {kind} files; a set is measured from at most {MAX_ITEMS:,}: "
                        "give a folder with fewer")
    labels = _metadata_labels(root)
    members = []
    for path in files:
        relative = path.relative_to(root)
        label = labels.get(relative.as_posix()) if labels else (relative.parts[0] if len(relative.parts) > 1 else None)
        members.append(Member(path, kind, label))
    return MediaSet(f"folder {root} ({len(files)} {kind} files)", members)


def _metadata_labels(root: Path) -> dict[str, str] | None:
    """file_name -> label from root/metadata.jsonl, None when there is none or it has no labels."""
    path = root / "metadata.jsonl"
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise UserError(f"{path}: over {MAX_METADATA_BYTES >> 20} MB")
    labels = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}:{number}: not JSON ({exc})") from None
        if isinstance(row, dict) and "file_name" in row and "label" in row:
            labels[str(row["file_name"])] = str(row["label"])
    return labels or None
