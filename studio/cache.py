"""Content-addressed cache of finished items.

The key hashes everything that decides an item's outputs: generator name and version,
weights fingerprint, canonical parameters (inputs by content hash), seed, precision and
device kind. An entry is a directory made complete in a temporary place and renamed
into place, and every file is re-hashed before it is trusted, so an interrupted or
tampered entry is never reused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.artifacts import sha256_file
from studio.generator import Artifact

ENTRY = "entry.json"


def canonical(value: Any) -> Any:
    """JSON-ready form where inputs count by content, not by path."""
    if isinstance(value, Artifact):
        # labels count: a generator may draw them (image.grid does)
        return {"media_type": value.media_type, "sha256": value.sha256, "labels": canonical(value.labels)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "model_dump"):
        return canonical(dict(value))
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 7 and 7.0 are the same parameter
    return value


def cache_key(parts: dict[str, Any]) -> str:
    text = json.dumps(canonical(parts), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class CachedFile:
    port: str
    path: Path
    media_type: str
    sha256: str


class StepCache:
    def __init__(self, root: Path):
        self.root = root

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def notes(self, key: str) -> dict:
        try:
            return json.loads((self._dir(key) / ENTRY).read_text("utf-8")).get("notes", {})
        except (OSError, ValueError):
            return {}

    def lookup(self, key: str) -> list[CachedFile] | None:
        entry_dir = self._dir(key)
        try:
            entry = json.loads((entry_dir / ENTRY).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        files = []
        for port, info in entry.get("files", {}).items():
            path = entry_dir / info["file"]
            if not path.is_file() or sha256_file(path) != info["sha256"]:
                return None  # incomplete or altered: recompute, never trust
            files.append(CachedFile(port, path, info["media_type"], info["sha256"]))
        return files

    def store(self, key: str, artifacts: dict[str, Artifact], notes: dict | None = None) -> None:
        final = self._dir(key)
        if (final / ENTRY).exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
        try:
            files = {}
            for port, art in artifacts.items():
                shutil.copyfile(art.path, tmp / art.path.name)
                files[port] = {"file": art.path.name, "media_type": art.media_type, "sha256": art.sha256}
            (tmp / ENTRY).write_text(json.dumps({"files": files, "notes": notes or {}}, indent=2, default=str),
                                     "utf-8")
            try:
                os.rename(tmp, final)
            except OSError:
                pass  # another run stored it first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
