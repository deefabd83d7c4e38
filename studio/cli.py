"""The `studio` command line: a thin layer over studio.api. This is the only place a
StudioError becomes an exit code and a message; no traceback reaches the user for a
mistake of theirs."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from studio.version import __version__
from studio.errors import GeneratorFailed, StudioError, UserError, printable

PRECISION_CHOICES = click.Choice(["auto", "fp32", "bf16", "fp16"])


class IntRange(click.IntRange):
    """click's IntRange, with the rejected value clipped in the message (a 5,000-digit
    --seed is not echoed whole)."""

    def fail(self, message, param=None, ctx=None):
        from studio.errors import clip

        super().fail(printable(clip(str(message), 200)), param, ctx)


class FloatRange(click.FloatRange):
    """click's FloatRange, refusing NaN (which compares false with both bounds and so
    slips through a plain range) and clipping the rejected value in the message."""

    def convert(self, value, param, ctx):
        import math

        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number; give a value in the range {self._describe_range()}", param, ctx)
        return number

    def fail(self, message, param=None, ctx=None):
        from studio.errors import clip

        super().fail(printable(clip(str(message), 200)), param, ctx)


class StudioException(click.ClickException):
    def __init__(self, error: StudioError):
        super().__init__(printable(str(error)))
        self.exit_code = error.exit_code


class StudioGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StudioError as exc:
            raise StudioException(exc) from None
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            sys.exit(130)


def _host():
    # from studio.plugins, not studio.api: listing commands must not import the executor
    from studio.plugins import default_host

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        host = default_host()
    for w in caught:
        echo(f"warning: {w.message} (see `studio plugins list`)", err=True)
    return host


@click.group(cls=StudioGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="studio")
def cli() -> None:
    """Run YAML pipelines of generators: images, music, audio and text, on your machine.

    \b
    Start with:  studio run pipelines/showcase.yaml
    Then:        studio plugins list     (what generators you have)
                 studio plan FILE        (what a pipeline will make)
    """


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--out", default="runs", show_default=True, metavar="DIR",
              help="Root directory for runs: OUT/<pipeline>/<run-id>/.")
@click.option("--set", "overrides", multiple=True, metavar="STEP.PARAM=VALUE",
              help="Override a step parameter (repeatable). VALUE is read as YAML.")
@click.option("--seed", type=IntRange(0, 2**63 - 1), help="Run seed (overrides the pipeline's).")
@click.option("--device", help="auto | cpu | cuda | cuda:N (overrides the pipeline's).")
@click.option("--precision", type=PRECISION_CHOICES, help="Overrides the pipeline's precision.")
@click.option("--no-cache", is_flag=True, help="Recompute every step instead of reusing finished ones.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; print only the run directory.")
@click.option("--json-events", is_flag=True, help="Print one JSON object per event on stdout.")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile every step's models (CUDA graphs on a GPU); the manifest reports "
                   "the first batch's time, which includes compiling.")
@click.option("--max-ram-gb", type=FloatRange(0.1, 100000), metavar="GB",
              help="Memory for loaded models on the CPU; least recently used models are unloaded "
                   "beyond it. Default: half the machine's memory.")
@click.option("--max-vram-gb", type=FloatRange(0.1, 100000), metavar="GB",
              help="The same on a GPU. Default: 80% of the GPU's memory.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where generators run: this process, or a Ray cluster (overrides the pipeline's "
                   "`executor:`; see docs/scale-out.md).")
@click.option("--ray-address", metavar="ADDRESS",
              help="The Ray cluster to join (default: RAY_ADDRESS, else a cluster started for this run).")
@click.option("--ray-keep-workers", type=FloatRange(0, 7 * 24 * 3600), metavar="SECONDS",
              help="How long the cluster's workers wait, idle, with their models loaded, for the next "
                   "run (default 300; 0 stops them when this run ends).")
def run(pipeline, out, overrides, seed, device, precision, no_cache, quiet, json_events, compile_, max_ram_gb,
        max_vram_gb, executor, ray_address, ray_keep_workers) -> None:
    """Run PIPELINE and write its outputs under OUT. PIPELINE is a pipeline file, or a
    PNG, WAV or MIDI file Studio made, a manifest.json or a run directory: the pipeline
    that made it runs again (fully cached when nothing changed; --set applies)."""
    from studio.artifacts import os_error_text
    from studio.errors import StorageError, UserError
    from studio.events import GuardedSink, sink_for
    from studio.executor import RunWarning
    from studio.runtime import ModelBudget, Runtime

    if ray_address is not None or executor == "ray":  # checked before anything is read or started
        from studio.cluster import resolve_address

        resolve_address(ray_address)  # --ray-address, or RAY_ADDRESS when Ray would read it
    if not out.strip():
        raise StorageError("--out is empty: give a folder for the runs, e.g. --out runs")
    out = Path(out)
    loaded = _load_or_reopen(pipeline, overrides=overrides, seed=seed, device=device, precision=precision,
                             compile=True if compile_ else None, host=_host())
    budget = ModelBudget(cpu=None if max_ram_gb is None else int(max_ram_gb * 2**30),
                         gpu=None if max_vram_gb is None else int(max_vram_gb * 2**30))
    runtime = Runtime(loaded.spec.device, loaded.spec.precision, budget)
    # a broken or full stdout (`--json-events | head`) closes the sink; the run goes on
    events = GuardedSink(sink_for(quiet=quiet, json_events=json_events))
    try:
        with warnings.catch_warnings():
            # the run's warnings (a read-only step cache ...) as plain lines, when they happen
            show_others = warnings.showwarning

            def show(message, category, *args, **kwargs):
                if issubclass(category, RunWarning):
                    try:
                        echo(f"warning: {message}", err=True)
                    except OSError:
                        pass  # stderr is gone: the manifest keeps the warning
                else:
                    show_others(message, category, *args, **kwargs)

            warnings.showwarning = show
            warnings.simplefilter("always", RunWarning)
            result = loaded.run(out=out, use_cache=not no_cache, events=events, runtime=runtime, executor=executor,
                                ray_address=ray_address, keep_workers=ray_keep_workers)
    except KeyboardInterrupt:
        events.close()
        echo("interrupted: finished artifacts are kept; run again to reuse them", err=True)
        sys.exit(130)
    except OSError as exc:  # a file problem the run did not put in words
        raise StorageError(os_error_text(exc, writing=False)) from None
    finally:
        events.close()
        if json_events and events.error is not None:
            _stdout_to_devnull()  # what is still buffered for it must not fail again at exit
    try:
        if json_events:
            pass
        elif quiet:
            echo(_display(result.run_dir))
        else:
            _print_summary(result)
        sys.stdout.flush()
        broken = events.error if json_events else None  # the other sinks write to stderr
    except OSError as exc:
        broken = exc
    if broken is not None:
        _stdout_to_devnull()  # what is still buffered for it must not fail again at exit
        import errno

        if not isinstance(broken, BrokenPipeError) and broken.errno != errno.EPIPE:
            message = f"cannot write to standard output ({broken.strerror or broken})"
            if not (result.error or result.failed):
                raise StorageError(f"{message}; the run itself is {result.status}: {_display(result.run_dir)}")
            try:
                echo(f"warning: {message}", err=True)
            except OSError:
                pass
    if result.error:  # the run stopped, or could not record itself: a full disk ...
        raise StorageError(f"{result.error}\n  finished artifacts are kept in {_display(result.run_dir)}")
    if result.failed:
        lines = [f"{len(result.failed)} item(s) failed; finished artifacts are kept in {_display(result.run_dir)}"]
        for r in result.failed:
            lines.append(f"  step {r.step_id!r}, item {r.name!r}: {r.error}")
        if (result.run_dir / "errors.log").exists():
            lines.append(f"  tracebacks: {result.run_dir / 'errors.log'}")
        # exit 1 only when a generator crashed on valid input; the user's input or the
        # machine (memory, disk) is for the user to fix: exit 2
        crashed = any(r.error_kind == "generator" for r in result.failed)
        raise (GeneratorFailed if crashed else UserError)("\n".join(lines))


def _load_or_reopen(pipeline: Path, **options):
    """A pipeline file, or the pipeline inside a file Studio made (PNG, WAV, MIDI), a
    manifest.json or a run directory: loaded and validated like any pipeline file, its
    relative inputs read from the folder they were read from when it first ran. Every
    problem found in a re-opened pipeline names the file the user gave."""
    import tempfile

    from studio import api
    from studio.errors import Issue, PipelineError
    from studio.reopen import MEDIA, as_yaml, reopen, shown

    if not (pipeline.is_dir() or pipeline.name == "manifest.json" or pipeline.suffix.lower() in MEDIA):
        return api.load(pipeline, **options)
    reopened = reopen(pipeline)
    try:
        if reopened.base_dir is not None and not reopened.base_dir.is_dir():
            # made on another machine: its input files are looked for here instead
            reopened.base_dir = None
    except (OSError, ValueError):
        reopened.base_dir = None
    origin = shown(pipeline) + (" (its embedded pipeline)" if pipeline.suffix.lower() in MEDIA
                                else " (the pipeline its manifest records)")
    text = as_yaml(reopened, pipeline)
    with tempfile.TemporaryDirectory(prefix="studio-reopened-") as tmp:
        path = Path(tmp) / "pipeline.yaml"
        try:
            path.write_text(text, encoding="utf-8")
            loaded = api.load(path, base_dir=reopened.base_dir or Path.cwd(), **options)
        except PipelineError as exc:
            # the temporary file is no place the user knows: the file they gave, and the
            # YAML path in the pipeline (the lines are those `studio export` writes)
            raise PipelineError([Issue(i.message.replace(str(path), origin), origin if i.file == str(path) else i.file,
                                       None if i.file == str(path) else i.line, i.path, i.step)
                                 for i in exc.issues]) from None
        except UserError as exc:
            raise UserError(str(exc).replace(str(path), origin)) from None
        except OSError as exc:
            raise UserError(f"{shown(pipeline)}: its pipeline cannot be re-opened: the temporary folder "
                            f"{shown(tmp)} refuses it ({exc.strerror or exc}); set TMPDIR to a writable folder") from None
    loaded.spec.source = pipeline  # the manifest says where this run came from
    return loaded


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the YAML here (default: print it).")
def export(source, output) -> None:
    """Write out the pipeline that made SOURCE: a PNG, WAV or MIDI file Studio made, a
    manifest.json or a run directory."""
    from studio.artifacts import atomic_write, os_error_text
    from studio.reopen import as_yaml, reopen, shown

    def refuse_existing() -> None:
        if os.path.lexists(output):
            raise UserError(f"{shown(output)} exists; give another -o, or remove it first")

    if output is not None:
        refuse_existing()  # before any reading: nothing is read for an answer that cannot be written
    text = as_yaml(reopen(source), source)
    if output is None:
        echo(text.rstrip("\n"))
        return
    refuse_existing()
    try:
        atomic_write(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:  # nothing is left half written: the temporary file is removed
        raise UserError(os_error_text(exc, shown(output))) from None
    echo(f"wrote {shown(output)}")


@cli.command()
@click.argument("run_dir", metavar="RUN")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The folder to write the training set into (new or empty).")
@click.option("--step", help="The step whose outputs to export (default: the one with the most items).")
@click.option("--port", help="Its output to export, when it writes several.")
@click.option("--layout", type=click.Choice(["imagefolder", "classes"]), default="imagefolder", show_default=True,
              help="imagefolder: files + metadata.jsonl (Hugging Face); classes: one folder per class.")
@click.option("--label", help="The parameter that is the class (default: class_label or label when swept).")
@click.option("--caption", help="The parameter that is the caption (default: prompt, text or caption).")
@click.option("--split", help="Write into OUTPUT/SPLIT (train, validation, test...).")
@click.option("--out", "runs_root", default="runs", show_default=True, metavar="DIR", type=click.Path(path_type=Path),
              help="The folder runs were written to, for RUN given as a name or `latest`.")
def dataset(run_dir, output, step, port, layout, label, caption, split, runs_root) -> None:
    """Write a run's outputs as a training set: RUN is a run directory, a pipeline's
    folder or name (its newest run), or `latest`. Labels and captions come from the
    items' parameters (a sweep's class_label, an upstream text's prompt)."""
    from studio.dataset import export as export_dataset
    from studio.history import resolve

    given = Path(run_dir)
    # a run folder's manifest is read (and checked) by the export, whatever kind of file it is
    run = given if os.path.lexists(given / "manifest.json") else resolve(runs_root, run_dir)
    written, count = export_dataset(run, output, step=step, port=port, layout=layout, label=label,
                                    caption=caption, split=split)
    echo(f"wrote {count} files to {written} ({layout})")


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _display(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_summary(result) -> None:
    """A row per item; a row per step when there are too many items to read."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{_display(result.run_dir)}  [{result.status}]", title_justify="left")
    per_step = len(result.items) > 40
    for col in ("step" if per_step else "item", "status", "seconds", "outputs"):
        table.add_column(col)
    if per_step:
        steps: dict[str, list] = {}
        for r in result.items.values():
            steps.setdefault(r.step_id, []).append(r)
        for step_id, items in steps.items():
            counts: dict[str, int] = {}
            for r in items:
                counts[r.status] = counts.get(r.status, 0) + 1
            seconds = sum(r.seconds or 0 for r in items)
            table.add_row(step_id, ", ".join(f"{n} {s}" for s, n in counts.items()), f"{seconds:.2f}",
                          f"{step_id}*/")
    else:
        for r in result.items.values():
            outputs = "  ".join(str(a.path.relative_to(result.run_dir)) for a in r.artifacts.values())
            seconds = "" if r.seconds is None else f"{r.seconds:.2f}"
            table.add_row(r.name, r.status, seconds, outputs or (r.error or ""))
    Console().print(table)
    Console().print(f"gallery: {_display(result.run_dir / 'gallery.html')}")


@cli.command()
@click.argument("pipelines", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(pipelines) -> None:
    """Check pipelines without running them. Lists every problem found."""
    from studio.errors import PipelineError, UserError
    from studio.validate import load_spec

    host = _host()
    failed = False
    for path in pipelines:
        try:
            load_spec(path, host.registry)
            echo(f"{path}: ok")
        except PipelineError as exc:
            failed = True
            echo(f"{path}: {exc}", err=True)
        except UserError as exc:
            failed = True
            echo(str(exc), err=True)
    if failed:
        sys.exit(2)


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="STEP.PARAM=VALUE")
@click.option("--seed", type=IntRange(0, 2**63 - 1))
@click.option("--json", "as_json", is_flag=True)
def plan(pipeline, overrides, seed, as_json) -> None:
    """Show the steps and items PIPELINE expands to, in run order (a dry run)."""
    from studio import api

    the_plan = api.load(pipeline, overrides=overrides, seed=seed, host=_host()).plan()
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


class _TrainCommand(click.Command):
    """`studio train`, whose --help also lists the options of the trainer named on the
    command line (`studio train image.gan --help`). click answers --help while it parses
    the arguments, before GENERATOR has a value, so the name is read from the raw
    arguments first."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            opts, _, _ = self.make_parser(ctx).parse_args(args=list(args))
            named = opts.get("generator")
            ctx.meta["studio.train.generator"] = named if isinstance(named, str) else None
        except click.UsageError:
            pass  # the parse below reports it
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from studio.errors import UserError
        from studio.trainer_options import describe_options

        super().format_epilog(ctx, formatter)
        registry = _host().registry
        name = ctx.meta.get("studio.train.generator")
        if not name:
            with formatter.section("Trainer options"):
                formatter.write_text("Each trainer has its own settings, given as --option KEY=VALUE; "
                                     "`studio train GENERATOR --help` lists them. Trainable generators: "
                                     + (", ".join(sorted(registry.trainers)) or "none"))
            return
        try:
            trainer = registry.trainer(name)
        except UserError as exc:
            formatter.write_paragraph()
            formatter.write_text(str(exc))
            return
        docs = describe_options(trainer.Options)
        with formatter.section(f"Options of the {name} trainer (--option KEY=VALUE, repeatable)"):
            formatter.write_text(f"{trainer.description} Its defaults: --steps {trainer.default_steps}, "
                                 f"--batch-size {trainer.default_batch_size}, --lr {trainer.default_lr:g}.")
            formatter.write_paragraph()
            if docs:
                formatter.write_dl([(d.name, f"{d.description} [{d.allowed}; default: {d.default}]") for d in docs])
            else:
                formatter.write_text("It takes no --option.")
            if any(d.allowed.startswith("comma-separated") for d in docs):
                formatter.write_paragraph()
                formatter.write_text("A list is written comma separated, e.g. --option KEY=1,2,4.")


@cli.command(cls=_TrainCommand)
@click.argument("generator")
@click.option("--data", required=True, help="A folder of training files, or a named source (e.g. sklearn:digits).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Weights directory to write (model: OUT loads it).")
@click.option("--steps", type=IntRange(1, 10_000_000), help="Optimisation steps (default: the trainer's).")
@click.option("--batch-size", type=IntRange(1, 65536), help="Examples per step (default: the trainer's).")
@click.option("--lr", type=FloatRange(0, 1, min_open=True), help="Peak learning rate (default: the trainer's).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--seed", type=IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in OUT.")
@click.option("--checkpoint-every", type=IntRange(1), default=250, show_default=True)
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A setting of GENERATOR's trainer (repeatable); `studio train GENERATOR --help` lists them.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(generator, data, out, steps, batch_size, lr, device, seed, resume, checkpoint_every, options, quiet) -> None:
    """Train weights for GENERATOR on your own data; `model: OUT` then uses them."""
    from studio.errors import UserError, echo as quoted
    from studio.training import TrainConfig, TrainingInterrupted, train as run_training

    opts = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise UserError(f"--option {quoted(option)}: expected KEY=VALUE, e.g. --option size=32")
        opts[key.strip()] = value.strip()
    trainer = _host().registry.trainer(generator)
    config = TrainConfig(data=data, out=out, steps=steps, batch_size=batch_size, lr=lr, device=device,
                         seed=seed, resume=resume, checkpoint_every=checkpoint_every, options=opts)
    with warnings.catch_warnings():
        # what the data loaders leave out (a damaged file among many) as plain lines
        warnings.showwarning = lambda message, *args, **kwargs: echo(f"warning: {message}", err=True)
        warnings.simplefilter("always", UserWarning)
        # checks the options before anything loads
        try:
            result = run_training(trainer, config, show_progress=not quiet)
        except TrainingInterrupted as stopped:
            if stopped.saved:
                echo(f"interrupted at step {stopped.done} of {stopped.total}: checkpoint saved in "
                     f"{_display(stopped.out / 'training')}; continue with the same command plus --resume", err=True)
            else:
                echo("interrupted before a step finished: nothing to keep", err=True)
            sys.exit(130)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items())
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    echo(f"trained {generator} for {result.steps} steps in {result.seconds:.0f} s: {losses}")
    if metrics:
        echo(f"held-out: {metrics}")
    lora = result.out / "pytorch_lora_weights.safetensors"  # diffusers' name for a LoRA it saves
    if lora.is_file():
        echo(f"weights: {_display(lora)} (use `loras: [{{path: {_display(lora)}}}]`)")
    else:
        echo(f"weights: {_display(result.out)} (use `model: {_display(result.out)}`)")


@cli.group()
def plugins() -> None:
    """Installed plugins and their generators."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
def plugins_list(as_json) -> None:
    """Every plugin, its version, its generators, and whether it loaded."""
    host = _host()
    rows = [
        {"name": p.name, "module": p.module, "distribution": p.distribution, "version": p.version,
         "generators": p.generators, "ok": p.ok, "errors": p.errors}
        for p in host.registry.plugins.values()
    ]
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("plugin", "version", "generators", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        status = "ok" if r["ok"] else "[red]error:[/] " + "; ".join(r["errors"])
        table.add_row(r["name"], r["version"] or "", "\n".join(r["generators"]), status)
    Console().print(table)


@plugins.command("new")
@click.argument("name")
@click.option("--dir", "where", default=".", show_default=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where to write studio-NAME/.")
def plugins_new(name, where) -> None:
    """Write a ready plugin package: pyproject with the entry point, a generator
    (image.NAME), tests using studio.testing, a README. NAME: lower-case words joined
    by - or _ (acme-grain: the package studio-acme-grain, the generator image.acme_grain)."""
    from studio.scaffold import new_plugin, plugin_names

    root = new_plugin(name, where)
    echo(f"wrote {root}: its generator is {plugin_names(name)['generator']}")
    echo(f"next: cd {root} && pip install -e '.[test]' && pytest")


@plugins.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def plugins_show(name, as_json) -> None:
    """Parameters (types, defaults, bounds, descriptions) and ports of generator NAME."""
    from studio import params as P

    host = _host()
    gen = host.registry.generator(name)
    fields = []
    for key, field in gen.Params.model_fields.items():
        default = P.default_of(gen.Params, key)
        fields.append({"name": key, "allowed": P.describe(gen.Params, key),
                       "default": None if default is P.REQUIRED else default,
                       "required": default is P.REQUIRED, "description": field.description or ""})
    info = {"name": gen.name, "plugin": host.registry.plugin_of(name), "description": gen.description,
            "outputs": gen.outputs, "precisions": list(gen.precisions), "batchable": gen.batchable,
            "params": fields, "schema": gen.Params.model_json_schema()}
    if as_json:
        echo(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{gen.name}[/]  (plugin {info['plugin']})\n{gen.description}\n")
    console.print("outputs: " + ", ".join(f"{p} ({m})" for p, m in gen.outputs.items()))
    console.print(f"precisions: {', '.join(gen.precisions)}   batchable: {'yes' if gen.batchable else 'no'}\n")
    table = Table(title="parameters", title_justify="left")
    for col in ("name", "allowed", "default", "description"):
        table.add_column(col, overflow="fold")
    for f in fields:
        table.add_row(f["name"], f["allowed"], "(required)" if f["required"] else repr(f["default"]), f["description"])
    console.print(table)


@cli.group()
def runs() -> None:
    """Look at finished runs."""


OUT_OPTION = click.option("--out", default="runs", show_default=True, metavar="DIR", type=click.Path(path_type=Path),
                          help="The folder runs were written to (studio run --out).")


@runs.command("list")
@OUT_OPTION
@click.option("--name", "pipeline", metavar="PIPELINE", help="Only this pipeline's runs.")
@click.option("--status", type=click.Choice(["done", "failed", "interrupted", "running", "unreadable"]))
@click.option("--since", metavar="DATE", help="Started on or after, e.g. 2026-11-24 or 2026-11-24T10:00.")
@click.option("--until", metavar="DATE", help="Started on or before (a date includes its whole day).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs_list(out, pipeline, status, since, until, limit, as_json) -> None:
    """Runs, newest first: name, run id, status, items, time, pipeline file, size."""
    from studio.history import runs as find_runs

    notes: list[str] = []
    found = find_runs(out, pipeline=pipeline, status=status, since=since, until=until, limit=limit, notes=notes)
    _print_notes(notes + [f"{r.run_dir}: {r.note}" for r in found if r.note])
    if as_json:
        echo(json.dumps([r.as_dict() for r in found], indent=2))
        return
    if not found:
        echo(f"no runs in {out}" + (" match" if pipeline or status or since or until else ""))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for col in ("pipeline", "run", "status", "done/failed/cached", "time", "pipeline file", "size"):
        table.add_column(col, overflow="fold", no_wrap=col == "run")
    from studio.manifest import shown

    def text(value, limit: int = 300) -> str:  # from the manifests: escape sequences made visible
        return escape(shown(value, limit))

    for r in found:
        seconds = "" if r.seconds is None else f"{r.seconds:.1f} s"
        table.add_row(text(r.pipeline), text(r.run_id), text(r.status, 100), f"{r.done}/{r.failed}/{r.cached}",
                      seconds, text(r.source), _size(r.bytes) + (
                          f" (+{_size(r.shared_bytes)} shared)" if r.shared_bytes else ""))
    # a table piped to a file or pager keeps its rows on one line each
    Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 200).print(table)


def _print_notes(notes: list[str], shown: int = 20) -> None:
    """What the run index could not use (a damaged manifest, an index that was a link),
    on stderr, clipped: the listing itself stays on stdout."""
    from studio.errors import clip

    for note in notes[:shown]:
        echo(f"note: {clip(note, 1000)}", err=True)
    if len(notes) > shown:
        echo(f"note: ... and {len(notes) - shown} more", err=True)


def _size(n: int) -> str:
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@runs.command("find")
@OUT_OPTION
@click.option("--step", help="Step id.")
@click.option("--uses", help="Generator, e.g. image.diffusion.")
@click.option("--seed", type=IntRange(0, 2**63 - 1))
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter's value (YAML: 7, 0.5, true, red heart); an input by file name or sha256. Repeatable.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs_find(out, step, uses, seed, params, limit, as_json) -> None:
    """Items of any run by step, generator, seed or parameter value."""
    import yaml

    from studio.history import find

    from studio.errors import clip
    from studio.history import MAX_PARAMS_DEPTH, _too_deep_or_large, printable_text

    wanted = {}
    for entry in params:
        key, sep, value = entry.partition("=")
        shown = clip(printable_text(entry), 80)
        if not sep or not key.strip():
            raise UserError(f"--param {shown!r}: expected KEY=VALUE, e.g. --param prompt='red heart'")
        if len(value) > 10_000:
            raise UserError(f"--param {clip(printable_text(key), 80)}: the value is {len(value):,} characters; "
                            "at most 10,000")
        # a YAML value, nested at most MAX_PARAMS_DEPTH deep: checked on the text first, so a
        # 5,000-deep list is refused before the (recursive) YAML parser sees it
        depth = max_depth = 0
        for char in value:
            depth += char in "[{"
            depth -= char in "]}"
            max_depth = max(max_depth, depth)
        parsed: Any = value
        if value.strip() and max_depth <= MAX_PARAMS_DEPTH:
            try:
                parsed = yaml.safe_load(value)
            except (yaml.YAMLError, ValueError, RecursionError):  # not YAML, or a 5,000-digit number: as text
                parsed = value
        problem = _too_deep_or_large(parsed, MAX_PARAMS_DEPTH, 10_000) if max_depth <= MAX_PARAMS_DEPTH else (
            f"nested more than {MAX_PARAMS_DEPTH} deep")
        if problem:
            raise UserError(f"--param {clip(printable_text(key), 80)}: the value is {problem}; give a plain value "
                            f"(a number, text, or a list or mapping at most {MAX_PARAMS_DEPTH} deep)")
        wanted[key.strip()] = parsed
    notes: list[str] = []
    found = find(out, step=step, uses=uses, seed=seed, params=wanted, limit=limit, notes=notes)
    _print_notes(notes)
    if as_json:
        echo(json.dumps(found, indent=2, default=str))
        return
    for item in found:
        echo(f"{item['run_dir']}  {item['name']}  {item['status']}  seed {item['seed']}")
    if not found:
        echo(f"no items in {out} match")


@runs.command("rm")
@OUT_OPTION
@click.argument("targets", nargs=-1, required=True, metavar="RUN...")
@click.option("--yes", is_flag=True, help="Do not ask.")
def runs_rm(out, targets, yes) -> None:
    """Delete runs: run directories, `latest`, or a pipeline name (its newest run)."""
    from studio.history import remove, resolve

    chosen, seen = [], set()
    for target in targets:  # every target is found before anything is removed
        run_dir = resolve(out, target)
        real = os.path.realpath(run_dir)
        if real not in seen:
            seen.add(real)
            chosen.append(run_dir)
    for run_dir in chosen:
        try:
            if not yes and not click.confirm(printable(f"delete {run_dir}?"), default=False):
                continue
        except click.Abort:  # no answer (stdin closed) or Ctrl-C at the question
            raise UserError(f"{run_dir} was not removed: no answer to the question; give --yes to remove "
                            "without asking") from None
        remove(out, run_dir)
        echo(f"removed {run_dir}")


@cli.group()
def cache() -> None:
    """Look after the step cache (OUT/.cache/steps)."""


@cache.command("info")
@OUT_OPTION
@click.option("--json", "as_json", is_flag=True)
def cache_info(out, as_json) -> None:
    """How many entries the cache holds, its size, and what only it holds."""
    import time

    from studio.cache_admin import cache_root, entries, keys_in_runs

    notes: list[str] = []
    found = entries(out)
    listed = keys_in_runs(out, notes) if out.is_dir() else set()
    _print_notes(notes)
    info = {"cache": str(cache_root(out)), "entries": len(found), "bytes": sum(e.bytes for e in found),
            "bytes_alone": sum(e.alone for e in found), "entries_runs_recorded": sum(e.key in listed for e in found),
            "oldest_use": found[0].last_used if found else None, "newest_use": found[-1].last_used if found else None}
    if as_json:
        echo(json.dumps(info, indent=2))
        return
    def when(t):
        try:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"
        except (OverflowError, OSError, ValueError):  # a folder time far outside the calendar
            return "?"
    echo(f"{info['cache']}: {info['entries']} entries, {_size(info['bytes'])} "
         f"({_size(info['bytes_alone'])} not shared with any run); {info['entries_runs_recorded']} recorded by "
         f"runs in {out}; last used {when(info['oldest_use'])} to {when(info['newest_use'])}")


@cache.command("gc")
@OUT_OPTION
@click.option("--older-than", "days", type=FloatRange(0, 36_500), metavar="DAYS",
              help="Remove entries last used more than DAYS ago.")
@click.option("--max-gb", type=FloatRange(0, 1_000_000), help="Then remove the least recently used until the cache "
              "alone holds at most this much.")
@click.option("--include-listed", is_flag=True, help="Also remove entries that runs in OUT recorded.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
def cache_gc(out, days, max_gb, include_listed, dry_run) -> None:
    """Remove cache entries, least recently used first; never one a run in OUT recorded
    unless --include-listed."""
    from studio.cache_admin import check_limits, collect

    if days is None and max_gb is None:
        raise UserError("give --older-than DAYS, --max-gb N or both (studio cache info shows the cache's size)")
    check_limits(days, max_gb)
    notes: list[str] = []
    removed, protected = collect(out, older_than_days=days, max_bytes=None if max_gb is None else int(max_gb * 2**30),
                                 include_listed=include_listed, dry_run=dry_run, notes=notes)
    _print_notes(notes)
    verb = "would remove" if dry_run else "removed"
    echo(f"{verb} {len(removed)} entries, freeing {_size(sum(e.alone for e in removed))}"
         + (f"; kept {len(protected)} that runs in {out} recorded (--include-listed removes them)"
            if protected else ""))


@runs.command("show")
@click.argument("run_dir", metavar="RUN")
@OUT_OPTION
@click.option("--json", "as_json", is_flag=True)
def runs_show(run_dir, out, as_json) -> None:
    """What a run made: status, seeds, timings and artifacts per item. RUN is a run
    directory, a pipeline's folder or name (its newest run), or `latest`."""
    from rich.markup import escape

    from studio.history import resolve
    from studio.manifest import read_manifest, shown

    given = Path(run_dir)
    # a name, `latest` or a pipeline's folder of runs: which run; any other path is read as
    # given, so that what is wrong with it is said about it
    if not os.path.lexists(given) or (os.path.isdir(given) and not os.path.lexists(given / "manifest.json")
                                      and _holds_runs(given)):
        given = resolve(out, run_dir)
    run_dir = given
    # completed from the run's journal when the run was killed, and saved back
    manifest = read_manifest(run_dir, repair=True)
    try:
        if as_json:
            try:
                text = json.dumps(manifest, indent=2)
            except (RecursionError, ValueError):  # the pure-Python encoder (indent) recurses per level
                raise UserError(f"{_display(Path(run_dir))}/manifest.json: nested too deep to print as JSON; it is "
                                "not a manifest Studio wrote") from None
            echo(text)
            return
        _show_manifest(manifest, escape, shown)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # `studio runs show DIR | head`: main() ends quietly
    except OSError as exc:
        from studio.errors import StorageError

        raise StorageError(f"cannot write to standard output: {exc.strerror or exc}") from None


def _holds_runs(folder: Path) -> bool:
    from studio.history import newest_in

    return newest_in(folder) is not None


def _show_manifest(manifest, escape, shown) -> None:
    """The table `runs show` prints. Every field of the file may be any JSON type, and
    every string is shown with its control characters made visible, clipped."""
    from rich.console import Console
    from rich.table import Table

    def text(value, limit: int = 500) -> str:  # the manifest is a file: show what is there, markup escaped
        return escape(shown(value, limit))

    def as_list(value) -> list:
        return value if isinstance(value, list) else [] if value is None else [value]

    rt = manifest.get("runtime") if isinstance(manifest.get("runtime"), dict) else {}
    console = Console(emoji=False, highlight=False)
    console.print(f"[bold]{text(manifest.get('pipeline'), 200)}[/]  {text(manifest.get('status'), 100)}  "
                  f"{text(manifest.get('started'), 100)}  {text(manifest.get('seconds'), 100)} s  "
                  f"device {text(rt.get('device'), 100)}  seed {text(manifest.get('seed'), 100)}")
    lines = as_list(manifest.get("error") or None) + as_list(manifest.get("warnings"))
    for line in lines[:50]:
        console.print(f"  {text(line)}")
    if len(lines) > 50:
        console.print(f"  ... and {len(lines) - 50} more")
    table = Table()
    for col in ("item", "uses", "status", "seed", "seconds", "artifacts"):
        table.add_column(col, overflow="fold")
    for step in manifest["steps"].values():
        if not isinstance(step, dict):
            continue
        for item in as_list(step.get("items")):
            if not isinstance(item, dict):
                continue
            artifacts = item.get("artifacts")
            artifacts = artifacts.values() if isinstance(artifacts, dict) else as_list(artifacts)
            arts = "\n".join(f"{text(a.get('path'))} ({text(a.get('size'), 40)} B)" if isinstance(a, dict)
                             else text(a) for a in artifacts)
            seconds = item.get("seconds")
            seconds = f"{seconds:.2f}" if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else ""
            table.add_row(text(item.get("name"), 200), text(step.get("uses"), 200), text(item.get("status"), 100),
                          text(item.get("seed"), 100), seconds, arts or text(item.get("error")))
    console.print(table)


def echo(message: Any = "", err: bool = False) -> None:
    """click.echo with control characters shown as escapes (see studio.errors.printable):
    messages repeat file names and values that came from files."""
    click.echo(printable(str(message)), err=err)


def main() -> None:
    """The console entry point: whatever happens, the user gets a message and an exit
    code, never a Python traceback (that goes to a crash log the message names)."""
    try:
        host = _host()
        host.call_each("register_commands", cli=cli)
        stdout_was = _stdout_identity()
        try:
            cli(prog_name="studio")
        except SystemExit as exc:
            # a broken pipe that click or rich handled: click turns EPIPE into a silent
            # exit 1 with stdout wrapped in its _PacifyFlushWrapper; rich points stdout at
            # /dev/null and exits 1. Either is a broken pipe, handled below.
            if exc.code == 1 and (type(sys.stdout).__name__ == "_PacifyFlushWrapper"
                                  or _stdout_identity() != stdout_was):
                raise BrokenPipeError() from None
            raise
    except StudioError as exc:
        echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `studio plan x | head`: the reader left; say nothing more
        _quiet_broken_pipe()
    except OSError as exc:
        from studio.artifacts import os_error_text

        echo(f"Error: {os_error_text(exc, writing=False)}", err=True)
        sys.exit(2)
    except MemoryError:  # the machine, not a bug: exit 2 as an item that does not fit alone
        echo("Error: out of memory. Lower the sizes in the pipeline (width, height, sweep lengths, "
                   "batch) or free memory, then run again.", err=True)
        sys.exit(2)
    except Exception as exc:
        log = _write_crash_log(exc)
        echo(f"Error: internal error, not a mistake of yours: {type(exc).__name__}: {str(exc)[:300]}\n"
                   f"  The details are in {log}; please report them with the command you ran.", err=True)
        sys.exit(1)


def _stdout_identity() -> tuple[int, int] | None:
    """Which file descriptor 1 is, to tell when something pointed it at /dev/null."""
    try:
        st = os.fstat(1)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _quiet_broken_pipe() -> None:
    """Exit 141 (as a shell reports SIGPIPE) without a word: what is still buffered for
    stdout goes to /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass
    except OSError:
        pass
    sys.exit(141)


def _write_crash_log(exc: BaseException) -> str:
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix=f"studio-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"studio {__version__}, argv: {sys.argv!r}\n{text}")
        return path
    except OSError:
        return "(no crash log: the temporary directory is not writable)"
