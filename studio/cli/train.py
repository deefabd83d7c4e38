"""`studio train`: weights for a generator, trained on the user's data."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from studio.cli.common import FloatRange, IntRange, display, echo, host


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
        from studio.training.options import describe_options

        super().format_epilog(ctx, formatter)
        registry = host().registry
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


@click.command(cls=_TrainCommand)
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
    from studio.errors import UserError
    from studio.errors import echo as quoted
    from studio.training import TrainConfig, TrainingInterrupted
    from studio.training import train as run_training

    opts = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise UserError(f"--option {quoted(option)}: expected KEY=VALUE, e.g. --option size=32")
        opts[key.strip()] = value.strip()
    trainer = host().registry.trainer(generator)
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
                     f"{display(stopped.out / 'training')}; continue with the same command plus --resume", err=True)
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
        echo(f"weights: {display(lora)} (use `loras: [{{path: {display(lora)}}}]`)")
    else:
        echo(f"weights: {display(result.out)} (use `model: {display(result.out)}`)")

