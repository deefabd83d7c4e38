"""One batch of one step: the unit of work. `run_batch` calls the `run_step` hook for a
batch of items and returns what came back, in memory; it writes nothing and reads no
run-wide state, so a distributed executor can ship a `StepRun` to a worker, call it
there, and hand the results back to the one process that writes the run directory."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from studio.errors import UserError
from studio.execute import interrupts
from studio.execute.records import ItemRun, StepRun
from studio.execute.runtime import is_out_of_memory


class BatchOutOfMemory(Exception):
    """A batch of several items ran out of device memory: run it again smaller. The
    allocator's error is the `__cause__`."""


@dataclass
class BatchResult:
    """What became of some items of a batch: their outputs (one dict of port -> value
    per item, in order) or the exception that failed them all."""

    items: list[ItemRun]
    outputs: list[dict[str, Any]] | None = None
    error: Exception | None = None
    seconds: float = 0.0  # per item

    @property
    def ok(self) -> bool:
        return self.error is None


def run_batch(run: StepRun, run_step: Callable[..., Any]) -> list[BatchResult]:
    """Make `run.items` with `run_step(step=run)` (the hook). A failure fails the whole
    batch, except a UserError in a batch of several: one item's input is wrong, but which
    one is unknown, so each item runs again alone and the others are still made. Raises
    BatchOutOfMemory for a batch of several that did not fit."""
    began = time.perf_counter()
    interrupts_before = interrupts.received()
    failure: Exception | None = None
    try:
        outputs = run_step(step=run)
        if outputs is None or len(outputs) != len(run.items):
            raise RuntimeError(f"run_step returned {0 if outputs is None else len(outputs)} results "
                               f"for {len(run.items)} items")
    except Exception as exc:  # a generator's bug is reported; the run goes on
        if interrupts.received() != interrupts_before:  # Ctrl-C, caught and re-raised as something else
            raise KeyboardInterrupt from exc
        if len(run.items) > 1 and is_out_of_memory(exc):
            raise BatchOutOfMemory() from exc
        failure = exc
    if failure is not None:
        if len(run.items) > 1 and isinstance(failure, UserError):
            del failure  # its traceback holds the batch's tensors: free them before going on
            return [result for item in run.items for result in run_batch(replace(run, items=[item]), run_step)]
        return [BatchResult(run.items, error=failure)]
    return [BatchResult(run.items, outputs=list(outputs), seconds=(time.perf_counter() - began) / len(run.items))]
