"""Ctrl-C stops a run even when a library turned it into another exception.

Python raises KeyboardInterrupt wherever the main thread happens to be, and some
libraries catch everything around their imports (transformers' lazy modules report it
as "Could not import module ..."): the run would record a failed generator and go on.
The console entry point counts every SIGINT here; `studio.batch.run_batch` compares the
count before and after a batch, and a failure during which Ctrl-C arrived is the
interrupt."""

from __future__ import annotations

import signal

_received = 0


def _on_sigint(signum, frame) -> None:
    global _received
    _received += 1
    raise KeyboardInterrupt


def install() -> None:
    """Count Ctrl-C from now on (main thread only: where Python runs signal handlers)."""
    signal.signal(signal.SIGINT, _on_sigint)


def received() -> int:
    """How many times Ctrl-C arrived since `install` (0 when it was never installed)."""
    return _received
