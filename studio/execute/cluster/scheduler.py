"""The Ray scheduler: a run's batches made on pooled Ray worker actors.

The executor (studio.execute.executor) does everything a local run does except calling the
generators: inputs, the step cache, every file, the journal and the manifest. This
scheduler decides what runs next and where: a step starts as soon as the steps it reads
from have finished; independent steps and the batches of a step run at the same time,
on as many workers as the cluster has room for (see studio.execute.cluster.pools). A batch that
runs out of memory is split in two, as locally; a worker that dies mid-batch is restarted
and the batch retried by Ray, and a batch sent to a worker that just retired is sent
again. Each batch's results go back to the executor through `Driver.record`."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from studio.errors import ClusterError, clip
from studio.execute.batch import BatchResult
from studio.execute.cluster.address import connect, import_ray, resources_text
from studio.execute.cluster.output import OUTPUT, hold_ray_output, release_ray_output, session_logs, write_ray_log
from studio.execute.cluster.pools import KEEP_WORKERS_S, RETRIES, Slot, WorkerPools, WorkerSetup
from studio.execute.cluster.runtime import ClusterRuntime
from studio.execute.cluster.worker import Done, Job, versions
from studio.execute.executor import Executor
from studio.execute.records import ItemRun
from studio.execute.runtime import ModelBudget, Runtime
from studio.execute.scheduling import Driver, StepWork
from studio.generator import Artifact
from studio.pipeline.plan import PlanStep


@dataclass
class Batch:
    work: StepWork
    items: list[ItemRun]
    resent: int = 0  # times sent again because its worker had retired


@dataclass
class Flight:
    batch: Batch
    slot: Slot
    submitted: float

    @property
    def work(self) -> StepWork:
        return self.batch.work

    @property
    def items(self) -> list[ItemRun]:
        return self.batch.items


class RayScheduler:
    """Batches made on a Ray cluster: `address` names it (else RAY_ADDRESS, else a local
    one), `recipe` is how a worker loads the plugins, `keep_workers` how long workers wait,
    idle, for the next run (0: stopped at the run's end)."""

    def __init__(self, registry: Any, *, recipe: dict[str, Any], address: str | None = None,
                 budget: ModelBudget | None = None, keep_workers: float = KEEP_WORKERS_S):
        self.recipe = recipe
        self.address = address
        self.budget = budget or ModelBudget()
        self.keep_workers = keep_workers
        self.cluster: dict[str, float] = {}
        self.expected = versions(registry)
        self._blobs: dict[str, Any] = {}

    def start(self, runtime: Runtime | None, spec: Any) -> Runtime:
        self.cluster = connect(self.address)  # an unreachable cluster fails before anything is written
        import torch

        self.threads = torch.get_num_threads()  # what a local run here would use (see Worker)
        if runtime is None or not isinstance(runtime, ClusterRuntime):
            given = runtime
            runtime = ClusterRuntime(given.requested_device if given else spec.device,
                                     given.requested_precision if given else spec.precision,
                                     given.budget if given else self.budget, self.cluster)
        hold_ray_output(import_ray())  # Ray's messages during the run go to RUN/ray.log, not the terminal
        OUTPUT.take()  # what came before this run is not this run's
        return runtime

    def describe(self) -> dict[str, Any]:
        ray = import_ray()
        info = {"name": "ray", "address": ray.get_runtime_context().gcs_address,
                "resources": self.cluster, "versions": self.expected}
        logs = session_logs(ray)
        if logs:  # the raylet's and workers' logs; Ray's messages to the driver: RUN/ray.log
            info["logs"] = logs
        return info

    def finish(self, run_dir: Path | None) -> None:
        lines = OUTPUT.take()
        release_ray_output()
        if run_dir is not None:
            write_ray_log(run_dir, lines)

    def run_steps(self, driver: Driver) -> None:
        ray = import_ray()
        cpus = int(self.cluster.get("CPU", 0))
        made = WorkerSetup(self.recipe, driver.runtime.budget, self.threads, self.keep_workers, self.expected)
        self.pools = WorkerPools(ray, {"cpu": max(1, cpus), "gpu": int(self.cluster.get("GPU", 0))}, made)
        self.pools.adopt(ray)
        try:
            self._make_steps(driver, ray)
        finally:
            self.pools.close()

    def _make_steps(self, driver: Driver, ray: Any) -> None:
        """Start each step once the steps it reads from are done, keep the workers busy,
        record each batch as it comes back."""
        step_of = {item.name: step.id for step in driver.plan.steps for item in step.items}
        upstream = {step.id: {step_of[d] for item in step.items for d in item.deps} - {step.id}
                    for step in driver.plan.steps}
        waiting: list[PlanStep] = list(driver.plan.steps)
        finished: set[str] = set()
        open_batches: dict[str, int] = {}  # step -> its batches queued or in flight
        queue: deque[Batch] = deque()
        inflight: dict[Any, Flight] = {}  # the job's reference -> the batch and its worker

        def step_done(step_id: str) -> None:
            finished.add(step_id)
            driver.step_done(step_id)

        while waiting or queue or inflight:
            for step in [s for s in waiting if upstream[s.id] <= finished]:
                waiting.remove(step)
                open_batches[step.id] = self._queue_step(driver, step, queue)
                if not open_batches[step.id]:
                    step_done(step.id)
            self._dispatch(driver, queue, inflight)
            if not inflight:
                if queue:
                    raise ClusterError(f"the Ray cluster has no room for a worker (resources: "
                                       f"{resources_text(self.cluster)})")
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1)
            flight = inflight.pop(ready[0])
            flight.slot.busy = False
            step_id = flight.work.step.id
            open_batches[step_id] += self.receive(driver, ray, ready[0], flight, queue) - 1
            if open_batches[step_id] == 0:
                step_done(step_id)

    @staticmethod
    def _queue_step(driver: Driver, step: PlanStep, queue: deque[Batch]) -> int:
        """Start a step and queue its cache misses in batches; how many."""
        work = driver.start_step(step)
        size = work.batch_size
        batches = [work.todo[i:i + size] for i in range(0, len(work.todo), size)]
        queue.extend(Batch(work, batch) for batch in batches)
        return len(batches)

    def _dispatch(self, driver: Driver, queue: deque[Batch], inflight: dict[Any, Flight]) -> None:
        """Send queued batches, in order, while there are idle workers for them."""
        while queue:
            batch = queue[0]
            gen, precision = batch.work.template.generator, batch.work.template.precision
            kind = "gpu" if gen.uses_device and driver.runtime.device == "cuda" else "cpu"
            slot = self.pools.idle_slot(gen.name, precision, kind)
            if slot is None:
                return  # every worker is busy: wait for one
            queue.popleft()
            slot.busy = True
            submitted = time.time()
            job = self._job(batch.work, batch.items, submitted)
            inflight[slot.actor.run.remote(job)] = Flight(batch, slot, submitted)

    def _job(self, work: StepWork, items: list[ItemRun], submitted: float) -> Job:
        """The batch as a worker gets it; each input file put in the object store once
        per run, however many batches read it."""
        values, blobs = [], {}
        for item_run in items:
            params = item_run.params
            values.append({k: getattr(params, k) for k in type(params).model_fields})
            for value in values[-1].values():
                for artifact in value if isinstance(value, list) else [value]:
                    if isinstance(artifact, Artifact):
                        if artifact.sha256 not in self._blobs:
                            self._blobs[artifact.sha256] = import_ray().put(artifact.path.read_bytes())
                        blobs[artifact.sha256] = self._blobs[artifact.sha256]
        step = work.step
        return Job(step.id, step.uses, work.template.plugin, work.template.precision,
                   bool(step.compile and work.template.generator.uses_device),
                   [i.item for i in items], values, blobs, submitted)

    def receive(self, driver: Driver, ray: Any, ref: Any, flight: Flight, queue: deque[Batch]) -> int:
        """Record a finished job; the number of batches it leaves queued (2 when it ran
        out of memory and was split, 1 when it is sent again, else 0)."""
        run = flight.work.run(flight.items)
        try:
            done: Done = ray.get(ref)
        except ray.exceptions.RayError as exc:
            return self._lost(driver, ray, exc, flight, queue)
        if done.identity["versions"] != self.expected:
            raise ClusterError(_version_message(done.identity, self.expected))
        if done.out_of_memory is not None:
            if len(flight.items) == 1:  # alone and still too big: a failure, as locally
                error = RuntimeError(done.out_of_memory)
                driver.record(run, BatchResult(flight.items, error=error))
                return 0
            half = len(flight.items) // 2
            driver.batch_shrunk(flight.work.step.id, len(flight.items), half, done.out_of_memory)
            queue.appendleft(Batch(flight.work, flight.items[half:]))
            queue.appendleft(Batch(flight.work, flight.items[:half]))
            return 2
        for part in done.parts:
            items = [flight.items[i] for i in part.indexes]
            for item_run, notes in zip(items, part.notes):
                item_run.ctx.notes.update(notes)
                driver.results[item_run.item.name].worker = {
                    "node": done.identity["node"], "worker": done.identity["worker"], "pid": done.identity["pid"],
                    "queue_s": round(done.started - flight.submitted, 4),
                    "run_s": round(done.ended - done.started, 4)}
            driver.record(replace(run, items=items),
                          BatchResult(items, outputs=part.outputs, error=part.error, seconds=part.seconds))
        return 0

    def _lost(self, driver: Driver, ray: Any, exc: Exception, flight: Flight, queue: deque[Batch]) -> int:
        """A job whose worker is gone: sent again when the worker had just retired (1),
        else its items failed (0)."""
        if isinstance(exc, ray.exceptions.RayActorError):
            self.pools.drop(flight.slot)  # never send it another batch
            if "ray.kill" in str(exc) and flight.batch.resent < RETRIES:
                # the worker retired (idle too long) just as the batch was sent
                queue.appendleft(replace(flight.batch, resent=flight.batch.resent + 1))
                return 1
        # the worker died more often than Ray retries
        result = BatchResult(flight.items, error=ClusterError(
            f"the Ray worker running it died {RETRIES + 1} times ({clip(str(exc).splitlines()[0], 200)})"))
        driver.record(flight.work.run(flight.items), result)
        return 0


