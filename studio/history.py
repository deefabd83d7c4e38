"""Run history: every run below an output folder (OUT/<pipeline>/<run-id>/), listed
and searched through an index in SQLite (the standard library's sqlite3), kept as
OUT/.index.sqlite.

The manifests stay the source of truth. The index holds what they say and each
manifest's size and modification time; every query first brings it up to date (runs
that appeared, changed or were removed), reading only the manifests whose stamp
changed. A missing, stale, foreign or damaged index is rebuilt from the manifests, so it
can always be deleted. A run still marked "running" is read again each time (its
journal says how far it got).

Everything read from a run folder is a file anyone could have written: each field of a
manifest or journal is checked for its type and range before it is stored, and a run
that cannot be indexed is listed as "unreadable" with a note saying why; it never stops
the others from being listed. The index itself is only ever a regular file directly in
OUT: a link, a folder, a FIFO or a file of someone else's in its place is never written
through (a new index is made in a temporary file and renamed over it, or, where that
cannot be, kept in memory for the command). Walks of run folders are iterative and
bounded, and never follow a link.

A `latest` link in each pipeline's folder points at its newest run.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import quote

from studio.errors import UserError, clip

INDEX = ".index.sqlite"
LATEST = "latest"
SCHEMA = 2  # bumped when the tables change: an index of another version is rebuilt
MANIFEST = "manifest.json"
# the disk size of a run is the sum over its files, walked to this depth and count
MAX_WALK_FILES = 100_000
MAX_WALK_DEPTH = 64
# what one run may put in the index: a 10,000-item sweep is the largest Studio writes
MAX_INDEXED_ITEMS = 100_000
MAX_PARAMS_CHARS = 64 << 10  # an item's parameters as JSON
MAX_PARAMS_DEPTH = 32
MAX_NOTES = 20  # the problems noted about one run
MAX_SEED = 2**63 - 1  # seeds are 0 .. 2**63 - 1 (studio run --seed)
MAX_SECONDS = 1e12
MAX_LIMIT = 10**9
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
    note: str = ""  # what in its manifest could not be indexed, if anything

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def runs(root: Path, *, pipeline: str | None = None, status: str | None = None, since: str | None = None,
         until: str | None = None, limit: int | None = None, notes: list[str] | None = None) -> list[Run]:
    """The runs below `root`, newest first, filtered by pipeline name, status and the
    start date (ISO dates or times: "2026-11-24", "2026-11-24T10:00"). What could not be
    used (an index that was not one, a run folder that cannot be indexed) is appended to
    `notes` when given."""
    for name, value in (("--name", pipeline), ("--status", status), ("--since", since), ("--until", until)):
        _check_text(name, value)
    if limit is not None:
        _check_int("--limit", limit, 1, MAX_LIMIT)

    def query(db: sqlite3.Connection) -> list[Run]:
        where, args = [], []
        for column, value, op in (("pipeline", pipeline, "="), ("status", status, "="),
                                  ("started", since, ">="), ("started", _until(until), "<")):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = f"SELECT {RUN_COLUMNS} FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [Run(*row) for row in db.execute(sql, args)]

    return _query(root, query, notes)


def _until(value: str | None) -> str | None:
    """An --until bound that includes its whole day: start times are ISO text
    ("2026-11-24T10:00:00+0000"), so a bare date is compared as the date followed by the
    highest character, which sorts after every time of that day."""
    if value is None:
        return None
    return value + "\uffff" if len(value) <= 10 else value


def find(root: Path, *, step: str | None = None, uses: str | None = None, seed: int | None = None,
         params: dict[str, Any] | None = None, limit: int = 1000, notes: list[str] | None = None
         ) -> list[dict[str, Any]]:
    """Items of any run below `root` by step id, generator, seed and parameter values
    (compared as the manifest records them), newest run first."""
    _check_text("--step", step)
    _check_text("--uses", uses)
    if seed is not None:
        _check_int("--seed", seed, 0, MAX_SEED)
    _check_int("--limit", limit, 1, MAX_LIMIT)
    if params is not None and not isinstance(params, dict):
        raise UserError(f"--param: expected KEY=VALUE pairs, got {type(params).__name__}")
    for key, value in (params or {}).items():
        _check_text("--param", key)
        problem = _too_deep_or_large(value, MAX_PARAMS_DEPTH, 10_000)
        if problem:
            raise UserError(f"--param {clip(printable_text(key), 80)}: the value is {problem}; give a plain value "
                            f"(a number, a string, or a list or mapping at most {MAX_PARAMS_DEPTH} levels deep)")

    def query(db: sqlite3.Connection) -> list[dict[str, Any]]:
        where, args = [], []
        for column, value in (("i.step", step), ("i.uses", uses), ("i.seed", seed)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = ("SELECT i.run_dir, r.pipeline, r.started, i.step, i.uses, i.name, i.status, i.seed, i.seconds, "
               "i.params, i.cache_key FROM items i JOIN runs r ON r.run_dir = i.run_dir"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY r.started DESC, i.rowid")
        found = []
        for row in db.execute(sql, args):
            item_params = _params_from_index(row[9])
            if params and not all(_matches(item_params.get(k), v) for k, v in params.items()):
                continue
            found.append({"run_dir": row[0], "pipeline": row[1], "started": row[2], "step": row[3], "uses": row[4],
                          "name": row[5], "status": row[6], "seed": row[7], "seconds": row[8], "params": item_params,
                          "cache_key": row[10]})
            if len(found) >= limit:
                break
        return found

    return _query(root, query, notes)


def recorded_cache_keys(root: Path, notes: list[str] | None = None) -> set[str]:
    """The cache keys the items of every run below `root` recorded."""
    return _query(root, lambda db: {row[0] for row in db.execute(
        "SELECT DISTINCT cache_key FROM items WHERE typeof(cache_key) = 'text'")}, notes)


def _params_from_index(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text or len(text) > MAX_PARAMS_CHARS:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _matches(recorded: Any, wanted: Any) -> bool:
    if isinstance(recorded, dict) and "sha256" in recorded:  # a media input: by file name or hash
        return any(_same(wanted, recorded.get(k)) for k in ("file", "from", "sha256"))
    return _same(recorded, wanted)


def _same(a: Any, b: Any) -> bool:
    """Equality as a user means it: 7 matches 7.0 (Python compares int and float exactly,
    whatever their size), true never matches 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)
    except (RecursionError, TypeError, ValueError):
        return False


