"""`studio eval`: measure a run's outputs, or a folder, against a reference set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from studio import UserError


@click.command("eval")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--against", "reference", type=click.Path(path_type=Path), default=None,
              help="The reference set: a folder of real examples (sub-folders as classes), another run, or "
                   "sklearn:digits / emoji:noto.")
@click.option("--step", default=None, help="The step of SOURCE to measure (default: the one with the most items).")
@click.option("--reference-step", default=None, help="The step of a reference run to compare with.")
@click.option("--features", default="default", show_default=True,
              help="Image feature network: 'default' or a directory from `studio train eval.metrics`.")
@click.option("--lm", default="default", show_default=True,
              help="Language model for perplexity: 'default' (text.gpt's) or a causal LM directory.")
@click.option("--vae", default="default", show_default=True,
              help="Audio VAE for the latent Fréchet distance: 'default' (audio.vae's), a directory, or 'none'.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the results here (a run's always go to RUN/eval-STEP.json, its manifest and gallery).")
def eval_command(source: Path, reference: Path | None, step: str | None, reference_step: str | None, features: str,
                 lm: str, vae: str, json_out: Path | None) -> None:
    """Measure what a generator made: SOURCE is a run directory (its manifest says what
    each item is) or a folder of files. Images: FID, KID, precision, recall, class
    coverage and a mode-collapse check, in Studio's own feature network. MIDI: muspy's
    metrics. Text: perplexity, distinct-n, repetition. Audio: log-mel and audio-VAE
    Fréchet distances."""
    from studio_eval.collect import collect
    from studio_eval.evaluate import evaluate

    generated = collect(source, step=step)
    against = collect(reference, step=reference_step, family=generated.family()) if reference else None
    result = evaluate(generated, against, features=_model(features), lm=_model(lm), vae=_model(vae))
    _print(result)
    if generated.step:  # a run: the numbers join its manifest and gallery
        from studio import record_evaluation
        from studio_eval.metrics_step import summary

        written = record_evaluation(source, generated.step, result, summary(result["metrics"]))
        click.echo(f"written: {written} (and the run's manifest.json and gallery.html)")
    if json_out:
        tmp = json_out.with_name(f".{json_out.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(json_out)  # never a half-written file
        click.echo(f"written: {json_out}")


def _model(value: str) -> str:
    """'default'/'none', or a path made absolute (and checked) from the working directory."""
    if value in ("default", "none"):
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(f"{value!r}: no such directory; give 'default' or a model directory")
    return str(path.resolve())


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{result['family']}[/bold]: {escape(result['generated'])}", soft_wrap=True)
    if result["reference"]:
        console.print(f"against {escape(result['reference'])}", soft_wrap=True)
    table = Table("metric", "value")
    for name, value in _flat(result["metrics"]):
        table.add_row(escape(name), escape(f"{value:.4g}" if isinstance(value, float) else str(value)))
    console.print(table)
    console.print(result["note"], style="dim", soft_wrap=True)


def _flat(metrics: dict, prefix: str = ""):
    for name, value in metrics.items():
        if isinstance(value, dict) and name not in ("class_counts",):
            yield from _flat(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            yield f"{prefix}{name}", ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            yield f"{prefix}{name}", ", ".join(f"{k} {v}" for k, v in value.items())
        else:
            yield f"{prefix}{name}", value
