"""Ray's messages for the driver, kept for the run folder (RUN/ray.log) instead of the
terminal, where they were once read as the run's own output. `hold_ray_output` routes
them to `OUTPUT` for a run's time (for good when Studio started Ray itself),
`release_ray_output` puts Ray's printing back, `write_ray_log` writes what was held."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from studio.errors import clip, printable
from studio.execute.artifacts import atomic_write

RAY_LOG = "ray.log"  # in the run folder: what Ray had to say to the driver during the run
MAX_RAY_LINES = 2000  # the latest ones kept, each clipped


class RayOutput:
    """Ray's messages for the driver, kept for the run folder instead of the terminal:
    errors the cluster pushes to the driver (printed by Ray as "(raylet) Task Worker.keep
    failed ... killed by `ray.kill`" when a worker retires as a batch is sent, which the
    run handles) and Ray's log records. Workers' own stdout and stderr stay in Ray's
    session logs (log_to_driver=False)."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=MAX_RAY_LINES)
        self.lock = threading.Lock()
        self.dropped = 0

    def add(self, line: str) -> None:
        with self.lock:
            if len(self.lines) == self.lines.maxlen:
                self.dropped += 1
            self.lines.append(clip(printable(line.rstrip("\n")), 2000))

    def take(self) -> list[str]:
        with self.lock:
            lines, dropped = list(self.lines), self.dropped
            self.lines.clear()
            self.dropped = 0
        return ([f"({dropped:,} earlier lines dropped)"] if dropped else []) + lines


class _ToRayOutput(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            OUTPUT.add(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.levelname} {record.name}: "
                       f"{record.getMessage()}")
        except Exception:  # noqa: BLE001 - a log line must never fail the run
            pass


OUTPUT = RayOutput()
_held: dict[str, Any] | None = None  # what hold_ray_output replaced, to put back
_held_for_good = False


def hold_ray_output(ray: Any, for_good: bool = False) -> None:
    """From now on, what Ray would print for the driver in this process (pushed errors,
    its "ray" logger) goes to OUTPUT instead of stdout and stderr; `for_good` when this
    process is Studio's (it started Ray), else until `release_ray_output`."""
    global _held, _held_for_good
    _held_for_good = _held_for_good or for_good
    if _held is not None:
        return
    worker = sys.modules.get("ray._private.worker")
    logger = logging.getLogger("ray")
    _held = {"worker": worker, "print": getattr(worker, "print_to_stdstream", None),
             "handlers": list(logger.handlers), "propagate": logger.propagate}

    def print_to_run_log(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        try:
            for line in data.get("lines", ()):
                OUTPUT.add(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({data.get('pid', 'ray')}) {line}")
        except Exception:  # noqa: BLE001
            pass

    if _held["print"] is not None:  # Ray's error listener looks it up here for every message
        worker.print_to_stdstream = print_to_run_log
    logger.handlers = [_ToRayOutput()]
    logger.propagate = False


def release_ray_output() -> None:
    """Ray prints for the driver again as it did before (unless Studio started Ray)."""
    global _held
    if _held is None or _held_for_good:
        return
    if _held["print"] is not None:
        _held["worker"].print_to_stdstream = _held["print"]
    logger = logging.getLogger("ray")
    logger.handlers, logger.propagate = _held["handlers"], _held["propagate"]
    _held = None


def write_ray_log(run_dir: Path, lines: list[str]) -> None:
    """RUN/ray.log with `lines`, when there are any (written whole or not at all; a log
    never fails a finished run)."""
    if not lines:
        return
    try:
        atomic_write(run_dir / RAY_LOG, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    except OSError:
        pass


def session_logs(ray: Any) -> str | None:
    """Ray's session log folder (its raylet's and workers' logs) on this machine, or None."""
    try:
        return str(ray._private.worker._global_node.get_logs_dir_path())
    except Exception:  # noqa: BLE001 - a Ray Client driver has none here
        return None