def resolve(root: Path, value: str) -> Path:
    """A run directory from what a user types: a run directory, a pipeline's folder (its
    newest run), `latest` (the newest run below `root`) or a pipeline name."""
    try:
        return _resolve(root, value)
    except (OSError, ValueError) as exc:  # a name too long for the system, a NUL ...
        raise UserError(f"{clip(printable_text(value), 200)}: not a run ({getattr(exc, 'strerror', None) or exc}); "
                        f"give a run directory, a pipeline's folder or name, or 'latest'") from None


def _resolve(root: Path, value: str) -> Path:
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
    raise UserError(f"{clip(printable_text(value), 200)!r} is not a run: give a run directory (e.g. "
                    f"{root}/<pipeline>/<run-id>), a pipeline's folder or name (its newest run), or 'latest'")


def newest_in(folder: Path) -> Path | None:
    """A pipeline folder's newest run (its `latest` link when it names a run in this
    folder, else the last run id), or None."""
    link = folder / LATEST
    try:
        if link.is_symlink():
            target = os.readlink(link)
            if os.sep not in target and target not in ("", ".", "..") and not target.startswith("."):
                run_dir = folder / target
                if run_dir.is_dir() and not run_dir.is_symlink() and (run_dir / MANIFEST).is_file():
                    return Path(os.path.realpath(run_dir))
    except (OSError, ValueError):
        pass
    found = sorted(p for p in _run_dirs(folder))
    return found[-1] if found else None


