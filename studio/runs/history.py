"""Run history: every run below an output folder (OUT/<pipeline>/<run-id>/), listed,
searched, resolved from what a user types, and removed, through the run index
(studio.runs.history_index, SQLite, kept as OUT/.index.sqlite).

Beside it: studio.runs.history_fields checks every value read from a manifest or typed on
the command line before the index stores or compares it (a run that cannot be indexed
is listed as "unreadable" with a note saying why; it never stops the others from being
listed), and studio.runs.run_folders owns the folders themselves (the `latest` link in each
pipeline's folder, removal that never follows a link, the disk a run takes).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import UserError, clip
from studio.runs.history_fields import (MAX_LIMIT, MAX_PARAMS_CHARS, MAX_PARAMS_DEPTH, MAX_SEED, _too_deep_or_large,
                                   check_int, check_text, printable_text)
from studio.runs.history_index import INDEX, RUN_COLUMNS, SCHEMA, TABLES, _stamp, query_index
from studio.runs.run_folders import LATEST, MANIFEST, disk_usage, is_plain_dir, link_latest, newest_in, remove_tree, run_dirs

# names other modules and tests import from here
__all__ = ["INDEX", "LATEST", "MANIFEST", "MAX_PARAMS_DEPTH", "SCHEMA", "TABLES", "Run", "_stamp",
           "_too_deep_or_large", "disk_usage", "find", "link_latest", "newest_in", "printable_text",
           "recorded_cache_keys", "remove", "remove_tree", "resolve", "runs"]


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
        check_text(name, value)
    if limit is not None:
        check_int("--limit", limit, 1, MAX_LIMIT)

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

    return query_index(root, query, notes)



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
    check_text("--step", step)
    check_text("--uses", uses)
    if seed is not None:
        check_int("--seed", seed, 0, MAX_SEED)
    check_int("--limit", limit, 1, MAX_LIMIT)
    if params is not None and not isinstance(params, dict):
        raise UserError(f"--param: expected KEY=VALUE pairs, got {type(params).__name__}")
    for key, value in (params or {}).items():
        check_text("--param", key)
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

    return query_index(root, query, notes)



def recorded_cache_keys(root: Path, notes: list[str] | None = None) -> set[str]:
    """The cache keys the items of every run below `root` recorded."""
    return query_index(root, lambda db: {row[0] for row in db.execute(
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



def remove(root: Path, run_dir: Path) -> None:
    """Delete one run's folder (refused for anything that is not a run folder
    OUT/<pipeline>/<run-id> below `root`, after links and `..` are resolved). Nothing
    below the run folder is followed: a link in it is removed, not what it points at."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(run_dir))
    shown = clip(printable_text(str(run_dir)), 300)
    if (real.parent.parent != real_root or real.name.startswith(".") or real.parent.name.startswith(".")
            or real.name == LATEST or not is_plain_dir(real) or not is_plain_dir(real.parent)
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
        newest = sorted(run_dirs(real.parent))
        if newest:
            link_latest(newest[-1])
        else:
            try:
                os.unlink(link)
            except OSError:
                pass
    query_index(root, lambda db: None, None)  # the index forgets it
