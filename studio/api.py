"""The Python API the CLI is built on: load, validate, plan, run. Its keyword arguments
become the two option objects of studio.pipeline.options, as the command line's flags do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from studio.errors import PipelineError
from studio.execute.events import Sink
from studio.execute.executor import Executor, RunResult
from studio.execute.runtime import Runtime
from studio.host.plugins import Host, default_host
from studio.pipeline.options import PipelineOptions, RunOptions
from studio.pipeline.plan import Plan, build_plan
from studio.pipeline.spec import PipelineSpec
from studio.pipeline.validate import check_pipeline


@dataclass
class Pipeline:
    """A checked pipeline, ready to run: its spec, the plugins it runs with, and the plan
    validation built (None: built when first asked for)."""

    spec: PipelineSpec
    host: Host
    checked_plan: Plan | None = None

    def plan(self) -> Plan:
        if self.checked_plan is None:
            self.checked_plan = build_plan(self.spec, self.host.registry)
        return self.checked_plan

    def run(self, *, out: str | Path = "runs", use_cache: bool = True, events: Sink | None = None,
            runtime: Runtime | None = None, executor: str | None = None, ray_address: str | None = None,
            keep_workers: float | None = None) -> RunResult:
        """Run the pipeline. `executor` ("local" or "ray") overrides the pipeline's
        `executor:`; `ray_address` names the cluster (else RAY_ADDRESS, else a local one);
        `keep_workers`: seconds the cluster's workers wait, idle, for the next run (0: stop
        them when this run ends; default 300)."""
        return self.run_with(RunOptions(out=Path(out), use_cache=use_cache, events=events, runtime=runtime,
                                        executor=executor, ray_address=ray_address, keep_workers=keep_workers))

    def run_with(self, options: RunOptions) -> RunResult:
        """Run the plan with `options` (studio.pipeline.options.RunOptions)."""
        runtime = options.runtime
        if runtime is None and options.memory is not None:
            runtime = Runtime(self.spec.device, self.spec.precision, options.memory)
        executor_options = {"out": options.out, "use_cache": options.use_cache, "events": options.events,
                            "runtime": runtime}
        if (options.executor or self.spec.executor) == "ray":
            from studio.execute.cluster import RayExecutor

            if options.keep_workers is not None:
                executor_options["keep_workers"] = options.keep_workers
            return RayExecutor(self.host.registry, self.host.hooks, self.plan(), recipe=self.host.recipe,
                               address=options.ray_address, **executor_options).run()
        return Executor(self.host.registry, self.host.hooks, self.plan(), **executor_options).run()


def load_with(path: str | Path, options: PipelineOptions, host: Host | None = None) -> Pipeline:
    """Read and validate a pipeline with `options` (studio.pipeline.options.PipelineOptions) over
    it. Raises PipelineError listing every problem."""
    host = host or default_host()
    checked = check_pipeline(path, host.registry, options)
    return Pipeline(checked.spec, host, checked.plan)


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
    options = PipelineOptions(overrides=tuple(overrides), seed=seed, device=device, precision=precision,
                              compile=compile, base_dir=None if base_dir is None else Path(base_dir))
    return load_with(path, options, host)


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
