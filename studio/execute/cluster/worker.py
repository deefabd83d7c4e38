"""The Ray worker actor and the messages it trades with the driver.

A `Worker` loads the plugins once and keeps one runtime, whose model cache lives as long
as the actor does, across batches, steps and runs. The driver sends it a `Job` (one
batch of one step: the items, their resolved parameters, input files by content in
Ray's object store); it calls `studio.execute.batch.run_batch` and answers `Done`: each `Part`
of the batch with its outputs or its error (its traceback as text), or the
out-of-memory error that asks the driver for a smaller batch."""

from __future__ import annotations

import os
import pickle
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import UserError
from studio.execute.batch import BatchOutOfMemory, run_batch
from studio.execute.records import ItemRun, StepRun
from studio.execute.runtime import ModelBudget, Runtime
from studio.generator import Artifact, StepContext
from studio.pipeline.plan import PlanItem
from studio.version import __version__


def versions(registry: Any) -> dict[str, Any]:
    """What must be the same on the driver and every worker."""
    return {"studio": __version__,
            "plugins": {n: p.version for n, p in sorted(registry.plugins.items()) if p.ok}}


@dataclass
class Job:
    """One batch of one step, as a worker receives it."""

    step_id: str
    uses: str
    plugin: str
    precision: str
    compile: bool
    items: list[PlanItem]
    values: list[dict[str, Any]]  # each item's resolved parameters (Artifacts point at the driver's files)
    blobs: dict[str, Any]  # sha256 -> ObjectRef of an input file's bytes
    submitted: float = 0.0


@dataclass
class Part:
    """What became of some of a job's items (by index): outputs or one error."""

    indexes: list[int]
    outputs: list[dict[str, Any]] | None
    error: BaseException | None
    seconds: float
    notes: list[dict[str, Any]]


@dataclass
class Done:
    """A job's answer: its parts, or the out-of-memory error that asks for a smaller
    batch; and who made it, when."""

    parts: list[Part]
    out_of_memory: str | None
    identity: dict[str, Any]
    started: float
    ended: float


class Worker:
    """A Ray actor: the plugins loaded once, and one runtime whose model cache lives as
    long as the actor does, across batches and steps."""

    def __init__(self, recipe: dict[str, Any], device: str, precision: str, budget: ModelBudget, threads: int,
                 keep_s: float = 0.0):
        import sys
        import warnings

        import ray

        # as many CPU threads as a local run on the driver uses: torch's CPU kernels may sum
        # in another order with another thread count, and the outputs must be the same bytes
        # (Ray starts workers with OMP_NUM_THREADS=1; torch reads it when first imported)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        # several workers share a node's cores: threads waiting for work sleep instead of
        # spinning (spinning made a full node 10x slower); the sums are the same
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)

        from studio.host.plugins import Host

        with warnings.catch_warnings():  # a broken plugin is reported by the driver's own host
            warnings.simplefilter("ignore")
            self.host = Host.load(**recipe)
        self.runtime = Runtime(device, precision, budget)
        self.generators: dict[str, Any] = {}
        context = ray.get_runtime_context()
        self.identity = {"node": context.get_node_id(), "worker": context.get_actor_id(), "pid": os.getpid(),
                         "versions": versions(self.host.registry)}
        self.last_used = time.monotonic()
        self.keep_s = keep_s
        if keep_s > 0:
            threading.Thread(target=self._retire_when_idle, daemon=True).start()

    def run(self, job: Job) -> Done:
        """Make one batch: its input files written to a folder of their own for the
        batch's time, the generator called through run_batch."""
        import shutil

        self.last_used = time.monotonic()
        started = time.time()
        inputs = Path(tempfile.mkdtemp(prefix="studio-inputs-"))
        try:
            return self._run(job, started, inputs)
        finally:
            shutil.rmtree(inputs, ignore_errors=True)
            self.last_used = time.monotonic()

    def ping(self) -> bool:
        """Answers at once when idle (calls to an actor run one at a time)."""
        return True

    def keep(self, seconds: float) -> None:
        """Wait this long, idle, from now on: the latest run that took this worker sets it."""
        self.keep_s = seconds

    def retire(self, idle_since: float) -> None:
        """Stop this worker for good, unless a batch came since the timer asked."""
        if self.last_used == idle_since:
            import ray

            # a batch sent in the meantime fails as "killed by ray.kill" and the driver
            # sends it to a new worker (RayScheduler.receive)
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _retire_when_idle(self) -> None:
        """A timer thread: after `keep_s` without a batch, ask this actor (through its own
        queue, so never in the middle of a batch) to retire."""
        import ray

        me = ray.get_runtime_context().current_actor
        asked = None
        while True:
            time.sleep(min(self.keep_s, 1.0))
            idle_since = self.last_used
            if idle_since != asked and time.monotonic() - idle_since >= self.keep_s:
                me.retire.remote(idle_since)
                asked = idle_since

    def _run(self, job: Job, started: float, inputs: Path) -> Done:
        gen = self.generators.get(job.uses) or self.generators.setdefault(
            job.uses, self.host.registry.generator(job.uses)())
        items = []
        for plan_item, values in zip(job.items, job.values):
            ctx = StepContext(step_id=job.step_id, item_name=plan_item.name, seed=plan_item.seed,
                              runtime=self.runtime, precision=job.precision, labels=plan_item.labels,
                              compile=job.compile)
            params = gen.Params.model_construct(**{k: self._local(v, job.blobs, inputs) for k, v in values.items()})
            items.append(ItemRun(plan_item, params, ctx, Path("."), ""))
        run = StepRun(job.step_id, job.uses, job.plugin, gen, self.runtime, job.precision, items)
        try:
            results = run_batch(run, self.host.hooks.run_step)
        except BatchOutOfMemory as exc:
            return Done([], str(exc.__cause__), self.identity, started, time.time())
        position = {id(item): i for i, item in enumerate(items)}
        parts = [Part([position[id(i)] for i in r.items], r.outputs, _portable(r.error), r.seconds,
                      [dict(i.ctx.notes) for i in r.items]) for r in results]
        return Done(parts, None, self.identity, started, time.time())

    def _local(self, value: Any, blobs: dict[str, Any], inputs: Path) -> Any:
        """An input Artifact made a file on this machine (written once per content)."""
        if isinstance(value, list):
            return [self._local(v, blobs, inputs) for v in value]
        if not isinstance(value, Artifact) or value.sha256 not in blobs:
            return value
        import ray

        path = inputs / f"{value.sha256}{value.path.suffix}"
        if not path.exists():
            partial = path.with_name(path.name + f".{os.getpid()}.partial")
            partial.write_bytes(ray.get(blobs[value.sha256]))
            os.replace(partial, path)
        return value.model_copy(update={"path": path})


def _portable(error: BaseException | None) -> BaseException | None:
    """An exception that survives the trip to the driver, its traceback as text."""
    if error is None:
        return None
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # an exception holding something that does not pickle
        kind = UserError if isinstance(error, UserError) else RuntimeError
        error = kind(f"{type(error).__name__}: {error}")
    error.remote_traceback = text
    return error
