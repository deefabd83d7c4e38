"""The run index: what the manifests below an output folder say, kept in SQLite (the
standard library's sqlite3) as OUT/.index.sqlite, and brought up to date before every
query (query_index).

The manifests stay the source of truth. The index holds what they say and each
manifest's size and modification time; every query first brings it up to date (runs
that appeared, changed or were removed), reading only the manifests whose stamp
changed. A missing, stale, foreign or damaged index is rebuilt from the manifests, so it
can always be deleted. A run still marked "running" is read again each time (its
journal says how far it got).

The index itself is only ever a regular file directly in OUT: a link, a folder, a FIFO
or a file of someone else's in its place is never written through (a new index is made
in a temporary file and renamed over it, or, where that cannot be, kept in memory for
the command). Its rows are checked like any other input before they are trusted.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import quote

from studio.errors import UserError, clip
from studio.runs.history_fields import MANIFEST, ManifestFields, fields_of, printable_text
from studio.runs.run_folders import disk_usage, is_plain_dir, run_dirs

INDEX = ".index.sqlite"
SCHEMA = 2  # bumped when the tables change: an index of another version is rebuilt
# an index larger than this is not one Studio wrote for any history: it is made again
MAX_INDEX_BYTES = 4 << 30

TABLES = """
CREATE TABLE runs (
    run_dir TEXT PRIMARY KEY, pipeline TEXT, run_id TEXT, status TEXT, started TEXT, seconds REAL,
    source TEXT, done INTEGER, failed INTEGER, cached INTEGER, items INTEGER, bytes INTEGER, shared_bytes INTEGER,
    note TEXT, stamp TEXT
);
CREATE TABLE items (
    run_dir TEXT, step TEXT, uses TEXT, name TEXT, status TEXT, seed INTEGER, seconds REAL, params TEXT,
    cache_key TEXT
);
CREATE INDEX items_by_run ON items (run_dir);
CREATE INDEX runs_by_started ON runs (started);
"""
RUN_COLUMNS = ("run_dir, pipeline, run_id, status, started, seconds, source, done, failed, cached, items, bytes, "
               "shared_bytes, note")
# a row of `runs` whose values have the types Studio stores (an index is a file: its rows
# are checked like any other input before they are trusted)
_ROW_TYPES_OK = " AND ".join(
    [f"typeof({c}) = 'text'" for c in ("run_dir", "pipeline", "run_id", "status", "started", "source", "note")]
    + [f"typeof({c}) = 'integer'" for c in ("done", "failed", "cached", "items", "bytes", "shared_bytes")]
    + ["typeof(seconds) IN ('real', 'integer', 'null')", "typeof(stamp) IN ('text', 'null')"])


T = TypeVar("T")


def query_index(root: Path, work: Callable[[sqlite3.Connection], T], notes: list[str] | None) -> T:
    """`work` on the index of `root`, brought up to date first. A damaged index (one
    that fails while it is read) is made again and the work done once more; where the
    file cannot be used at all, the index lives in memory for this command."""
    if not isinstance(root, Path):
        root = Path(root)
    try:
        is_dir = stat.S_ISDIR(os.stat(root).st_mode)
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        raise UserError(f"{clip(printable_text(str(root)), 300)} is not a folder of runs; give the --out folder runs "
                        "were written to (default: runs)")
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"--out {clip(printable_text(str(root)), 300)}: the folder's path is not valid UTF-8; the "
                        "run index names runs by their path, so rename the folder") from None
    notes = notes if notes is not None else []
    for attempt in range(3):
        db = _memory() if attempt == 2 else _open(root, notes, rebuild=attempt == 1)
        try:
            _refresh(root, db, notes)
            return work(db)
        except sqlite3.DatabaseError as exc:
            if attempt == 2:
                raise
            if attempt == 1:
                notes.append(f"{root / INDEX}: cannot be used ({exc}); the index is kept in memory for this command")
        finally:
            db.close()
    raise AssertionError("unreachable")



def _open(root: Path, notes: list[str], *, rebuild: bool = False) -> sqlite3.Connection:
    """The index file, made afresh when it is missing, of another version, not an index,
    or not a plain file of its own (a link, a folder, a FIFO, a file with other names).
    Where the folder is read-only, or the index cannot be a plain file there, it lives
    in memory for this query."""
    path = root / INDEX
    if not os.access(root, os.W_OK):
        return _memory()
    problem = None if not rebuild else "damaged"
    if problem is None:
        problem = _not_plain(path, allow_missing=True)
    if problem is None:
        for suffix in ("-journal", "-wal", "-shm"):  # SQLite's own files beside it are never links
            side = _not_plain(Path(f"{path}{suffix}"), allow_missing=True)
            if side is not None:
                problem = f"{INDEX}{suffix} {side}"
                break
    if problem is None and os.path.lexists(path):
        db = None
        try:
            db = _connect(path)
            if _is_ours(db):
                return db
            problem = "not an index of this version of Studio"
        except sqlite3.DatabaseError as exc:
            problem = f"damaged ({exc})"
        if db is not None:
            db.close()
    made = _make(root, notes, problem)
    return made if made is not None else _memory()



def _not_plain(path: Path, *, allow_missing: bool) -> str | None:
    """Why `path` is not a plain file of its own, or None (also when it is missing and
    that is allowed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None if allow_missing else "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "is a link"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder"
    if not stat.S_ISREG(st.st_mode):
        return "is not a plain file (a pipe, socket or device)"
    if st.st_nlink > 1:
        return "is a hard link to a file elsewhere"
    if st.st_size > MAX_INDEX_BYTES:
        return f"is {st.st_size >> 20:,} MB"
    return None



def _connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing plain file: never creates one, never through a link."""
    db = sqlite3.connect(f"file:{quote(os.fspath(path))}?mode=rw", uri=True, timeout=10)
    try:
        db.execute("PRAGMA journal_mode = DELETE")  # no WAL files beside it
        db.execute("PRAGMA trusted_schema = OFF")
    except sqlite3.DatabaseError:
        db.close()
        raise
    if _not_plain(path, allow_missing=False) is not None:  # replaced meanwhile
        db.close()
        raise sqlite3.DatabaseError("the index changed while it was opened")
    return db



_REFERENCE: list[tuple] = []



def _is_ours(db: sqlite3.Connection) -> bool:
    """The index is this version's and holds exactly Studio's tables and indexes."""
    if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA:
        return False
    if not _REFERENCE:
        reference = _memory()
        _REFERENCE.extend(reference.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"))
        reference.close()
    return list(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")) == _REFERENCE



def _make(root: Path, notes: list[str], problem: str | None) -> sqlite3.Connection | None:
    """A new, empty index: made in a temporary file (created, never opened through a
    link) and renamed over INDEX, so whatever was there is replaced, not written to.
    `problem` is what was wrong with the one there, said in a note when it was not
    merely an index to make again."""
    path = root / INDEX
    temporary = root / f"{INDEX}.{os.getpid()}.tmp"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        for side in (temporary, Path(f"{temporary}-journal")):
            if os.path.lexists(side) and not os.path.isdir(side):
                os.unlink(side)
        os.close(os.open(temporary, flags, 0o644))
        db = _connect(temporary)
        db.executescript(TABLES)
        db.execute(f"PRAGMA user_version = {SCHEMA}")
        db.commit()
        db.close()
        for suffix in ("-journal", "-wal", "-shm"):  # stale or planted companions of the old index
            side = Path(f"{path}{suffix}")
            if os.path.lexists(side) and not is_plain_dir(side):
                os.unlink(side)
        os.replace(temporary, path)
        db = _connect(path)
        if problem is not None and not problem.startswith(("not an index", "damaged")):
            notes.append(f"{path}: {problem}; a new index replaces it (the index is only ever a plain file in the "
                         "folder, never written through a link)")
        return db
    except (OSError, sqlite3.DatabaseError) as exc:
        try:
            if os.path.lexists(temporary) and not is_plain_dir(temporary):
                os.unlink(temporary)
        except OSError:
            pass
        why = problem if problem is not None and not problem.startswith(("not an index", "damaged")) else (
            f"cannot be made ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})")
        notes.append(f"{path}: {why}; the index is kept in memory for this command (remove or rename it to keep "
                     "one)")
        return None



def _memory() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(TABLES)
    return db



def _stamp(run_dir: Path) -> str | None:
    try:
        st = os.stat(run_dir / MANIFEST)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"



def _refresh(root: Path, db: sqlite3.Connection, notes: list[str]) -> None:
    """Bring the index up to date with the manifests below `root`."""
    known = {row[0]: (row[1], row[2]) for row in db.execute(
        f"SELECT run_dir, stamp, status, {_ROW_TYPES_OK} FROM runs") if row[3] and isinstance(row[0], str)}
    # rows of the wrong types are not Studio's: they go, and their runs are read again
    dropped = db.execute(f"DELETE FROM runs WHERE NOT ({_ROW_TYPES_OK})").rowcount
    present = set()
    try:
        with os.scandir(root) as listing:
            entries = list(listing)
    except OSError as exc:
        raise UserError(f"{root}: cannot be read ({exc.strerror or exc})") from None
    pipelines = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                pipelines.append(entry)
        except OSError:
            continue
    for pipeline in pipelines:
        for run_dir in run_dirs(Path(pipeline.path)):
            key = str(run_dir)
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                notes.append(f"{printable_text(key)}: its name is not valid UTF-8, so it is not indexed; rename it")
                continue
            present.add(key)
            stamp = _stamp(run_dir)
            if key in known and known[key][0] == stamp and known[key][1] != "running":
                continue
            _store(db, run_dir, stamp)
    for gone in set(known) - present:
        db.execute("DELETE FROM runs WHERE run_dir = ?", (gone,))
        db.execute("DELETE FROM items WHERE run_dir = ?", (gone,))
    if dropped:  # items of rows that were not Studio's
        db.execute("DELETE FROM items WHERE run_dir NOT IN (SELECT run_dir FROM runs)")
    db.commit()



def _store(db: sqlite3.Connection, run_dir: Path, stamp: str | None) -> None:
    """Index one run: every field its manifest gives is checked before it is stored; a
    manifest that cannot be read at all is stored as an "unreadable" run with the reason."""
    from studio.execute.manifest import read_manifest

    key = str(run_dir)
    db.execute("DELETE FROM runs WHERE run_dir = ?", (key,))
    db.execute("DELETE FROM items WHERE run_dir = ?", (key,))
    fields = ManifestFields()
    try:
        manifest = read_manifest(run_dir)
    except (UserError, OSError) as exc:
        manifest = {"pipeline": run_dir.parent.name, "status": "unreadable", "steps": {}}
        fields.note(MANIFEST, clip(printable_text(str(exc)), 300))
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # a journal nobody wrote ... never fatal
        manifest = {"pipeline": run_dir.parent.name, "status": "unreadable", "steps": {}}
        fields.note(MANIFEST, f"cannot be read ({type(exc).__name__})")
    try:
        row, rows = fields_of(manifest, run_dir, fields)
    except (RecursionError, MemoryError, ValueError, TypeError, AttributeError, KeyError) as exc:
        fields.note(MANIFEST, f"cannot be indexed ({type(exc).__name__}: {clip(printable_text(str(exc)), 200)})")
        row = {"pipeline": run_dir.parent.name, "status": "unreadable", "started": "", "seconds": None,
               "source": "", "done": 0, "failed": 0, "cached": 0}
        rows = []
    own, shared = disk_usage(run_dir)
    note = "; ".join(fields.notes) + (f"; and {fields.count - len(fields.notes)} more" if fields.count > len(
        fields.notes) else "")
    db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
        key, row["pipeline"], run_dir.name, row["status"], row["started"], row["seconds"], row["source"],
        row["done"], row["failed"], row["cached"], len(rows), own, shared, note, stamp))
    db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
