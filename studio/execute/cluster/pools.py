"""The Ray worker actors a run uses, pooled by (generator, precision, kind) within the
cluster's CPUs and GPUs.

A pool grows while there is room, and an idle worker of another pool makes room when
there is none. Workers outlive the run that started them (Ray "detached" actors, named in
the `studio` namespace after what they were made for), so the next run on the same
cluster finds its models loaded: `adopt` takes over the idle ones made the same way and
stops idle ones of another setup (other versions, plugins, thread count or memory
budget), which only hold CPUs and GPUs. A worker idle for `keep_workers` seconds stops
itself."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from studio.execute.cluster.worker import Worker
from studio.execute.runtime import ModelBudget

RETRIES = 3  # a worker that dies mid-batch is restarted and the batch run again, this often
KEEP_WORKERS_S = 300.0  # how long a worker waits, idle, for the next run's batches
NAMESPACE = "studio"  # the Ray namespace the named workers live in
PING_S = 0.5  # a worker that does not answer this fast is busy (in another run)


@dataclass
class Slot:
    actor: Any
    kind: str  # "cpu" or "gpu"
    busy: bool = False
    adopted: bool = False  # left by an earlier run, not started by this one


@dataclass
class WorkerSetup:
    """How this run's workers are made: what `Worker` is given."""

    recipe: dict[str, Any]  # how a worker loads the plugins (studio.host.plugins.Host.load's arguments)
    budget: ModelBudget
    threads: int  # CPU threads, as a local run on the driver uses
    keep_workers: float  # seconds a worker waits, idle, for the next run (0: stopped at the run's end)
    expected: dict[str, Any]  # the driver's versions (see worker.versions)


@dataclass
class WorkerPools:
    """Worker actors by (generator, precision, kind), within `capacity` ("cpu", "gpu")."""

    ray: Any
    capacity: dict[str, int]
    made: WorkerSetup
    by_key: dict[tuple, list[Slot]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.setup = setup_id(self.made.expected, self.made.recipe, self.made.threads, self.made.budget)

    def count(self, kind: str) -> int:
        return sum(1 for pool in self.by_key.values() for s in pool if s.kind == kind)

    def all(self) -> list[Slot]:
        return [s for pool in self.by_key.values() for s in pool]

    def drop(self, slot: Slot) -> None:
        for pool in self.by_key.values():
            if slot in pool:
                pool.remove(slot)

    def idle_slot(self, generator: str, precision: str, kind: str) -> Slot | None:
        """An idle worker for this generator and precision, started if need be; None
        when every worker of `kind` is busy and there is no room for another."""
        pool = self.by_key.setdefault((generator, precision, kind), [])
        for slot in pool:
            if not slot.busy:
                return slot
        if self.count(kind) >= self.capacity[kind]:
            idle = next((s for s in self.all() if not s.busy and s.kind == kind), None)
            if idle is None:
                return None
            self.ray.kill(idle.actor)  # an idle worker of another generator makes room
            self.drop(idle)
        slot = Slot(self._new_actor(kind, precision, generator), kind)
        pool.append(slot)
        return slot

    def adopt(self, ray: Any) -> None:
        """Take over the idle workers earlier runs of this same setup left on the cluster
        (their models still loaded), and stop idle ones of other setups, which only hold
        CPUs and GPUs now. A worker that does not answer at once is busy in another run
        and left alone."""
        found = {}  # the ping's reference -> (name, actor)
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != NAMESPACE or not name.startswith("worker/"):
                continue
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # it has just stopped
                continue
            found[actor.ping.remote()] = (name, actor)
        if not found:
            return
        answered, _ = ray.wait(list(found), num_returns=len(found), timeout=PING_S)
        for ref in answered:
            name, actor = found[ref]
            try:
                ray.get(ref)
            except ray.exceptions.RayError:  # it stopped since it answered
                continue
            _, setup, kind, precision, _, generator = name.split("/", 5)
            if setup != self.setup:
                ray.kill(actor)
            elif self.count(kind) < self.capacity.get(kind, 0):
                self.by_key.setdefault((generator, precision, kind), []).append(Slot(actor, kind, adopted=True))
                if self.made.keep_workers > 0:
                    actor.keep.remote(self.made.keep_workers)

    def close(self) -> None:
        """The run is over: stop the workers it started unless they are kept for the
        next run (adopted ones keep the time the run that started them gave)."""
        if self.made.keep_workers <= 0:
            for slot in self.all():
                if not slot.adopted:
                    self.ray.kill(slot.actor)
        self.by_key.clear()

    def _new_actor(self, kind: str, precision: str, generator: str) -> Any:
        made = self.made
        # a GPU worker asks for its GPU only: CPUs held by (idle) CPU workers must never keep
        # it from starting, and the GPU count alone bounds the GPU workers
        options: dict[str, Any] = {"num_cpus": 0 if kind == "gpu" else 1, "num_gpus": 1 if kind == "gpu" else 0,
                                   "max_restarts": RETRIES, "max_task_retries": RETRIES}
        if made.keep_workers > 0:  # found again by name by the next run (see adopt)
            options.update(lifetime="detached", namespace=NAMESPACE,
                           name=f"worker/{self.setup}/{kind}/{precision}/{uuid.uuid4().hex[:12]}/{generator}")
        device = "cuda" if kind == "gpu" else "cpu"
        return self.ray.remote(Worker).options(**options).remote(made.recipe, device, precision, made.budget,
                                                                  made.threads, made.keep_workers)


def setup_id(expected: dict[str, Any], recipe: dict[str, Any], threads: int, budget: ModelBudget) -> str:
    """What a worker was made with, as a short hash in its name: a later run reuses only
    workers made the same way (same versions, plugins, thread count and memory budget)."""
    extra = [[name, getattr(obj, "__name__", None) or f"{type(obj).__module__}.{type(obj).__qualname__}"]
             for name, obj in recipe.get("extra", ())]
    described = {"versions": expected, "entry_points": recipe.get("entry_points_group"), "extra": extra,
                 "env": recipe.get("env", {}), "threads": threads, "budget": [budget.cpu, budget.gpu]}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
