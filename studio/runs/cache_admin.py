"""Looking after the step cache (OUT/.cache/steps): what it holds, and removing what is
least recently used.

An entry's folder time is its last use: Studio sets it when an item is served from
the entry. Runs hard-link the files they take from the cache, so removing an entry a
run still holds frees nothing; what the cache alone holds is what `gc` can give back.
Entries the runs below OUT recorded (their manifests' cache keys) are kept unless
asked: removing one means that run's pipeline makes the item again next time.
"""

from __future__ import annotations

import math
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from studio.errors import UserError
from studio.execute.cache import KEY
from studio.runs.history_fields import printable_text
from studio.runs.run_folders import disk_usage, remove_tree

# what --older-than and --max-gb accept: a century, a petabyte
MAX_DAYS = 36_500.0
MAX_GB = 1_000_000.0


@dataclass
class Entry:
    key: str
    path: Path
    last_used: float
    bytes: int  # disk blocks of its files
    alone: int  # of those, the blocks no run shares (what removing it frees)


def cache_root(out: Path) -> Path:
    return out / ".cache" / "steps"


def check_inside(out: Path) -> None:
    """The cache's folders (OUT/.cache, OUT/.cache/steps) are folders of OUT's own, not
    links to elsewhere: the cache commands never look after (or remove) files outside
    OUT. UserError naming the link otherwise."""
    for folder in (out / ".cache", cache_root(out)):
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise UserError(f"{printable_text(str(folder))}: cannot be read ({getattr(exc, 'strerror', None) or exc})"
                            ) from None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(folder)
            except OSError:
                target = "?"
            raise UserError(f"{printable_text(str(folder))} is a link (to {printable_text(target)}); the cache "
                            "commands only look after a cache inside the output folder. Nothing was changed; "
                            "remove the link, or give --out the folder it belongs to")
        if not stat.S_ISDIR(st.st_mode):
            raise UserError(f"{printable_text(str(folder))} is not a folder; it is not a Studio cache. Nothing "
                            "was changed")


def entries(out: Path) -> list[Entry]:
    """Every entry of the cache below `out`, least recently used first."""
    check_inside(out)
    root = cache_root(out)
    found = []
    try:
        with os.scandir(root) as listing:
            shards = [e for e in listing if len(e.name) == 2 and _plain_dir(e)]
    except OSError:
        return []
    for shard in shards:
        try:
            with os.scandir(shard.path) as it:
                listing = list(it)
        except OSError:
            continue
        for entry in listing:
            if not KEY.fullmatch(entry.name) or not _plain_dir(entry):
                continue
            try:
                last_used = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            alone, shared = disk_usage(Path(entry.path))
            found.append(Entry(entry.name, Path(entry.path), last_used, alone + shared, alone))
    return sorted(found, key=lambda e: e.last_used)


def _plain_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def keys_in_runs(out: Path, notes: list[str] | None = None) -> set[str]:
    """The cache keys the runs below `out` recorded."""
    from studio.runs.history import recorded_cache_keys

    return recorded_cache_keys(out, notes)


def check_limits(older_than_days: float | None, max_gb: float | None) -> None:
    """--older-than and --max-gb as `collect` takes them: finite, in range."""
    for option, value, high in (("--older-than", older_than_days, MAX_DAYS), ("--max-gb", max_gb, MAX_GB)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= high:
            raise UserError(f"{option}: {printable_text(value)[:80]} is not allowed; give a number from 0 to "
                            f"{high:,.0f}")


def collect(out: Path, *, older_than_days: float | None = None, max_bytes: int | None = None,
            include_listed: bool = False, dry_run: bool = False, notes: list[str] | None = None
            ) -> tuple[list[Entry], list[Entry]]:
    """Remove entries, least recently used first: those last used more than
    `older_than_days` ago, then more until the cache alone holds at most `max_bytes`.
    Returns (removed, kept because a listed run recorded them). Only entries inside
    `out`'s own cache folder are removed, each without following a link."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 0 <= max_bytes <= MAX_GB * 2**30:
            raise UserError(f"--max-gb: {printable_text(max_bytes)[:80]} bytes is not allowed; give a number of GB "
                            f"from 0 to {MAX_GB:,.0f}")
    check_limits(older_than_days, None)
    check_inside(out)
    listed = set() if include_listed else keys_in_runs(out, notes)
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
            try:
                remove_tree(entry.path)
            except OSError as exc:
                if notes is not None:
                    notes.append(f"{printable_text(str(entry.path))}: not removed entirely "
                                 f"({exc.strerror or exc})")
                continue
        removed.append(entry)
        alone_total -= entry.alone
    return removed, protected
