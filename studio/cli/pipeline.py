"""`studio validate`, `studio plan` and `studio export`: a pipeline checked, expanded
into the items it would make, or written out from a file Studio made."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from studio.cli.common import IntRange, echo, host, print_or_write, refuse_existing
from studio.cli.models import MODELS_OPTION
from studio.errors import UserError


@click.command()
@click.argument("pipelines", nargs=-1, required=True, type=click.Path(path_type=Path))
@MODELS_OPTION
def validate(pipelines, model_dirs) -> None:
    """Check pipelines without running them. Lists every problem found."""
    from studio.errors import PipelineError, UserError
    from studio.pipeline.options import PipelineOptions
    from studio.pipeline.validate import check_pipeline

    registry = host().registry
    failed = False
    for path in pipelines:
        try:
            check_pipeline(path, registry, PipelineOptions(model_dirs=model_dirs))
            echo(f"{path}: ok")
        except PipelineError as exc:
            failed = True
            echo(f"{path}: {exc}", err=True)
        except UserError as exc:
            failed = True
            echo(str(exc), err=True)
    if failed:
        sys.exit(2)


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="STEP.PARAM=VALUE")
@click.option("--seed", type=IntRange(0, 2**63 - 1))
@click.option("--json", "as_json", is_flag=True)
@MODELS_OPTION
def plan(pipeline, overrides, seed, as_json, model_dirs) -> None:
    """Show the steps and items PIPELINE expands to, in run order (a dry run)."""
    from studio import api
    from studio.pipeline.options import PipelineOptions

    the_plan = api.load_with(pipeline, PipelineOptions(overrides=overrides, seed=seed, model_dirs=model_dirs),
                             host()).plan()
    if as_json:
        echo(json.dumps([
            {"step": s.id, "uses": s.uses, "after": list(s.depends_on),
             "items": [{"name": i.name, "dir": i.dirname, "seed": i.seed, "labels": i.labels} for i in s.items]}
            for s in the_plan.steps], indent=2, default=str))
        return
    spec = the_plan.spec
    echo(f"pipeline {spec.name}: {len(the_plan.steps)} steps, {len(the_plan.items)} items, "
         f"run seed {spec.seed}")
    for n, step in enumerate(the_plan.steps, 1):
        after = f"  (after {', '.join(step.depends_on)})" if step.depends_on else ""
        count = len(step.items)
        echo(f"{n}. {step.id}  {step.uses}  {count} item{'s' if count != 1 else ''}{after}")
        for item in step.items:
            seed = f"seed {item.seed}" + (" (derived)" if item.seed_derived else "")
            echo(f"     {item.name}  [{seed}]")


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the YAML here (default: print it).")
def export(source, output) -> None:
    """Write out the pipeline that made SOURCE: a PNG, WAV or MIDI file Studio made, a
    manifest.json or a run directory."""
    from studio.runs.reopen import as_yaml, reopen

    refuse_existing(output)  # before any reading: nothing is read for an answer that cannot be written
    print_or_write(output, as_yaml(reopen(source), source))
