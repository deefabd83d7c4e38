"""Re-opening work from any output: the pipeline that made a PNG, WAV or MIDI file (it
travels inside the file, compressed), a manifest.json or a run directory, to run it
again (`studio run image.png`) or write it out (`studio export image.png -o p.yaml`).

Every file Studio writes carries the whole resolved pipeline (seed and `--set` values
applied), the folder its relative input files were read from, and which step and item
the file is, as ComfyUI does for its PNGs. What is read back is untrusted: it is
bounded before it is decompressed and goes through the same validation as a pipeline
file.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import UserError

KEY = "pipeline_source"  # in a file's provenance: base64 of the zlib-compressed JSON pipeline
MAX_ENCODED = 4 * 2**20  # a pipeline is kilobytes; a bigger blob is not one Studio wrote
MAX_DECODED = 16 * 2**20
MEDIA = (".png", ".wav", ".mid", ".midi")


@dataclass
class Reopened:
    pipeline: dict[str, Any]  # the resolved pipeline, as the run's manifest records it
    base_dir: Path | None  # where its relative input files were read from
    step: str | None = None  # which step and item the file is (None for a manifest)
    item: str | None = None


def encode(pipeline: dict[str, Any]) -> str:
    text = json.dumps(pipeline, separators=(",", ":"), default=str)  # in the order it was written
    return base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")


def decode(blob: Any, where: str) -> dict[str, Any]:
    if not isinstance(blob, str) or len(blob) > MAX_ENCODED:
        raise UserError(f"{where}: its embedded pipeline is not one Studio wrote")
    try:
        packed = base64.b64decode(blob, validate=True)
        inflater = zlib.decompressobj()
        text = inflater.decompress(packed, MAX_DECODED)
        if inflater.unconsumed_tail:
            raise ValueError("larger than 16 MB once decompressed")
        data = json.loads(text)
    except (binascii.Error, zlib.error, ValueError, RecursionError) as exc:
        raise UserError(f"{where}: its embedded pipeline cannot be read ({str(exc)[:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise UserError(f"{where}: its embedded pipeline is not a pipeline (no steps)")
    return data


def reopen(path: Path) -> Reopened:
    """The pipeline behind an output file, a manifest or a run directory."""
    if path.is_dir() or path.name == "manifest.json":
        from studio.manifest import read_manifest

        manifest = read_manifest(path)
        pipeline = manifest.get("resolved_pipeline")
        if not isinstance(pipeline, dict) or not isinstance(pipeline.get("steps"), list):
            raise UserError(f"{path}: its manifest records no pipeline")
        base = manifest.get("base_dir")
        return Reopened(pipeline, Path(base) if isinstance(base, str) else None)
    if path.suffix.lower() not in MEDIA:
        raise UserError(f"{path}: give a pipeline (.yaml), a file Studio made (.png, .wav, .mid), a manifest.json "
                        "or a run directory")
    from studio.artifacts import read_provenance

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        provenance = read_provenance(path)
    except Exception as exc:  # a damaged or foreign file: whatever its reader raised
        raise UserError(f"{path}: cannot be read as {path.suffix.lower()[1:].upper()} ({str(exc)[:200]})") from None
    if not isinstance(provenance, dict) or KEY not in provenance:
        raise UserError(f"{path}: carries no Studio pipeline (made by another program, or by a Studio that did not "
                        "embed it); its run folder's manifest.json may still have it")
    return Reopened(decode(provenance[KEY], str(path)), _base_dir_beside(path), provenance.get("step"),
                    provenance.get("item"))


def _base_dir_beside(path: Path) -> Path | None:
    """Where the inputs of the run a file sits in were read from: its run folder's
    manifest says (RUN/<item>/<file>); None for a file moved out of its run."""
    manifest = path.parent.parent / "manifest.json"
    if not manifest.is_file():
        return None
    from studio.manifest import read_manifest

    try:
        base = read_manifest(path.parent.parent).get("base_dir")
    except UserError:
        return None
    return Path(base) if isinstance(base, str) else None


def as_yaml(reopened: Reopened, origin: Path) -> str:
    """The pipeline as a YAML file, with a header saying where it came from."""
    import yaml

    where = f" (step {reopened.step!r}, item {reopened.item!r})" if reopened.item else ""
    header = (f"# re-opened from {origin}{where}\n"
              + (f"# its relative input files were in {reopened.base_dir}\n" if reopened.base_dir else ""))
    return header + yaml.safe_dump(reopened.pipeline, sort_keys=False, allow_unicode=True)
