"""The records of a run: what the executor hands a generator (a step's batch of items)
and what it keeps of each item and of the whole run. Data only, so that the executor,
the manifest, the gallery and the hooks can share them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.execute.runtime import Runtime
from studio.generator import Artifact, Generator, Params, StepContext
from studio.pipeline.plan import PlanItem


@dataclass
class ItemRun:
    """One item handed to a generator."""

    item: PlanItem
    params: Params
    ctx: StepContext
    dir: Path
    cache_key: str


@dataclass
class StepRun:
    """What the `run_step` hook receives: a step's generator and the items to make
    (one, or a batch of sweep items)."""

    step_id: str
    uses: str
    plugin: str
    generator: Generator
    runtime: Runtime
    precision: str
    items: list[ItemRun]


@dataclass
class ItemResult:
    name: str
    step_id: str
    dir: str
    labels: dict[str, Any]
    seed: int
    status: str = "pending"  # pending | done | cached | failed | skipped | interrupted
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None
    error_kind: str | None = None  # for a failed item: user | environment | generator
    cache_key: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # what the generator recorded
    worker: dict[str, Any] | None = None  # on a cluster: the node and worker that made it, queue wait, run time

    @property
    def ok(self) -> bool:
        return self.status in ("done", "cached")


@dataclass
class RunResult:
    """A finished (or failed, or interrupted) run, as the Python API returns it."""

    run_dir: Path
    status: str
    items: dict[str, ItemResult]
    manifest_path: Path
    error: str | None = None  # what stopped the run or kept it from recording itself (a full disk)
    warnings: list[str] = field(default_factory=list)  # e.g. the step cache could not be written

    def step(self, step_id: str) -> list[ItemResult]:
        return [r for r in self.items.values() if r.step_id == step_id]

    def artifacts(self, step_id: str | None = None) -> list[Artifact]:
        return [a for r in self.items.values() if step_id in (None, r.step_id) for a in r.artifacts.values()]

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.items.values() if r.status == "failed"]


@dataclass
class RunStats:
    """How the run went, beyond its items: batches that ran out of memory and the time
    of compiled steps' first batches. In the manifest's `runtime` section."""

    batch_shrunk: dict[str, int] = field(default_factory=dict)  # step -> the batch size it fell back to
    first_batch_s: dict[str, float] = field(default_factory=dict)  # step -> seconds, compiling included

    def describe(self, runtime: Runtime) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.batch_shrunk:
            out["batch_size_after_out_of_memory"] = self.batch_shrunk
        if self.first_batch_s:
            out["compile"] = {"modules": runtime.compiled, "first_batch_s (includes compiling)": self.first_batch_s}
        return out
