"""The sets `studio eval` and eval.metrics measure: what a run made (read from its
manifest.json), or the files of a folder, with their classes.

A folder's classes are its sub-folders (the image-folder-by-class layout) or the
`label` column of a metadata.jsonl (the Hugging Face imagefolder layout); a run's are
the class each item asked for (`class_label`), when it asked for one.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from studio import UserError
from studio.errors import clip, echo, printable
from studio.limits import data_files

FAMILIES = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
    "audio": (".wav", ".flac", ".ogg"),
    "midi": (".mid", ".midi"),
    "text": (".txt",),
}
MEDIA_FAMILY = {"image/png": "image", "audio/wav": "audio", "audio/midi": "midi", "text/plain": "text"}
MAX_ITEMS = 20_000
MAX_METADATA_BYTES = 64 << 20
MAX_METADATA_LINE = 1 << 20  # one row: a file name, a label, perhaps a caption
MAX_LABEL_CHARS = 1000


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


# image sets Studio can make without a folder (studio_imagedata's sources), drawn at 16 x 16
SOURCES = ("sklearn:digits", "emoji:noto")


def collect(source: Path, *, step: str | None = None, family: str | None = None) -> MediaSet:
    """The set at `source`: a run directory (it holds manifest.json), a folder, or one of
    SOURCES (sklearn:digits, emoji:noto: real images by class, made on the spot)."""
    if str(source) in SOURCES:
        found = _from_folder(_source_folder(str(source)), family)
        return MediaSet(f"{source} ({len(found.members)} real images by class)", found.members)
    if not source.exists():
        raise UserError(f"{source}: not found; give a run directory (with manifest.json) or a folder of files")
    if source.is_dir() and os.path.lexists(source / "manifest.json"):  # a run (its manifest is checked as read)
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

    from studio_imagedata.sources import load_images

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
    from studio import RunReader

    reader = RunReader(run)  # the manifest, read bounded; every field it gives is checked for its type
    steps = reader.steps()
    if step is not None and step not in steps:
        raise UserError(f"--step {echo(step)}: no such step in {run}; its steps: "
                        f"{clip(', '.join(map(str, steps)), 300) or 'none'}")
    found: dict[tuple[str, str], list[Member]] = {}
    for step_id in steps:
        if step and step_id != step:
            continue
        for index, item in reader.finished_items(step_id):
            asked = reader.param(step_id, index, item, "class_label")
            for port, artifact in reader.artifacts(step_id, index, item).items():
                kind = MEDIA_FAMILY.get(artifact["media_type"])
                if kind is None or (family and kind != family):
                    continue
                path = reader.artifact_file(step_id, index, port, artifact)
                found.setdefault((step_id, kind), []).append(Member(path, kind, asked))
                if len(found[(step_id, kind)]) > MAX_ITEMS:
                    raise UserError(f"{reader.path}: step {echo(step_id)} lists over {MAX_ITEMS:,} {kind} outputs; "
                                    f"a set is measured from at most {MAX_ITEMS:,}")
    if not found:
        wanted = f"{family} " if family else ""
        raise UserError(f"{run}: no finished {wanted}outputs to measure" + (f" in step {echo(step)}" if step else ""))
    # several steps made media: the one with the most items (a sweep, rather than its contact sheet)
    (step_id, kind), members = max(found.items(), key=lambda entry: len(entry[1]))
    others = sorted(f"{s} ({k})" for s, k in found if (s, k) != (step_id, kind))
    where = f"run {run}, step {step_id!r}" + (f" (also there: {clip(', '.join(others), 300)}; pick with --step)"
                                              if others else "")
    return MediaSet(where, members, step_id)


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
    """file_name -> label from root/metadata.jsonl, None when there is none or it has no
    labels. Each line is a JSON object; a line that is not (not UTF-8, not JSON, nested
    too deep, too long, a label that is not a string or an integer) is refused by its
    file:line."""
    path = root / "metadata.jsonl"
    data = _read_regular(path, MAX_METADATA_BYTES, "metadata.jsonl")
    if data is None:
        return None
    labels: dict[str, str] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        where = f"{_shown(path)}:{number}"
        if len(raw) > MAX_METADATA_LINE:
            raise UserError(f"{where}: a line of {len(raw):,} bytes; a metadata line is at most "
                            f"{MAX_METADATA_LINE:,} bytes (a file name and a few short columns)")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the line); save the file as "
                            "UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{where}: not JSON ({clip(str(exc), 200)}); each line is one JSON object such as "
                            '{"file_name": "a.png", "label": "cat"}') from None
        except RecursionError:
            raise UserError(f"{where}: JSON nested too deep; each line is one flat JSON object such as "
                            '{"file_name": "a.png", "label": "cat"}') from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: a JSON {_json_type(row)}; each line is one JSON object such as "
                            '{"file_name": "a.png", "label": "cat"}')
        if "label" not in row:
            continue
        name, label = row.get("file_name"), row["label"]
        if not isinstance(name, str) or not name or len(name) > MAX_LABEL_CHARS:
            raise UserError(f"{where}: file_name {_echo(name)}; give the file's path relative to {_shown(root)} "
                            f"as a string (at most {MAX_LABEL_CHARS:,} characters)")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise UserError(f"{where}: label {_echo(label)} (a JSON {_json_type(label)}); a label is a string "
                            "or an integer, the class of the file")
        label = str(label)
        if not label or len(label) > MAX_LABEL_CHARS:
            raise UserError(f"{where}: label {_echo(label)}; a label is 1 to {MAX_LABEL_CHARS:,} characters")
        labels[name] = label
    return labels or None


def _read_regular(path: Path, limit: int, what: str) -> bytes | None:
    """The bytes of `path`, None when it does not exist; refused by name when it is not
    a regular file (a FIFO would block, a device never end) or is over `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{_shown(path)}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{_shown(path)}: a folder; the {what} is a file")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{_shown(path)}: not a regular file (a pipe or a device); the {what} is a plain file")
        if st.st_size > limit:
            raise UserError(f"{_shown(path)}: {st.st_size / 2**20:,.0f} MB; the {what} is read up to "
                            f"{limit >> 20} MB")
        chunks, total = [], 0
        while total <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > limit:
            raise UserError(f"{_shown(path)}: grows beyond {limit >> 20} MB while read; the {what} is not read")
        return b"".join(chunks)
    except OSError as exc:
        raise UserError(f"{_shown(path)}: cannot read the {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _shown(path: Path) -> str:
    return printable(clip(str(path), 300))


def _echo(value: object) -> str:
    return printable(echo(value))


def _json_type(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)
