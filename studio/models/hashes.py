"""The short hash model sites and A1111 show for a model file (the first 10 hex digits
of its sha256), computed once and remembered by (real path, size, mtime) in a small JSON
file in the user's cache folder ($XDG_CACHE_HOME/studio, else ~/.cache/studio). The
cache is a convenience, never trusted: a damaged or foreign file is ignored and
written anew, and it is replaced whole (a temporary file renamed over it). `studio
models list` and runs (studio.weights.file_sha256: an image's `Model hash`, LoRA
checks) share it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from studio.models.scan import ModelFile

CACHE_NAME = "model-hashes.json"
FORMAT = 1
MAX_CACHE_BYTES = 8 * 2**20  # tens of thousands of entries
MAX_ENTRIES = 20_000  # the most recently written are kept
SHORT = 10  # hex digits, as A1111 and model sites show


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "studio"


class HashCache:
    """sha256 of model files by (path, size, mtime_ns); `hits` and `computed` count what
    a listing reused and hashed."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / CACHE_NAME
        self.entries = self._read()
        self.hits = self.computed = 0
        self._changed = False

    def _read(self) -> dict[str, list]:
        from studio.limits import FileRefused, read_regular

        try:
            data = json.loads(read_regular(self.path, MAX_CACHE_BYTES).decode("utf-8"))
        except (OSError, FileRefused, ValueError, RecursionError):
            return {}  # absent or damaged: rebuilt
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
            return {}
        return {k: v for k, v in data["files"].items() if _entry_ok(v)}

    def sha256(self, model: ModelFile) -> str | None:
        """The file's sha256 (None for a model folder, which has no one file to hash)."""
        if model.path.is_dir():
            return None
        return self.file_sha256(model.path, model.size, model.mtime_ns)

    def file_sha256(self, path: Path, size: int, mtime_ns: int) -> str:
        """The sha256 of the file at `path` as it is at `size` and `mtime_ns`: remembered,
        or computed and remembered. Keyed by the real path, so a model named through a
        link and by its own path (a run's `model:`, `studio models list`) share one entry."""
        key = os.path.realpath(path)
        entry = self.entries.get(key)
        if entry and entry[0] == size and entry[1] == mtime_ns:
            self.hits += 1
            return entry[2]
        digest = _hash_file(path)
        self.computed += 1
        self.entries.pop(key, None)
        self.entries[key] = [size, mtime_ns, digest]
        self._changed = True
        return digest

    def save(self) -> None:
        """Writes the cache when it changed; a cache folder that cannot be written is
        no error (the hashes are computed again next time)."""
        if not self._changed:
            return
        kept = dict(list(self.entries.items())[-MAX_ENTRIES:])
        text = json.dumps({"format": FORMAT, "files": kept})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".model-hashes-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            return
        self._changed = False


def remembered_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """A model file's sha256 through the persistent cache, for a run (the `Model hash` of
    an image's A1111 parameters, a LoRA's pin): a multi-gigabyte checkpoint is hashed
    once per version, not once per run."""
    cache = HashCache()
    digest = cache.file_sha256(path, size, mtime_ns)
    cache.save()
    return digest


def short_hash(digest: str | None) -> str:
    return digest[:SHORT] if digest else ""


def _entry_ok(value: object) -> bool:
    return (isinstance(value, list) and len(value) == 3 and isinstance(value[0], int) and isinstance(value[1], int)
            and isinstance(value[2], str) and len(value[2]) == 64 and all(c in "0123456789abcdef" for c in value[2]))


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
