"""Ctrl-C stops a run even when a library turned it into another exception.

Python raises KeyboardInterrupt wherever the main thread happens to be, and some
libraries catch everything around their imports (transformers' lazy modules report it
as "Could not import module ..."): the run would record a failed generator and go on.
The console entry point counts every SIGINT here; `studio.execute.batch.run_batch` compares the
count before and after a batch, and a failure during which Ctrl-C arrived is the
interrupt."""

from __future__ import annotations

import signal

_received = 0


def _on_sigint(signum, frame) -> None:
    global _received
    _received += 1
    if _in_ignored_callback(frame):
        # An exception raised in a weakref or GC callback (importlib's module-lock
        # cleanup runs one while modules load) is printed as "Exception ignored" with a
        # traceback, and lost: ask again a millisecond later, once the callback is over.
        _received -= 1
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
    raise KeyboardInterrupt


def _in_ignored_callback(frame) -> bool:
    code = getattr(frame, "f_code", None)
    return bool(code) and code.co_name == "cb" and "importlib" in code.co_filename


def _on_deferred(signum, frame) -> None:
    _on_sigint(signal.SIGINT, frame)


def install() -> None:
    """Count Ctrl-C from now on (main thread only: where Python runs signal handlers)."""
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGALRM, _on_deferred)  # a Ctrl-C put off by _on_sigint


def received() -> int:
    """How many times Ctrl-C arrived since `install` (0 when it was never installed)."""
    return _received
