"""`studio import`: another tool's image (or its generation text) into a Studio pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import click

from studio.cli.common import echo
from studio.errors import UserError


@click.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the YAML here (default: print it).")
@click.option("--model", help="The model to use instead of the one the infotext names (a path, or 'default').")
@click.option("--image", type=click.Path(path_type=Path),
              help="Image-to-image: the picture the original started from (an infotext does not name it).")
def import_(source, output, model, image) -> None:
    """Turn AUTOMATIC1111's generation parameters into a pipeline: from a PNG's
    `parameters` text, a JPEG's or WebP's EXIF comment, or a text file of them. What
    Studio has no equivalent for is listed, by name, here and in the file."""
    from studio.execute.artifacts import atomic_write, os_error_text
    from studio.interop.a1111 import parse
    from studio.interop.imagetext import read_texts
    from studio.interop.importing import from_infotext
    from studio.runs.provenance import shown

    def refuse_existing() -> None:
        if os.path.lexists(output):
            raise UserError(f"{shown(output)} exists; give another -o, or remove it first")

    if output is not None:
        refuse_existing()  # before any reading: nothing is read for an answer that cannot be written
    where = shown(source)
    kind, texts = read_texts(source, ("parameters", "prompt"))
    if "parameters" not in texts:
        what = {"png": "no `parameters` text chunk", "jpeg": "no EXIF UserComment",
                "webp": "no EXIF UserComment"}.get(kind, "no text")
        comfy = " (it has ComfyUI's `prompt` graph, which Studio does not import yet)" if "prompt" in texts else ""
        raise UserError(f"{where}: {what}{comfy}; give an image AUTOMATIC1111 (or Forge, or Studio) saved with its "
                        "generation parameters, or a text file of them")
    imported = from_infotext(parse(texts["parameters"], where), where, _pipeline_name(source),
                             model=model, image=image)
    text = as_yaml(imported, where)
    if output is None:
        echo(text.rstrip("\n"))
    else:
        refuse_existing()
        try:
            atomic_write(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        except OSError as exc:  # nothing is left half written: the temporary file is removed
            raise UserError(os_error_text(exc, shown(output))) from None
        echo(f"wrote {shown(output)}")
    for line in imported.dropped:
        echo(f"not imported (no Studio equivalent): {shown(line)}", err=output is None)
    for line in imported.notes:
        echo(f"note: {shown(line)}", err=output is None)


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
    header = [f"# imported from {where} (AUTOMATIC1111 parameters)",
              "# made by Studio: the same seed gives the same picture" if studios else
              "# A1111 draws its noise on the GPU by default, Studio on the CPU: the same seed gives another picture"]
    header += [f"# not imported (no Studio equivalent): {shown(line)}" for line in imported.dropped]
    header += [f"# note: {shown(line)}" for line in imported.notes]
    body = yaml.dump(imported.pipeline, Dumper=_dumpers()[0], sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + body.encode("utf-8", "backslashreplace").decode("utf-8")
