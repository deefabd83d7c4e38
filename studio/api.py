"""The Python API the CLI is built on: load, validate, plan, run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from studio.errors import PipelineError
from studio.events import Sink
from studio.executor import Executor, RunResult
from studio.plan import Plan, build_plan
from studio.plugins import Host, default_host
from studio.runtime import Runtime
from studio.spec import PipelineSpec
from studio.validate import load_spec

@dataclass
class Pipeline:
    spec: PipelineSpec
    host: Host

    def plan(self) -> Plan:
        return build_plan(self.spec, self.host.registry)

    def run(self, *, out: str | Path = "runs", use_cache: bool = True, events: Sink | None = None,
            runtime: Runtime | None = None, executor: str | None = None, ray_address: str | None = None,
            keep_workers: float | None = None) -> RunResult:
        """Run the pipeline. `executor` ("local" or "ray") overrides the pipeline's
        `executor:`; `ray_address` names the cluster (else RAY_ADDRESS, else a local one);
        `keep_workers`: seconds the cluster's workers wait, idle, for the next run (0: stop
        them when this run ends; default 300)."""
        options = dict(out=Path(out), use_cache=use_cache, events=events, runtime=runtime)
        if (executor or self.spec.executor) == "ray":
            from studio.cluster import RayExecutor

            if keep_workers is not None:
                options["keep_workers"] = keep_workers
            return RayExecutor(self.host.registry, self.host.hooks, self.plan(), recipe=self.host.recipe,
                               address=ray_address, **options).run()
        return Executor(self.host.registry, self.host.hooks, self.plan(), **options).run()


def load(
    path: str | Path,
    *,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    host: Host | None = None,
    base_dir: str | Path | None = None,
) -> Pipeline:
    """Read and validate a pipeline. Raises PipelineError listing every problem.
    `overrides` are "STEP.PARAM=VALUE" strings, as `--set` takes them; `base_dir` is
    where relative input files are (default: the pipeline file's folder)."""
    host = host or default_host()
    spec = load_spec(path, host.registry, overrides=list(overrides), seed=seed, device=device, precision=precision,
                     compile=compile, base_dir=None if base_dir is None else Path(base_dir))
    return Pipeline(spec, host)


def validate(path: str | Path, *, host: Host | None = None) -> list:
    """The list of problems in a pipeline file (empty when it is valid)."""
    try:
        load(path, host=host)
    except PipelineError as exc:
        return exc.issues
    return []


def plan(path: str | Path, **kwargs) -> Plan:
    return load(path, **kwargs).plan()


def run(
    path: str | Path,
    *,
    out: str | Path = "runs",
    overrides: Iterable[str] = (),
    seed: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    use_cache: bool = True,
    events: Sink | None = None,
    host: Host | None = None,
    runtime: Runtime | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    keep_workers: float | None = None,
    base_dir: str | Path | None = None,
) -> RunResult:
    """Validate and run a pipeline; returns the run with its artifacts. A failed item
    does not raise: check `result.status` and `result.failed`."""
    pipeline = load(path, overrides=overrides, seed=seed, device=device, precision=precision, host=host,
                    base_dir=base_dir)
    return pipeline.run(out=out, use_cache=use_cache, events=events, runtime=runtime, executor=executor,
                        ray_address=ray_address, keep_workers=keep_workers)