def link_latest(run_dir: Path) -> None:
    """Point the pipeline folder's `latest` at `run_dir` (relative, replaced atomically:
    the link is replaced, never what it points at). Where links cannot be made (some
    Windows and network file systems) there is none."""
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
    """Delete one run's folder (refused for anything that is not a run folder
    OUT/<pipeline>/<run-id> below `root`, after links and `..` are resolved). Nothing
    below the run folder is followed: a link in it is removed, not what it points at."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(run_dir))
    shown = clip(printable_text(str(run_dir)), 300)
    if (real.parent.parent != real_root or real.name.startswith(".") or real.parent.name.startswith(".")
            or real.name == LATEST or not _is_plain_dir(real) or not _is_plain_dir(real.parent)
            or not os.path.isfile(real / MANIFEST)):
        raise UserError(f"{shown} is not a run folder below {root} (<pipeline>/<run-id> with a manifest.json); "
                        "nothing was removed")
    try:
        remove_tree(real)
    except OSError as exc:
        raise UserError(f"{shown}: could not be removed entirely ({exc.strerror or exc}); what is left stays "
                        "there") from None
    link = real.parent / LATEST
    if link.is_symlink() and not link.exists():
        newest = sorted(_run_dirs(real.parent))
        if newest:
            link_latest(newest[-1])
        else:
            try:
                os.unlink(link)
            except OSError:
                pass
    _query(root, lambda db: None, None)  # the index forgets it


def _is_plain_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def remove_tree(path: Path) -> None:
    """Delete the folder `path` and everything below it, however deep, without
    recursion and without following a link (a link is removed, not what it points at).
    Only one folder is open at a time; going back up, each parent is checked to be the
    folder that was left. Raises OSError when something cannot be removed."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        def scan(fd: int) -> list[str]:
            subfolders = []
            with os.scandir(fd) as listing:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(entry.name)
                    else:
                        try:
                            os.unlink(entry.name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
            return subfolders

        def identity(fd: int) -> tuple[int, int]:
            st = os.fstat(fd)
            return st.st_dev, st.st_ino

        # one level per folder on the way down: (its name in its parent, its identity, what is left in it)
        stack = [("", identity(fd), scan(fd))]
        while stack:
            name, ident, pending = stack[-1]
            if pending:
                child_name = pending.pop()
                try:
                    child = os.open(child_name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError:  # it became a link or a file meanwhile: remove the name itself
                    os.unlink(child_name, dir_fd=fd)
                    continue
                os.close(fd)
                fd = child
                stack.append((child_name, identity(fd), scan(fd)))
                continue
            stack.pop()
            if not stack:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            if identity(fd) != stack[-1][1]:
                raise OSError(f"{path}: a folder below it was moved while it was being removed")
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:  # removed meanwhile by someone else: gone, as asked
        pass


def disk_usage(run_dir: Path) -> tuple[int, int]:
    """(bytes only this run holds, bytes it shares through hard links with the cache or
    other runs), from the blocks its files take. The walk is iterative, never follows a
    link and stops at MAX_WALK_DEPTH folders deep and MAX_WALK_FILES entries (a lower
    bound beyond that)."""
    own = shared = 0
    seen = 0
    stack: list[tuple[str, int]] = [(os.fspath(run_dir), 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_WALK_FILES:
                return own, shared
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 < MAX_WALK_DEPTH:
                    stack.append((entry.path, depth + 1))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            size = st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
            if st.st_nlink > 1:
                shared += size
            else:
                own += size
    return own, shared


# -- checking values ------------------------------------------------------------------


def printable_text(value: Any) -> str:
    """A value from a file or the command line as a message may repeat it."""
    from studio.errors import printable

    text = value if isinstance(value, str) else repr(value)
    return printable(text[:2000].encode("utf-8", "backslashreplace").decode("utf-8"))


def _check_text(option: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise UserError(f"{option}: expected text, got {type(value).__name__}")
    if len(value) > 10_000:
        raise UserError(f"{option}: {len(value):,} characters; at most 10,000 are compared")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{option} {clip(printable_text(value), 80)}: not valid UTF-8 text (bytes the terminal "
                        "could not decode); give the text as the manifests record it") from None


def _check_int(option: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise UserError(f"{option}: {clip(printable_text(value), 80)} is not a whole number in the range "
                        f"{low}..{high}")


def _too_deep_or_large(value: Any, max_depth: int, max_nodes: int) -> str | None:
    """What is wrong with a JSON-like value's shape ("nested more than N deep", "more
    than N values"), or None. Iterative; a shared sub-value counts each time it is
    reached, so YAML aliases cannot make a small text into a huge value."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        current, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            return f"more than {max_nodes:,} values"
        if isinstance(current, (list, tuple, dict)):
            if depth > max_depth:
                return f"nested more than {max_depth} deep"
            children = current.values() if isinstance(current, dict) else current
            if len(children) > max_nodes:
                return f"more than {max_nodes:,} values"
            stack.extend((c, depth + 1) for c in children)
    return None


class _Fields:
    """Values read from one manifest, each checked for type and range; what was wrong
    is kept as notes ("steps.a.items[3].seed: ...")."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.count = 0

    def note(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{where}: {message}")

    def text(self, where: str, value: Any, limit: int, *, default: str = "", optional: bool = True) -> str:
        if value is None and optional:
            return default
        if not isinstance(value, str):
            self.note(where, f"a {_kind(value)}, not text; not indexed")
            return default
        # lone surrogates (a JSON "\\udcff") cannot be stored as UTF-8: shown as escapes
        value = value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
        return value

    def int_in(self, where: str, value: Any, low: int, high: int) -> int | None:
        if value is None:
            return None
        if type(value) is not int or not low <= value <= high:
            self.note(where, f"{clip(printable_text(value), 60)} is not a whole number in {low}..{high}; "
                             "not indexed")
            return None
        return value

    def seconds(self, where: str, value: Any) -> float | None:
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value <= MAX_SECONDS):
            self.note(where, f"{clip(printable_text(value), 60)} is not a number of seconds; not indexed")
            return None
        return float(value)

    def params(self, where: str, value: Any) -> str:
        if value is None:
            return "{}"
        if not isinstance(value, dict):
            self.note(where, f"a {_kind(value)}, not a mapping; not indexed")
            return "{}"
        problem = _too_deep_or_large(value, MAX_PARAMS_DEPTH, MAX_PARAMS_CHARS)
        if problem is None:
            try:
                text = json.dumps(value, default=str, allow_nan=True)
            except (ValueError, TypeError, RecursionError):
                text, problem = "", "not JSON"
            if problem is None and len(text) > MAX_PARAMS_CHARS:
                problem = f"{len(text):,} characters of JSON (at most {MAX_PARAMS_CHARS:,})"
            if problem is None:
                return text
        self.note(where, f"{problem}; not indexed (runs find cannot match them)")
        return "{}"


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


# -- the index ------------------------------------------------------------------------


T = TypeVar("T")


def _query(root: Path, work: Callable[[sqlite3.Connection], T], notes: list[str] | None) -> T:
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
            if os.path.lexists(side) and not _is_plain_dir(side):
                os.unlink(side)
        os.replace(temporary, path)
        db = _connect(path)
        if problem is not None and not problem.startswith(("not an index", "damaged")):
            notes.append(f"{path}: {problem}; a new index replaces it (the index is only ever a plain file in the "
                         "folder, never written through a link)")
        return db
    except (OSError, sqlite3.DatabaseError) as exc:
        try:
            if os.path.lexists(temporary) and not _is_plain_dir(temporary):
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


def _run_dirs(folder: Path) -> Iterator[Path]:
    """The run folders in one pipeline's folder: `<run-id>/` with a manifest, never the
    hidden ones being built nor the `latest` link."""
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.startswith(".") or entry.name == LATEST or not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        if os.path.isfile(os.path.join(entry.path, MANIFEST)):
            yield Path(entry.path)


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
        for run_dir in _run_dirs(Path(pipeline.path)):
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
    from studio.manifest import read_manifest

    key = str(run_dir)
    db.execute("DELETE FROM runs WHERE run_dir = ?", (key,))
    db.execute("DELETE FROM items WHERE run_dir = ?", (key,))
    fields = _Fields()
    try:
        manifest = read_manifest(run_dir)
    except (UserError, OSError) as exc:
        manifest = {"pipeline": run_dir.parent.name, "status": "unreadable", "steps": {}}
        fields.note(MANIFEST, clip(printable_text(str(exc)), 300))
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # a journal nobody wrote ... never fatal
        manifest = {"pipeline": run_dir.parent.name, "status": "unreadable", "steps": {}}
        fields.note(MANIFEST, f"cannot be read ({type(exc).__name__})")
    try:
        row, rows = _fields_of(manifest, run_dir, fields)
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


def _fields_of(manifest: Any, run_dir: Path, fields: _Fields) -> tuple[dict[str, Any], list[tuple]]:
    """The runs row and the items rows of one manifest, every value checked."""
    from studio.cache import KEY

    key = str(run_dir)
    if not isinstance(manifest, dict):
        fields.note(MANIFEST, f"a {_kind(manifest)}, not a mapping")
        manifest = {"status": "unreadable"}
    status = fields.text("status", manifest.get("status"), 100, default="unreadable", optional=False) or "unreadable"
    row = {
        "pipeline": fields.text("pipeline", manifest.get("pipeline"), 1000) or run_dir.parent.name,
        "status": status,
        "started": fields.text("started", manifest.get("started"), 100),
        "seconds": fields.seconds("seconds", manifest.get("seconds")),
        "source": fields.text("source", manifest.get("source"), 4096),
    }
    counts = {"done": 0, "failed": 0, "cached": 0}
    rows: list[tuple] = []
    steps = manifest.get("steps")
    if not isinstance(steps, dict):
        if steps is not None:
            fields.note("steps", f"a {_kind(steps)}, not a mapping; no items indexed")
        steps = {}
    for step_id, step in steps.items():
        where = f"steps.{clip(printable_text(step_id), 60)}"
        if not isinstance(step, dict):
            fields.note(where, f"a {_kind(step)}, not a mapping; its items are not indexed")
            continue
        items = step.get("items")
        if items is None:
            continue
        if not isinstance(items, list):
            fields.note(f"{where}.items", f"a {_kind(items)}, not a list; not indexed")
            continue
        uses = fields.text(f"{where}.uses", step.get("uses"), 200)
        for n, item in enumerate(items):
            at = f"{where}.items[{n}]"
            if len(rows) >= MAX_INDEXED_ITEMS:
                fields.note(f"{where}.items", f"more than {MAX_INDEXED_ITEMS:,} items in the run; the rest are "
                                              "not indexed")
                break
            if not isinstance(item, dict):
                fields.note(at, f"a {_kind(item)}, not a mapping; not indexed")
                continue
            item_status = fields.text(f"{at}.status", item.get("status"), 100)
            if item_status in counts:
                counts[item_status] += 1
            cache_key = item.get("cache_key")
            if cache_key is not None and not (isinstance(cache_key, str) and KEY.fullmatch(cache_key)):
                fields.note(f"{at}.cache_key", "not a cache key (64 hex digits); not indexed")
                cache_key = None
            rows.append((key, step_id if isinstance(step_id, str) else str(step_id), uses,
                         fields.text(f"{at}.name", item.get("name"), 4096), item_status,
                         fields.int_in(f"{at}.seed", item.get("seed"), 0, MAX_SEED),
                         fields.seconds(f"{at}.seconds", item.get("seconds")),
                         fields.params(f"{at}.params", item.get("params")), cache_key))
        else:
            continue
        break  # the item limit was reached
    row.update(counts)
    # step ids are JSON keys (text): make sure a surrogate cannot reach SQLite
    rows = [(r[0], r[1].encode("utf-8", "backslashreplace").decode("utf-8"), *r[2:]) for r in rows]
    return row, rows
