"""Looking after the step cache (OUT/.cache/steps): what it holds, and removing what is
least recently used.

An entry's folder time is its last use: Studio sets it when an item is served from
the entry. Runs hard-link the files they take from the cache, so removing an entry a
run still holds frees nothing; what the cache alone holds is what `gc` can give back.
Entries the runs below OUT recorded (their manifests' cache keys) are kept unless
asked: removing one means that run's pipeline makes the item again next time.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from studio.cache import KEY
from studio.history import disk_usage


@dataclass
class Entry:
    key: str
    path: Path
    last_used: float
    bytes: int  # disk blocks of its files
    alone: int  # of those, the blocks no run shares (what removing it frees)


def cache_root(out: Path) -> Path:
    return out / ".cache" / "steps"


def entries(out: Path) -> list[Entry]:
    """Every entry of the cache below `out`, least recently used first."""
    root = cache_root(out)
    found = []
    try:
        shards = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and len(e.name) == 2]
    except OSError:
        return []
    for shard in shards:
        try:
            listing = list(os.scandir(shard.path))
        except OSError:
            continue
        for entry in listing:
            if not KEY.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                last_used = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            alone, shared = disk_usage(Path(entry.path))
            found.append(Entry(entry.name, Path(entry.path), last_used, alone + shared, alone))
    return sorted(found, key=lambda e: e.last_used)


def keys_in_runs(out: Path) -> set[str]:
    """The cache keys the runs below `out` recorded."""
    from studio.history import recorded_cache_keys

    return recorded_cache_keys(out)


def collect(out: Path, *, older_than_days: float | None = None, max_bytes: int | None = None,
            include_listed: bool = False, dry_run: bool = False) -> tuple[list[Entry], list[Entry]]:
    """Remove entries, least recently used first: those last used more than
    `older_than_days` ago, then more until the cache alone holds at most `max_bytes`.
    Returns (removed, kept because a listed run recorded them)."""
    listed = set() if include_listed else keys_in_runs(out)
    now = time.time()
    candidates = entries(out)
    alone_total = sum(e.alone for e in candidates)
    removed, protected = [], []
    for entry in candidates:
        old = older_than_days is not None and now - entry.last_used > older_than_days * 86400
        over = max_bytes is not None and alone_total > max_bytes
        if not (old or over):
            continue
        if entry.key in listed:
            protected.append(entry)
            continue
        if not dry_run:
            shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry)
        alone_total -= entry.alone
    return removed, protected
