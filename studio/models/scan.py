"""One kind folder walked for model files, bounded: a loop, not a recursion; each real
folder once (a symbolic link back to a folder already walked is a loop and is left
out); at most MAX_SCAN_ENTRIES entries, MAX_SCAN_DEPTH levels and MAX_SCAN_SECONDS of
looking, past which the walk stops with a note saying what was cut. A folder with a
diffusers `model_index.json` (or a component's `config.json` beside its weights) is one
model and is not walked into. Nothing is opened: names, sizes and times only."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from studio.models.layout import KindFolder

MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
MAX_SCAN_ENTRIES = 20_000  # per kind folder; real ones hold tens to a few thousand files
MAX_SCAN_DEPTH = 8
MAX_SCAN_SECONDS = 10.0
FOLDER_MODEL_FILES = ("model_index.json", "config.json")  # a diffusers pipeline or component folder


@dataclass(frozen=True)
class ModelFile:
    kind: str
    name: str  # the path below the kind folder without its suffix, '/' between folders
    path: Path
    size: int
    mtime_ns: int
    folder: KindFolder  # where it was found

    @property
    def short(self) -> str:
        """The name without its sub-folders: `sdxl/juggernaut` -> `juggernaut`."""
        return self.name.rsplit("/", 1)[-1]


def scan_folder(folder: KindFolder, notes: list[str]) -> list[ModelFile]:
    """The models in one kind folder, sorted by name; `notes` gets what was cut or left out."""
    walk = _Walk(folder, notes)
    walk.run()
    return sorted(walk.found, key=lambda m: m.name)


class _Walk:
    def __init__(self, folder: KindFolder, notes: list[str]) -> None:
        self.folder, self.notes = folder, notes
        self.found: list[ModelFile] = []
        self.seen: set[tuple[int, int]] = set()
        self.looked = 0
        self.began = time.monotonic()

    def run(self) -> None:
        pending: list[tuple[Path, str, int]] = [(self.folder.path, "", 0)]
        while pending:
            path, prefix, depth = pending.pop()
            entries, cut = self._list(path)
            if cut:  # the bounds are reached: what was looked at is kept, nothing more is walked
                pending.clear()
            for entry, info in entries:
                name = prefix + entry.name
                if stat.S_ISDIR(info.st_mode):
                    if _is_model_folder(Path(entry.path)):
                        self._add(name, Path(entry.path), _folder_size(Path(entry.path)), info.st_mtime_ns)
                    elif depth + 1 > MAX_SCAN_DEPTH:
                        self.notes.append(f"{self.folder.path}: {name} is more than {MAX_SCAN_DEPTH} folders deep; "
                                          "left out")
                    else:
                        pending.append((Path(entry.path), name + "/", depth + 1))
                elif stat.S_ISREG(info.st_mode):
                    stem, suffix = os.path.splitext(name)
                    if suffix.lower() in MODEL_SUFFIXES:
                        self._add(stem, Path(entry.path), info.st_size, info.st_mtime_ns)

    def _list(self, path: Path) -> tuple[list[tuple[os.DirEntry, os.stat_result]], bool]:
        """The entries of a folder with their status (links followed), [] for one walked
        already or unreadable, and whether the scan's bounds were reached (then the
        entries are those looked at before)."""
        try:
            st = os.stat(path)
        except (OSError, ValueError) as exc:
            self.notes.append(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}); left out")
            return [], False
        if (st.st_dev, st.st_ino) in self.seen:
            self.notes.append(f"{path} leads back to a folder already read (a symbolic link loop); left out")
            return [], False
        self.seen.add((st.st_dev, st.st_ino))
        out = []
        try:
            with os.scandir(path) as listing:
                for entry in listing:
                    self.looked += 1
                    if self.looked > MAX_SCAN_ENTRIES or time.monotonic() - self.began > MAX_SCAN_SECONDS:
                        self.notes.append(
                            f"{self.folder.path}: more than Studio looks through (over {MAX_SCAN_ENTRIES:,} entries "
                            f"or {MAX_SCAN_SECONDS:.0f} s); only the models found before that are listed. Give the "
                            "folder that holds the models, not one above it")
                        return sorted(out, key=lambda e: e[0].name), True
                    try:
                        out.append((entry, entry.stat(follow_symlinks=True)))
                    except OSError:  # a broken link: nothing to load
                        continue
        except OSError as exc:
            self.notes.append(f"{path} cannot be read ({exc.strerror or exc}); left out")
            return [], False
        return sorted(out, key=lambda e: e[0].name), False

    def _add(self, name: str, path: Path, size: int, mtime_ns: int) -> None:
        self.found.append(ModelFile(self.folder.kind, name, path, size, mtime_ns, self.folder))


def _is_model_folder(path: Path) -> bool:
    return any(os.path.isfile(path / name) for name in FOLDER_MODEL_FILES)


def _folder_size(path: Path, limit: int = 2000) -> int:
    """The bytes of a model folder's files, its top two levels (a diffusers pipeline's
    components), at most `limit` entries looked at."""
    total, looked = 0, 0
    pending = [(path, 0)]
    while pending and looked < limit:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    looked += 1
                    if looked >= limit:
                        break
                    if entry.is_file():
                        total += entry.stat().st_size
                    elif entry.is_dir(follow_symlinks=False) and depth < 1:
                        pending.append((Path(entry.path), depth + 1))
        except OSError:
            continue
    return total
