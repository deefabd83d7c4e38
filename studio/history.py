"""Run history: every run below an output folder (OUT/<pipeline>/<run-id>/), listed
and searched through an index in SQLite (the standard library's sqlite3), kept as
OUT/.index.sqlite.

The manifests stay the source of truth. The index holds what they say and each
manifest's size and modification time; every query first brings it up to date (runs
that appeared, changed or were removed), reading only the manifests whose stamp
changed. A missing, stale, foreign or damaged index is rebuilt from the manifests, so it
can always be deleted. A run still marked "running" is read again each time (its
journal says how far it got).

A `latest` link in each pipeline's folder points at its newest run.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from studio.errors import UserError

INDEX = ".index.sqlite"
LATEST = "latest"
SCHEMA = 1  # bumped when the tables change: an index of another version is rebuilt
MANIFEST = "manifest.json"
# the disk size of a run is the sum over its files, walked to this depth and count
MAX_WALK_FILES = 100_000

TABLES = """
CREATE TABLE runs (
    run_dir TEXT PRIMARY KEY, pipeline TEXT, run_id TEXT, status TEXT, started TEXT, seconds REAL,
    source TEXT, done INTEGER, failed INTEGER, cached INTEGER, items INTEGER, bytes INTEGER, shared_bytes INTEGER,
    stamp TEXT
);
CREATE TABLE items (
    run_dir TEXT, step TEXT, uses TEXT, name TEXT, status TEXT, seed INTEGER, seconds REAL, params TEXT,
    cache_key TEXT
);
CREATE INDEX items_by_run ON items (run_dir);
CREATE INDEX runs_by_started ON runs (started);
"""


@dataclass
class Run:
    """One run as the index knows it."""

    run_dir: str
    pipeline: str
    run_id: str
    status: str
    started: str
    seconds: float | None
    source: str
    done: int
    failed: int
    cached: int
    items: int
    bytes: int
    shared_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def runs(root: Path, *, pipeline: str | None = None, status: str | None = None, since: str | None = None,
         until: str | None = None, limit: int | None = None) -> list[Run]:
    """The runs below `root`, newest first, filtered by pipeline name, status and the
    start date (ISO dates or times: "2026-11-24", "2026-11-24T10:00")."""
    with _index(root) as db:
        where, args = [], []
        for column, value, op in (("pipeline", pipeline, "="), ("status", status, "="),
                                  ("started", since, ">="), ("started", _until(until), "<")):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        query = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        query += " ORDER BY started DESC, run_id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [Run(*row[:13]) for row in db.execute(query, args)]


def _until(value: str | None) -> str | None:
    """An --until bound that includes its whole day: start times are ISO text
    ("2026-11-24T10:00:00+0000"), so a bare date is compared as the date followed by the
    highest character, which sorts after every time of that day."""
    if value is None:
        return None
    return value + "\uffff" if len(value) <= 10 else value


def find(root: Path, *, step: str | None = None, uses: str | None = None, seed: int | None = None,
         params: dict[str, Any] | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Items of any run below `root` by step id, generator, seed and parameter values
    (compared as the manifest records them), newest run first."""
    with _index(root) as db:
        where, args = [], []
        for column, value in (("i.step", step), ("i.uses", uses), ("i.seed", seed)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        query = ("SELECT i.run_dir, r.pipeline, r.started, i.step, i.uses, i.name, i.status, i.seed, i.seconds, "
                 "i.params, i.cache_key FROM items i JOIN runs r ON r.run_dir = i.run_dir"
                 + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY r.started DESC, i.rowid")
        found = []
        for row in db.execute(query, args):
            item_params = json.loads(row[9]) if row[9] else {}
            if params and not all(_matches(item_params.get(k), v) for k, v in params.items()):
                continue
            found.append({"run_dir": row[0], "pipeline": row[1], "started": row[2], "step": row[3], "uses": row[4],
                          "name": row[5], "status": row[6], "seed": row[7], "seconds": row[8], "params": item_params,
                          "cache_key": row[10]})
            if len(found) >= limit:
                break
        return found


def recorded_cache_keys(root: Path) -> set[str]:
    """The cache keys the items of every run below `root` recorded."""
    with _index(root) as db:
        return {row[0] for row in db.execute("SELECT DISTINCT cache_key FROM items WHERE cache_key IS NOT NULL")}


def _matches(recorded: Any, wanted: Any) -> bool:
    if isinstance(recorded, dict) and "sha256" in recorded:  # a media input: by file name or hash
        return wanted in (recorded.get("file"), recorded.get("from"), recorded.get("sha256"))
    if isinstance(recorded, (int, float)) and isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        return float(recorded) == float(wanted)
    return recorded == wanted


def resolve(root: Path, value: str) -> Path:
    """A run directory from what a user types: a run directory, a pipeline's folder (its
    newest run), `latest` (the newest run below `root`) or a pipeline name."""
    path = Path(value)
    if (path / MANIFEST).is_file() or path.name == MANIFEST:
        return path if path.is_dir() else path.parent
    if value == LATEST:
        newest = runs(root, limit=1)
        if not newest:
            raise UserError(f"no runs in {root}; run a pipeline first (studio run PIPELINE.yaml)")
        return Path(newest[0].run_dir)
    folder = path if path.is_dir() else root / value
    if folder.is_dir():
        newest = newest_in(folder)
        if newest is not None:
            return newest
    raise UserError(f"{value!r} is not a run: give a run directory (e.g. {root}/<pipeline>/<run-id>), a pipeline's "
                    f"folder or name (its newest run), or 'latest'")


def newest_in(folder: Path) -> Path | None:
    """A pipeline folder's newest run (its `latest` link, else the last run id), or None."""
    link = folder / LATEST
    if link.is_symlink() and (link / MANIFEST).is_file():
        return link.resolve()
    found = sorted(p for p in _run_dirs(folder))
    return found[-1] if found else None


def link_latest(run_dir: Path) -> None:
    """Point the pipeline folder's `latest` at `run_dir` (relative, replaced atomically).
    Where links cannot be made (some Windows and network file systems) there is none."""
    link = run_dir.parent / LATEST
    temporary = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(run_dir.name, temporary)
        os.replace(temporary, link)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def remove(root: Path, run_dir: Path) -> None:
    """Delete one run's folder (refused for anything that is not a run below `root`)."""
    real, real_root = run_dir.resolve(), root.resolve()
    if not (real / MANIFEST).is_file() or not real.is_relative_to(real_root) or real.parent.parent != real_root:
        raise UserError(f"{run_dir} is not a run folder below {root} (<pipeline>/<run-id> with a manifest.json); "
                        "nothing was removed")
    shutil.rmtree(real)
    link = real.parent / LATEST
    if link.is_symlink() and not link.exists():
        newest = sorted(_run_dirs(real.parent))
        if newest:
            link_latest(newest[-1])
        else:
            os.unlink(link)
    with _index(root):
        pass  # the index forgets it


def disk_usage(run_dir: Path) -> tuple[int, int]:
    """(bytes only this run holds, bytes it shares through hard links with the cache or
    other runs), from the blocks its files take."""
    own = shared = 0
    seen = 0
    for folder, dirs, files in os.walk(run_dir):
        for name in files:
            seen += 1
            if seen > MAX_WALK_FILES:
                return own, shared
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            size = st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
            if st.st_nlink > 1:
                shared += size
            else:
                own += size
    return own, shared


# -- the index ------------------------------------------------------------------------


class _Index:
    def __init__(self, root: Path):
        self.root = root
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.db = _open(self.root)
        _refresh(self.root, self.db)
        return self.db

    def __exit__(self, *exc) -> None:
        assert self.db is not None
        self.db.close()


def _index(root: Path) -> _Index:
    if not root.is_dir():
        raise UserError(f"{root} is not a folder of runs; give the --out folder runs were written to "
                        "(default: runs)")
    return _Index(root)


def _open(root: Path) -> sqlite3.Connection:
    """The index, made afresh when it is missing, of another version or not an index.
    Where the folder is read-only the index lives in memory for this query."""
    path = root / INDEX
    for _ in range(2):
        try:
            db = sqlite3.connect(path if os.access(root, os.W_OK) else ":memory:", timeout=10)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA:
                return db
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables:  # another version's, or not ours: start again
                db.close()
                os.unlink(path)
                continue
            db.executescript(TABLES)
            db.execute(f"PRAGMA user_version = {SCHEMA}")
            db.commit()
            return db
        except sqlite3.DatabaseError:  # a damaged file: it is only an index
            try:
                os.unlink(path)
            except OSError:
                pass
    return _memory()


def _memory() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(TABLES)
    return db


def _run_dirs(folder: Path) -> Iterator[Path]:
    """The run folders in one pipeline's folder: `<run-id>/` with a manifest, never the
    hidden ones being built nor the `latest` link."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name == LATEST or not entry.is_dir(follow_symlinks=False):
            continue
        if os.path.isfile(os.path.join(entry.path, MANIFEST)):
            yield Path(entry.path)


def _stamp(run_dir: Path) -> str | None:
    try:
        st = os.stat(run_dir / MANIFEST)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def _refresh(root: Path, db: sqlite3.Connection) -> None:
    """Bring the index up to date with the manifests below `root`."""
    known = {row[0]: (row[1], row[2]) for row in db.execute("SELECT run_dir, stamp, status FROM runs")}
    present = set()
    try:
        pipelines = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except OSError as exc:
        raise UserError(f"{root}: cannot be read ({exc.strerror or exc})") from None
    for pipeline in pipelines:
        for run_dir in _run_dirs(Path(pipeline.path)):
            key = str(run_dir)
            present.add(key)
            stamp = _stamp(run_dir)
            if key in known and known[key][0] == stamp and known[key][1] != "running":
                continue
            _store(db, run_dir, stamp)
    for gone in set(known) - present:
        db.execute("DELETE FROM runs WHERE run_dir = ?", (gone,))
        db.execute("DELETE FROM items WHERE run_dir = ?", (gone,))
    db.commit()


def _store(db: sqlite3.Connection, run_dir: Path, stamp: str | None) -> None:
    from studio.manifest import read_manifest

    key = str(run_dir)
    db.execute("DELETE FROM runs WHERE run_dir = ?", (key,))
    db.execute("DELETE FROM items WHERE run_dir = ?", (key,))
    try:
        manifest = read_manifest(run_dir)
    except (UserError, OSError):
        manifest = {"pipeline": run_dir.parent.name, "status": "unreadable", "steps": {}}
    counts = {"done": 0, "failed": 0, "cached": 0}
    rows = []
    for step_id, step in (manifest.get("steps") or {}).items():
        if not isinstance(step, dict):
            continue
        for item in step.get("items") or []:
            if not isinstance(item, dict):
                continue
            status = item.get("status")
            if status in counts:
                counts[status] += 1
            seed = item.get("seed") if isinstance(item.get("seed"), int) else None
            seconds = item.get("seconds") if isinstance(item.get("seconds"), (int, float)) else None
            cache_key = item.get("cache_key") if isinstance(item.get("cache_key"), str) else None
            rows.append((key, str(step_id), str(step.get("uses")), str(item.get("name")), str(status), seed, seconds,
                         json.dumps(item.get("params") or {}, default=str), cache_key))
    own, shared = disk_usage(run_dir)
    seconds = manifest.get("seconds")
    db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
        key, str(manifest.get("pipeline") or run_dir.parent.name), run_dir.name, str(manifest.get("status")),
        str(manifest.get("started") or ""), seconds if isinstance(seconds, (int, float)) else None,
        str(manifest.get("source") or ""), counts["done"], counts["failed"], counts["cached"], len(rows), own, shared,
        stamp))
    db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
