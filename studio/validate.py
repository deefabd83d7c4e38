"""Validation end to end: a pipeline file in, a checked PipelineSpec out, or a
PipelineError with every problem found. The checks run in order of cost, each only once
the ones before it pass: the file and each step (studio.spec), the graph between steps
and the sweep sizes (studio.plan), then every item's parameters as the generator's own
validators see them (studio.checks)."""

from __future__ import annotations

from pathlib import Path

from studio.checks import check_items
from studio.errors import PipelineError
from studio.plan import check_graph
from studio.registry import Registry
from studio.sniff import check_budget
from studio.spec import PipelineSpec, read_spec

INPUT_FILES_BUDGET_S = 1.0


def load_spec(
    path: str | Path,
    registry: Registry,
    *,
    overrides: list[str] = (),
    seed: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    base_dir: Path | None = None,
) -> PipelineSpec:
    """Read and validate a pipeline file; raise PipelineError with every issue."""
    # one time budget for reading input files, whatever the pipeline lists: files past
    # it get a cheap check here and the full one at run time (studio.sniff.check_budget)
    with check_budget(INPUT_FILES_BUDGET_S):
        spec, issues = read_spec(path, registry, overrides=overrides, seed=seed, device=device,
                                 precision=precision, compile=compile, base_dir=base_dir)
        if spec is not None:
            issues += check_graph(spec, registry)
        if not issues:
            # the rules a generator states about its parameters, item by item, with input
            # files as validate can know them: only once the graph is sound and bounded
            issues += check_items(spec, registry)
    if issues:
        raise PipelineError(issues)
    return spec
