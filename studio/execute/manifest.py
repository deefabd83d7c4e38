"""The run directory's record of what ran, with what, how it went, and every artifact
with its hash.

Two files carry it:

- journal.jsonl, append-only: a header line naming the process that runs, then one
  line per item as it finishes (done, cached, failed or skipped, with its artifacts'
  paths, sha256 and size). Each line is fsynced before the run goes on, so after a
  crash, even `kill -9`, it holds every item that finished. Once the final manifest is
  written it says nothing more, and is removed; when that write fails (a full disk),
  an end line records how the run ended.
- manifest.json, the whole picture: written when the run starts, at most once a second
  while it runs, and at its end, each time atomically. It names the process that runs.

`read_manifest` puts the two together: items the journal has and the manifest missed
are merged in, and a run whose process is gone is reported as interrupted, never as
running."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.errors import UserError
from studio.execute.artifacts import fsync_dir, write_json_atomic
from studio.limits import FileRefused, read_regular
from studio.version import __version__

if TYPE_CHECKING:
    from studio.execute.records import ItemResult, RunStats
    from studio.execute.runtime import Runtime
    from studio.host.registry import Registry
    from studio.pipeline.plan import Plan

MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
# A manifest of a 10,000-item run is 20-30 MB, and parsing JSON costs many times its
# size in memory: a larger file is not one Studio wrote, and is not read.
MAX_MANIFEST_BYTES = 32 << 20
# a journal line per item, a few hundred bytes each: a 10,000-item run writes a few MB
MAX_JOURNAL_BYTES = 64 << 20


def versions(registry: Registry) -> dict[str, Any]:
    out: dict[str, Any] = {"studio": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    out["plugins"] = {n: p.version for n, p in registry.plugins.items() if p.ok and n != "studio"}
    return out


class Manifest:
    def __init__(self, run_dir: Path, plan: Plan, registry: Registry, runtime: Runtime, stats: RunStats,
                 results: dict[str, ItemResult], executor: dict[str, Any] | None = None):
        self.path = run_dir / MANIFEST
        self.run_dir = run_dir
        self.plan = plan
        self.registry = registry
        self.runtime = runtime
        self.stats = stats
        self.executor = executor or {"name": "local"}
        self.results = results
        self.started = time.time()
        self.process = this_process()
        self.warnings: list[str] = []
        self.error: str | None = None  # what stopped the run early (a full disk ...)
        self._written = 0.0
        self.journal = Journal(run_dir / JOURNAL)

    def write(self, status: str, *, at_most_every_s: float = 0.0) -> None:
        """Write the manifest now, or (with at_most_every_s) only if the last write is
        that old: a 1,000-item sweep should not rewrite a growing file 1,000 times (the
        journal records every item in between)."""
        now = time.monotonic()
        if at_most_every_s and now - self._written < at_most_every_s:
            return
        self._written = now
        write_json_atomic(self.path, self.as_dict(status))

    def as_dict(self, status: str) -> dict[str, Any]:
        spec = self.plan.spec
        steps = {}
        for step in self.plan.steps:
            steps[step.id] = {
                "uses": step.uses,
                "plugin": self.registry.plugin_of(step.uses),
                "status": _step_status([self.results[i.name].status for i in step.items]),
                "items": [self._item(self.results[i.name]) for i in step.items],
            }
        return {
            "pipeline": spec.name,
            "source": str(spec.source) if spec.source else None,
            "run_dir": str(self.run_dir),
            "status": status,
            "error": self.error,
            "warnings": self.warnings,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "seconds": round(time.time() - self.started, 3),
            "seed": spec.seed,
            "process": self.process,
            "journal": JOURNAL,
            "executor": self.executor,
            "runtime": {**self.runtime.describe(), **self.stats.describe(self.runtime)},
            "versions": versions(self.registry),
            "resolved_pipeline": spec.data,
            "base_dir": str(spec.base_dir),  # where its relative input files were read from
            "steps": steps,
        }

    def start_journal(self) -> None:
        self.journal.open()
        self.journal.append({"record": "run", "pipeline": self.plan.spec.name, "process": self.process,
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started))})

    def record(self, result: ItemResult) -> None:
        """Journal an item that reached its final state. Raises OSError when the
        journal cannot be written."""
        self.journal.append({"record": "item", "step": result.step_id, **self._item(result)})

    def record_end(self, status: str) -> None:
        self.journal.append({"record": "end", "status": status, "error": self.error})

    def _item(self, r: ItemResult) -> dict[str, Any]:
        return {
            "name": r.name, "dir": r.dir, "status": r.status, "labels": r.labels, "seed": r.seed,
            "params": r.params, "seconds": None if r.seconds is None else round(r.seconds, 4),
            "error": r.error, "error_kind": r.error_kind, "cache_key": r.cache_key, "notes": r.notes,
            **({"worker": r.worker} if r.worker else {}),
            "artifacts": {
                port: {"path": relative_path(a.path, self.run_dir), "media_type": a.media_type,
                       "sha256": a.sha256, "size": a.size}
                for port, a in r.artifacts.items()
            },
        }


def relative_path(path: Path, run_dir: Path) -> str:
    """An artifact's path as the manifest records it: relative to the run directory.
    Paths are built below the run directory without resolving links (a run folder may
    be a link to another disk), so the plain comparison holds; the resolved one is for
    a path that came in resolved."""
    try:
        return path.relative_to(run_dir).as_posix()
    except ValueError:
        pass
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def _step_status(statuses: list[str]) -> str:
    for status in ("failed", "interrupted", "skipped", "pending"):
        if status in statuses:
            return status
    return "cached" if statuses and all(s == "cached" for s in statuses) else "done"


# --- the journal -----------------------------------------------------------------------


class Journal:
    """An append-only file of JSON lines, each fsynced before `append` returns."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)
        fsync_dir(self.path.parent)

    def append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            # a full disk can take half a line: cut it off, so the next line starts clean
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a stale journal is harmless: the manifest is final, so it is not read


