"""Re-opening work from any output: the pipeline that made a PNG, JPEG, WebP, WAV or MIDI
file (it travels inside the file, compressed), a manifest.json or a run directory, to run
it again (`studio run image.png`) or write it out (`studio export image.png -o p.yaml`).

Every file Studio writes carries the whole resolved pipeline (seed and `--set` values
applied), the folder its relative input files were read from, and which step and item
the file is, as ComfyUI does for its PNGs. What is read back is untrusted, and bounded
at every stage before the work of the next one: the file and its provenance text by
studio.runs.provenance, then the pipeline in it: base64 of at most MAX_ENCODED characters,
inflated to at most a pipeline file's size (2 MB), then held to a pipeline file's limits
(64 levels of nesting, 30,000 values, text of 2 MB) by an iterative walk before anything
dumps, parses or validates it.

Every refusal is a UserError naming the file the user gave.
"""

from __future__ import annotations

import base64
import json
import binascii
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import UserError, clip
from studio.pipeline.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_WRITTEN_VALUES
from studio.runs.provenance import MAX_ENCODED, json_or_refuse, kind_of, read_provenance_strict, shown

KEY = "pipeline_source"  # in a file's provenance: base64 of the zlib-compressed JSON pipeline
MAX_DECODED = MAX_BYTES  # a pipeline file's own limit (2 MB), applied while inflating
MAX_FIELD = 4096  # the step, the item and the folder a provenance names (PATH_MAX)
MEDIA = (".png", ".jpg", ".jpeg", ".webp", ".wav", ".mid", ".midi")


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
    """The pipeline in a provenance's KEY, held to a pipeline file's limits; `where`
    names the file the user gave."""
    what = f"{where}: its embedded pipeline"
    if not isinstance(blob, str):
        raise UserError(f"{what} is not one Studio wrote (a {kind_of(blob)}, not base64 text); the file is damaged "
                        "or was made by another program")
    if len(blob) > MAX_ENCODED:
        raise UserError(f"{what} is {len(blob):,} characters of base64; a pipeline file is at most "
                        f"{MAX_DECODED // 1_000_000} MB, which Studio writes in {MAX_ENCODED:,} at most. Not read")
    try:
        packed = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UserError(f"{what} cannot be read: not valid base64 ({clip(str(exc), 120)}); the file is damaged") from None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(packed, MAX_DECODED + 1)
    except zlib.error as exc:
        raise UserError(f"{what} cannot be read: it does not decompress ({clip(str(exc), 120)}); the file is damaged") from None
    if len(raw) > MAX_DECODED or inflater.unconsumed_tail:
        raise UserError(f"{what} is larger than {MAX_DECODED // 1_000_000} MB once decompressed; a pipeline file is "
                        f"at most {MAX_DECODED // 1_000_000} MB. Not read (a decompression bomb?)")
    if not inflater.eof:
        raise UserError(f"{what} cannot be read: it is cut short (its compressed data ends early); the file is damaged")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} cannot be read: not UTF-8 text (byte {exc.start:,}); the file is damaged") from None
    data = json_or_refuse(text, f"{what} cannot be read: not valid JSON")
    return check_pipeline(data, what)


