"""A fingerprint of a generator's source code, for the step cache key.

An installed release of a plugin is named by its version, which the key holds already.
A plugin installed from a working tree (`pip install -e`, or on PYTHONPATH) changes
without a new version while its author edits it: for those, the key also holds a hash
of every .py file of the generator's top-level package, so outputs made by the old code
are never served for the new. The hash is of the files' content (touching a file
changes nothing), computed once per version of the files.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

INSTALLED = ("site-packages", "dist-packages")
MAX_FILES = 2000  # a package is tens of files; a mistaken root is not walked for long


def code_fingerprint(cls: type) -> str:
    """"" for a generator from an installed release, else a hash of its package's source."""
    top = sys.modules.get(cls.__module__.split(".")[0])
    file = getattr(top, "__file__", None)
    if not file:
        return ""
    path = Path(file)
    root = path.parent if path.name == "__init__.py" else path
    if any(part in INSTALLED for part in root.parts):
        return ""
    files = sorted(root.rglob("*.py"))[:MAX_FILES] if root.is_dir() else [root]
    stamps = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        stamps.append((str(f), st.st_size, st.st_mtime_ns))
    return _digest(tuple(stamps))


@lru_cache(maxsize=256)
def _digest(stamps: tuple) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamps:
        try:
            h.update(Path(name).read_bytes())
        except OSError:
            continue
    return h.hexdigest()[:16]
