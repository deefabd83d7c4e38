"""`studio import`: another tool's image (or its generation text) into a Studio pipeline."""

from __future__ import annotations

from pathlib import Path

import click

from studio.cli.common import echo, print_or_write, refuse_existing
from studio.errors import UserError


@click.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the YAML here (default: print it).")
@click.option("--model", help="The model to use instead of the one the infotext names (a path, or 'default').")
@click.option("--image", type=click.Path(path_type=Path),
              help="Image-to-image: the picture the original started from (an infotext does not name it).")
def import_(source, output, model, image) -> None:
    """Turn another tool's generation parameters into a pipeline: AUTOMATIC1111's, from
    a PNG's `parameters` text, a JPEG's or WebP's EXIF comment, or a text file of them;
    ComfyUI's graph, from its PNG's `prompt` text or an API-format .json. What Studio has
    no equivalent for is listed, by name, here and in the file."""
    from studio.runs.provenance import shown

    refuse_existing(output)  # before any reading: nothing is read for an answer that cannot be written
    where = shown(source)
    imported = _imported(source, where, model, image)
    print_or_write(output, as_yaml(imported, where))
    for line in imported.dropped:
        echo(f"not imported (no Studio equivalent): {shown(line)}", err=output is None)
    for line in imported.notes:
        echo(f"note: {shown(line)}", err=output is None)


def _imported(source: Path, where: str, model: str | None, image: Path | None):
    """The pipeline of what the file holds: A1111's parameters (a PNG's `parameters`
    chunk, EXIF, a text file) or ComfyUI's graph (a PNG's `prompt` chunk, a JSON file)."""
    from studio.interop.a1111 import parse
    from studio.interop.imagetext import read_texts
    from studio.interop.importing import from_infotext

    kind, texts = read_texts(source, ("parameters", "prompt"))
    name = _pipeline_name(source)
    graph = texts.get("prompt") if kind == "png" else texts.get("parameters", "")
    if "parameters" in texts and not (kind == "text" and graph.lstrip().startswith("{")):
        return _same_format(from_infotext(parse(texts["parameters"], where), where, name, model=model, image=image),
                            kind)
    if graph and graph.lstrip().startswith("{"):
        from studio.interop.comfyui import from_graph

        return _same_format(from_graph(graph, where, name, source.parent, model=model, image=image), kind)
    what = {"png": "no `parameters` or `prompt` text chunk", "jpeg": "no EXIF UserComment",
            "webp": "no EXIF UserComment"}.get(kind, "no text")
    raise UserError(f"{where}: {what}; give an image AUTOMATIC1111 (or Forge, or Studio) or ComfyUI saved with its "
                    "generation parameters, a text file of A1111's, or a graph ComfyUI saved in API format")


def _same_format(imported, kind: str):
    """An import from a JPEG or WebP writes its images in that format (the pipeline's
    `format:`), so that running it gives the same kind of file; PNG is the default and a
    text file says nothing, so neither writes one."""
    if kind in ("jpeg", "webp"):
        pipeline = imported.pipeline
        imported.pipeline = {"name": pipeline["name"], "format": kind,
                             **{key: value for key, value in pipeline.items() if key != "name"}}
        imported.notes.append(f"format: {kind}, as the imported file; its quality is not known (a {kind.upper()} does "
                              "not record it): Studio's default, 90, is used; set quality: to change it")
    return imported


def _pipeline_name(source: Path) -> str:
    """The file's name, in the characters a pipeline name takes."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", source.stem).strip("-._")[:64]
    return name if name and name[0].isalnum() else "imported"


def as_yaml(imported, where: str) -> str:
    """The pipeline as YAML under a header of comments: where it came from, what was not
    imported, the notes. Every value read from the file is escaped (one line each)."""
    import yaml

    from studio.runs.provenance import shown
    from studio.runs.reopen import _dumpers

    studios = any(note.startswith("Version: studio") for note in imported.notes)
    if studios:
        seeds = "# made by Studio: the same seed gives the same picture"
    elif imported.source.startswith("ComfyUI"):
        seeds = ("# ComfyUI samples with k-diffusion's samplers, Studio with diffusers': the same seed gives another "
                 "picture")
    else:
        seeds = "# A1111 draws its noise on the GPU by default, Studio on the CPU: the same seed gives another picture"
    header = [f"# imported from {where} ({imported.source})", seeds]
    header += [f"# not imported (no Studio equivalent): {shown(line)}" for line in imported.dropped]
    header += [f"# note: {shown(line)}" for line in imported.notes]
    body = yaml.dump(imported.pipeline, Dumper=_dumpers()[0], sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + body.encode("utf-8", "backslashreplace").decode("utf-8")