class RayExecutor(Executor):
    """The executor with its batches made on a Ray cluster: `Executor` given a
    `RayScheduler` (the keyword arguments are RayScheduler's, then Executor's)."""

    def __init__(self, registry: Any, hooks: Any, plan: Any, *, recipe: dict[str, Any],
                 address: str | None = None, budget: ModelBudget | None = None,
                 keep_workers: float = KEEP_WORKERS_S, **kwargs: Any):
        scheduler = RayScheduler(registry, recipe=recipe, address=address, budget=budget,
                                 keep_workers=keep_workers)
        super().__init__(registry, hooks, plan, scheduler=scheduler, **kwargs)


def _version_message(identity: dict[str, Any], expected: dict[str, Any]) -> str:
    got = identity["versions"]
    differences = []
    if got["studio"] != expected["studio"]:
        differences.append(f"studio {got['studio']} (the driver has {expected['studio']})")
    for name in sorted(set(got["plugins"]) | set(expected["plugins"])):
        theirs, ours = got["plugins"].get(name, "missing"), expected["plugins"].get(name, "missing")
        if theirs != ours:
            differences.append(f"plugin {name} {theirs} (the driver has {ours})")
    return (f"Ray node {identity['node'][:12]} runs other versions than the driver: {'; '.join(differences)}. "
            "Install the same Studio and plugins on every node (see docs/scale-out.md)")
