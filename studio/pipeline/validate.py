"""Validation end to end: a pipeline file in, a checked spec and the plan it expands to
out, or a PipelineError with every problem found. The checks run in order of cost, each
only once the ones before it pass: the file and each step (studio.pipeline.spec), the graph
between steps and the sweep sizes (studio.pipeline.plan), then every item of the plan with its
parameters as the generator's own validators see them (studio.pipeline.item_checks). The plan built
for that last check is the one the run walks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.errors import PipelineError
from studio.host.registry import Registry
from studio.pipeline.item_checks import check_items
from studio.pipeline.options import PipelineOptions
from studio.pipeline.plan import Plan, build_plan, check_graph
from studio.pipeline.spec import PipelineSpec, read_spec
from studio.sniff import check_budget

INPUT_FILES_BUDGET_S = 1.0


@dataclass(frozen=True)
class Checked:
    """A pipeline that passed every check: its spec and the plan it expands to."""

    spec: PipelineSpec
    plan: Plan


def check_pipeline(path: str | Path, registry: Registry, options: PipelineOptions | None = None) -> Checked:
    """Read and validate a pipeline file with the caller's options over it; raise
    PipelineError with every issue."""
    plan = None
    # one time budget for reading input files, whatever the pipeline lists: files past
    # it get a cheap check here and the full one at run time (studio.sniff.check_budget)
    with check_budget(INPUT_FILES_BUDGET_S):
        spec, issues = read_spec(path, registry, options or PipelineOptions())
        if spec is not None:
            issues += check_graph(spec, registry)
        if not issues:
            # the rules a generator states about its parameters, item by item, with input
            # files as validate can know them: only once the graph is sound and bounded
            plan = build_plan(spec, registry)
            issues += check_items(plan, registry)
    if issues:
        raise PipelineError(issues)
    return Checked(spec, plan)


def load_spec(path: str | Path, registry: Registry, *, overrides=(), **options) -> PipelineSpec:
    """The checked spec alone, for callers that do not run it; `options` are
    PipelineOptions' fields (seed, device, ...)."""
    return check_pipeline(path, registry, PipelineOptions(overrides=tuple(overrides), **options)).spec