def check_pipeline(data: Any, what: str) -> dict[str, Any]:
    """`data` if it is a pipeline within a pipeline file's limits (a mapping with a list
    of steps, at most MAX_DEPTH levels deep, MAX_WRITTEN_VALUES values, MAX_BYTES of
    text, keys that are text), walked without recursion; else a UserError saying `what`."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        got = f"a {kind_of(data)}" if not isinstance(data, dict) else "a mapping without a list of `steps:`"
        raise UserError(f"{what} is not a pipeline (got {got})")
    stack: list[tuple[Any, int]] = [(data, 0)]
    values = size = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if isinstance(value, dict):
            if depth >= MAX_DEPTH and value:
                raise UserError(f"{what} is nested more than {MAX_DEPTH} levels deep (lists and mappings), as a "
                                "pipeline file may not be; a pipeline needs a handful. Not read")
            for key, child in value.items():
                if not isinstance(key, str):
                    raise UserError(f"{what} has a mapping key that is a {kind_of(key)}, not text")
                values += 1
                size += len(key) + 4
                stack.append((child, depth + 1))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH and value:
                raise UserError(f"{what} is nested more than {MAX_DEPTH} levels deep (lists and mappings), as a "
                                "pipeline file may not be; a pipeline needs a handful. Not read")
            stack.extend((child, depth + 1) for child in value)
            size += 2
        elif isinstance(value, str):
            size += len(value) + 3
        elif value is None or isinstance(value, (bool, float)):
            size += 8
        elif isinstance(value, int):
            size += 2 + value.bit_length() // 3  # digits, about
        else:
            raise UserError(f"{what} holds a {kind_of(value)}, which a pipeline cannot")
        if values > MAX_WRITTEN_VALUES:
            raise UserError(f"{what} holds more than {MAX_WRITTEN_VALUES:,} values (lists, mappings and scalars), "
                            "as a pipeline file may not; a pipeline holds a few hundred to a few thousand. Not read")
        if size > MAX_DECODED:
            raise UserError(f"{what} is larger than {MAX_DECODED // 1_000_000} MB of text, as a pipeline file may "
                            "not be. Not read")
    return data


def reopen(path: Path) -> Reopened:
    """The pipeline behind an output file, a manifest or a run directory."""
    path = Path(path)
    if path.is_dir() or path.name == "manifest.json":
        return _from_manifest(path)
    suffix = path.suffix.lower()
    if suffix not in MEDIA:
        raise UserError(f"{shown(path)}: give a pipeline (.yaml), a file Studio made (.png, .jpg, .webp, .wav, .mid), a "
                        "manifest.json or a run directory")
    provenance = read_provenance_strict(path)
    where = shown(path)
    if provenance is None or KEY not in provenance:
        raise UserError(f"{where}: carries no Studio pipeline (made by another program, or by a Studio that did not "
                        "embed it); its run folder's manifest.json may still have it")
    step = _field(provenance, "step", where)
    item = _field(provenance, "item", where)
    return Reopened(decode(provenance[KEY], where), _base_dir_beside(path), step, item)


def _from_manifest(path: Path) -> Reopened:
    from studio.execute.manifest import read_manifest

    manifest = read_manifest(path)  # bounded, regular files only, damage in words
    where = shown(path if path.name == "manifest.json" else path / "manifest.json")
    pipeline = manifest.get("resolved_pipeline")
    if pipeline is None:
        raise UserError(f"{where}: its manifest records no pipeline")
    check_pipeline(pipeline, f"{where}: the pipeline its manifest records")
    base = manifest.get("base_dir")
    if base is not None and not isinstance(base, str):
        raise UserError(f"{where}: its manifest's base_dir is not a folder's path (got {_echo(base)}); the manifest is "
                        "damaged. Remove base_dir to read the pipeline's input files from here")
    # a path this machine cannot use (relative, another system's): looked for here instead
    return Reopened(pipeline, _folder(base))


def _field(provenance: dict[str, Any], name: str, where: str) -> str | None:
    value = provenance.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise UserError(f"{where}: its provenance's {name!r} is not a name Studio writes (got {_echo(value)}); the "
                        "file is damaged")
    return value


def _folder(value: Any) -> Path | None:
    """A base_dir as a Path: an absolute path of sane length without NUL, else None."""
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD or "\0" in value:
        return None
    path = Path(value)
    return path if path.is_absolute() else None


def _base_dir_beside(path: Path) -> Path | None:
    """Where the inputs of the run a file sits in were read from: its run folder's
    manifest says (RUN/<item>/<file>); None for a file moved out of its run, and for a
    manifest there that cannot say (damaged: the file itself is what was asked for)."""
    run = Path(os.path.abspath(path)).parent.parent  # "x.png" given in an item's folder: its run
    try:
        if not (run / "manifest.json").is_file():
            return None
        from studio.execute.manifest import read_manifest

        base = read_manifest(run).get("base_dir")
    except Exception:  # a hint only: whatever a damaged neighbour raises
        return None
    return _folder(base)


def as_yaml(reopened: Reopened, origin: Path) -> str:
    """The pipeline as a YAML file, with a header saying where it came from. Every
    value read from the file is escaped: the header is comments, one line each."""
    import yaml

    where = (f" (step '{shown(reopened.step or '')}', item '{shown(reopened.item)}')"
             if reopened.item else "")
    header = (f"# re-opened from {shown(origin)}{where}\n"
              + (f"# its relative input files were in {shown(reopened.base_dir)}\n" if reopened.base_dir else ""))
    # libyaml's emitter when PyYAML has it (fast); the Python one escapes what libyaml
    # cannot encode (a lone surrogate, which a pipeline file may write as "\uD800")
    for dumper in _dumpers():
        try:
            body = yaml.dump(reopened.pipeline, Dumper=dumper, sort_keys=False, allow_unicode=True)
            break
        except (yaml.YAMLError, RecursionError, ValueError) as exc:  # bounded by check_pipeline; a last guard
            error = exc
    else:
        raise UserError(f"{shown(origin)}: its pipeline cannot be written as YAML ({clip(str(error), 120)})") from None
    # a lone surrogate in a string is escaped by the emitter; make sure the text encodes
    return header + body.encode("utf-8", "backslashreplace").decode("utf-8")


def _dumpers() -> list[type]:
    """SafeDumpers that quote every string which YAML 1.1 or Studio's YAML 1.2 reading
    (studio.pipeline.yamlfile) would take for something else: "1e5" stays text, not 100000.0."""
    import yaml

    from studio.pipeline.yamlfile import _Loader

    out = []
    for base in (getattr(yaml, "CSafeDumper", None), yaml.SafeDumper):
        if base is None:
            continue
        table = {first: list(entries) for first, entries in base.yaml_implicit_resolvers.items()}
        for first, entries in _Loader.yaml_implicit_resolvers.items():
            table.setdefault(first, []).extend(entries)
        out.append(type(f"Reopen{base.__name__}", (base,), {"yaml_implicit_resolvers": table}))
    return out


# --- small helpers ------------------------------------------------------------------------


def _echo(value: Any) -> str:
    if isinstance(value, str):
        return f"'{shown(clip(value, 120))}'"
    if isinstance(value, (dict, list)):
        return f"a {kind_of(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a number of many digits"
    return clip(repr(value), 80)