def read_bounded(path: Path, limit: int, what: str) -> bytes | None:
    """The bytes of `path`, read only if it is a regular file of at most `limit` bytes
    (opened without blocking, so a FIFO or a device never hangs or floods the reader).
    None when there is no such file; UserError, naming it, when it is not one to read."""
    try:
        return read_regular(path, limit)
    except FileNotFoundError:
        return None
    except FileRefused as exc:
        if exc.kind == FileRefused.NOT_REGULAR:
            raise UserError(f"{_shown(path)}: the {what} is not a regular file (a pipe, device or folder)") from None
        if exc.kind == FileRefused.TOO_LARGE:
            raise UserError(f"{_shown(path)}: the {what} is {exc.size / 2**20:,.0f} MB; a run's {what} "
                            f"is at most {limit >> 20} MB, so this one is not read") from None
        raise UserError(f"{_shown(path)}: the {what} grows beyond {limit >> 20} MB; it is not read") from None
    except OSError as exc:
        raise UserError(f"{_shown(path)}: cannot read the {what} ({exc.strerror or exc})") from None


def _shown(path: Path) -> str:
    return shown(str(path), 300)


# control characters a terminal acts on: C0 except newline and tab, DEL, C1
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}
_CONTROL.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def shown(value: Any, limit: int = 500) -> str:
    """A value read from a run's files as a terminal may show it: any JSON type as
    text, control characters (escape sequences) as visible escapes, clipped."""
    from studio.errors import clip

    if value is None:
        return ""
    if isinstance(value, str):
        text = value[:limit * 2]
    elif isinstance(value, (list, dict)):
        try:
            text = json.dumps(value, default=str)[:limit * 2]
        except (ValueError, TypeError, RecursionError):
            text = f"<a {type(value).__name__}>"
    else:
        text = str(value)[:limit * 2]
    return clip(text.translate(_CONTROL), limit)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's records. A line cut short by a crash is skipped; a journal that is
    not a plain file of sane size, or nested too deep to parse, is a UserError."""
    data = read_bounded(path, MAX_JOURNAL_BYTES, "journal")
    if data is None:
        return []
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        except RecursionError:
            raise UserError(f"{_shown(path)}: not a valid journal (JSON nested too deep)") from None
        if isinstance(record, dict):
            records.append(record)
    return records


# --- is the process that runs it still there? -------------------------------------------


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "start_ticks": _start_ticks(pid)}


MAX_PID = 2**31 - 1  # a pid_t; Linux's own limit (pid_max) is at most 2**22


def process_is_gone(info: Any) -> bool:
    """True when the process recorded in `info` has certainly ended: same host, and no
    process with that pid, or one that started at another time (the pid was reused), or
    the machine has rebooted since. False when it runs or cannot be told (another host)."""
    # every field is a file's: a pid or start time that is not a sane number, a host or
    # boot id that is not short text, says nothing (OverflowError from os.kill otherwise)
    if not isinstance(info, dict) or not isinstance(info.get("host"), str) or info["host"] != socket.gethostname():
        return False
    pid = info.get("pid")
    if type(pid) is not int or not 0 < pid <= MAX_PID:
        return False
    boot, recorded_boot = _boot_id(), info.get("boot_id")
    if boot and isinstance(recorded_boot, str) and recorded_boot and boot != recorded_boot:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by someone else
    except (OSError, OverflowError, ValueError):
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    if state in ("Z", "X"):  # killed, not yet reaped by its parent
        return True
    ticks = info.get("start_ticks")
    return type(ticks) is int and 0 <= ticks < 2**64 and started != ticks


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State and start time (clock ticks after boot) from /proc/<pid>/stat, on Linux."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


# --- reading a run back ------------------------------------------------------------------


def read_manifest(run_dir: Path, *, repair: bool = False) -> dict[str, Any]:
    """A run's manifest, completed from its journal. With `repair`, a manifest that the
    journal corrected for a run that is over is written back (when the folder allows)."""
    given = Path(run_dir)
    path = given / MANIFEST if given.is_dir() else given
    if not os.path.lexists(path):
        raise UserError(f"{_shown(given)}: no {MANIFEST} here; give a run directory, e.g. runs/<pipeline>/<run-id>")
    data = read_bounded(path, MAX_MANIFEST_BYTES, "manifest")
    if data is None:
        raise UserError(f"{_shown(path)}: no such file; give a run directory, e.g. runs/<pipeline>/<run-id>")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        from studio.errors import clip

        raise UserError(f"{_shown(path)}: not a valid manifest ({clip(str(exc), 200)})") from None
    except RecursionError:
        raise UserError(f"{_shown(path)}: not a valid manifest (JSON nested too deep)") from None
    except MemoryError:
        raise UserError(f"{_shown(path)}: not read: it needs more memory than is free") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("steps"), dict):
        raise UserError(f"{path}: not a valid manifest (no steps)")
    if manifest.get("status") != "running":
        return manifest
    merged = merge_journal(manifest, read_journal(path.parent / JOURNAL))
    if repair and merged["status"] != "running":
        try:
            write_json_atomic(path, merged)
        except (OSError, RecursionError, ValueError):
            # a read-only copy of a run, or a manifest nested too deep for the indented
            # (recursive) JSON writer: the answer is the same, only not saved
            pass
    return merged


def merge_journal(manifest: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """A manifest written while the run was going, brought up to date: every item the
    journal recorded takes its journaled state, and when the run is over (an end
    record, or its process is gone) the status says how it ended."""
    items = _items_by_name(manifest)
    for record in records:
        name = record.get("name")
        if record.get("record") == "item" and isinstance(name, str) and name in items:
            entry = items[name]
            entry.clear()
            entry.update({k: v for k, v in record.items() if k not in ("record", "step")})
    end = next((r for r in reversed(records) if r.get("record") == "end"), None)
    if end is not None:
        status = end.get("status")
        manifest["status"] = status if isinstance(status, str) and status else "interrupted"
        manifest["error"] = end.get("error") or manifest.get("error")
    elif process_is_gone(manifest.get("process") or _journaled_process(records)):
        manifest["status"] = "interrupted"
        manifest["error"] = "the run's process ended without finishing (killed, or the machine stopped)"
    if manifest["status"] != "running":
        for entry in items.values():
            if entry.get("status") == "pending":
                entry["status"] = "interrupted"
    for step in manifest["steps"].values():
        if isinstance(step, dict) and isinstance(step.get("items"), list):
            step["status"] = _step_status([i.get("status") for i in step["items"]
                                           if isinstance(i, dict) and isinstance(i.get("status"), str)])
    return manifest


def _journaled_process(records: list[dict[str, Any]]) -> Any:
    return next((r.get("process") for r in records if r.get("record") == "run"), None)


def _items_by_name(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for step in manifest["steps"].values():
        items = step.get("items") if isinstance(step, dict) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                out[item["name"]] = item
    return out
