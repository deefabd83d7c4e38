"""The seam between the executor and what makes its batches.

The executor (studio.execute.executor) owns a run: the run folder, the inputs, the step cache,
the writers, the journal and the manifest. A `Scheduler` makes two decisions for it:
what to run next (which step, which batch), and where a batch runs and how its results
come back. `LocalScheduler` runs every step in plan order in this process;
`studio.execute.cluster.RayScheduler` runs independent steps at once on pooled Ray workers.

A scheduler sees the executor only as a `Driver`: the public methods below. It asks
the driver to start a step (which resolves inputs and restores cached items, leaving
the cache misses), makes the misses in batches, and hands each batch's results back to
`Driver.record`, so writing, the cache and the failure policy stay one code path."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from studio.execute.batch import BatchOutOfMemory, BatchResult, run_batch
from studio.execute.records import ItemResult, ItemRun, RunStats, StepRun
from studio.execute.runtime import Runtime, free_memory

if TYPE_CHECKING:
    from studio.pipeline.plan import Plan, PlanStep
    from studio.pipeline.spec import PipelineSpec


@dataclass
class StepWork:
    """A started step: the items left to make (cache misses) and how to batch them."""

    step: PlanStep
    template: StepRun  # the step's generator, plugin, runtime and precision, no items
    todo: list[ItemRun]
    batch_size: int

    def run(self, items: list[ItemRun]) -> StepRun:
        return replace(self.template, items=items)


class Driver(Protocol):
    """What the executor offers a scheduler."""

    plan: Plan
    hooks: Any  # the plugins' hooks: `hooks.run_step(step=...)` makes a batch
    runtime: Runtime
    stats: RunStats
    results: dict[str, ItemResult]  # by item name; a scheduler may add `worker` (who made it)

    def start_step(self, step: PlanStep) -> StepWork:
        """Announce a step, skip the items whose upstream failed, restore the cached
        ones; the rest, to make."""

    def record(self, run: StepRun, result: BatchResult) -> None:
        """Write (or fail) the items of `run` with what their batch gave."""

    def batch_shrunk(self, step_id: str, tried: int, now: int, error: str) -> None:
        """A batch of `tried` items ran out of memory: the step goes on `now` at a time."""

    def step_done(self, step_id: str) -> None:
        """Every item of the step is recorded."""


class Scheduler(Protocol):
    """What to run next and where: the part of a run that differs between executors."""

    def start(self, runtime: Runtime | None, spec: PipelineSpec) -> Runtime:
        """Before anything is written: join what will run the batches; the runtime the
        run plans for (the given one, or one made for the pipeline's device)."""

    def describe(self) -> dict[str, Any]:
        """What runs the generators, for the manifest's `executor`."""

    def run_steps(self, driver: Driver) -> None:
        """Make every step of `driver.plan`, recording each batch with the driver."""

    def finish(self, run_dir: Path | None) -> None:
        """The run has ended (`run_dir` is None when it stopped before having a folder):
        let go of what `start` took."""


class LocalScheduler:
    """Every step in plan order, each to its end before the next starts; its batches
    made in this process, the batch halved for the rest of the step when one runs out
    of the device's memory."""

    def start(self, runtime: Runtime | None, spec: PipelineSpec) -> Runtime:
        return runtime if runtime is not None else Runtime(spec.device, spec.precision)

    def describe(self) -> dict[str, Any]:
        return {"name": "local"}

    def run_steps(self, driver: Driver) -> None:
        for step in driver.plan.steps:
            self.run_step(driver, step)

    def finish(self, run_dir: Path | None) -> None:
        pass

    def run_step(self, driver: Driver, step: PlanStep) -> None:
        work = driver.start_step(step)
        size = work.batch_size
        start = 0
        while start < len(work.todo):
            batch = work.todo[start:start + size]
            began = time.perf_counter()
            try:
                self.run_batch(driver, work.run(batch))
            except BatchOutOfMemory as exc:
                error = str(exc.__cause__)
            else:
                if step.compile and start == 0:  # compiling happens on the first call: say what it cost
                    driver.stats.first_batch_s[step.id] = round(time.perf_counter() - began, 3)
                start += len(batch)
                continue
            # the device's memory is the budget: halve the batch for the rest of the step. (Out
            # of the except clause, so the failed batch's tensors, held by its traceback, are freed.)
            size = max(1, len(batch) // 2)
            free_memory()
            driver.batch_shrunk(step.id, len(batch), size, error)
        driver.step_done(step.id)

    @staticmethod
    def run_batch(driver: Driver, run: StepRun) -> None:
        """Make one batch here and record each item: saved, or failed with its kind."""
        for result in run_batch(run, driver.hooks.run_step):
            driver.record(replace(run, items=result.items), result)
