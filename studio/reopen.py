"""Re-opening work from any output: the pipeline that made a PNG, WAV or MIDI file (it
travels inside the file, compressed), a manifest.json or a run directory, to run it
again (`studio run image.png`) or write it out (`studio export image.png -o p.yaml`).

Every file Studio writes carries the whole resolved pipeline (seed and `--set` values
applied), the folder its relative input files were read from, and which step and item
the file is, as ComfyUI does for its PNGs. What is read back is untrusted, and bounded
at every stage before the work of the next one:

- the file: a regular file (never a pipe or a device) of a size its format allows,
  walked chunk by chunk (PNG, WAV) or read whole (MIDI, at most 2 MB), a bounded number
  of chunks, never decoding pixels or samples;
- the provenance text: at most MAX_PROVENANCE bytes, then JSON (a damaged one, or one
  nested too deep to parse, is refused in words), each field checked by type;
- the pipeline in it: base64 of at most MAX_ENCODED characters, inflated to at most a
  pipeline file's size (2 MB), then held to a pipeline file's limits (64 levels of
  nesting, 30,000 values, text of 2 MB) by an iterative walk before anything dumps,
  parses or validates it.

Every refusal is a UserError naming the file the user gave.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from studio.errors import UserError, clip
from studio.sniff import MAX_INPUT_BYTES, MAX_MIDI_BYTES, MAX_PNG_CHUNKS
from studio.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_WRITTEN_VALUES

KEY = "pipeline_source"  # in a file's provenance: base64 of the zlib-compressed JSON pipeline
MAX_DECODED = MAX_BYTES  # a pipeline file's own limit (2 MB), applied while inflating
# zlib at worst adds a few bytes per 16 KB block; base64 makes 4 characters of 3 bytes
MAX_ENCODED = 4 * (MAX_DECODED + MAX_DECODED // 1000 + 1024) // 3 + 4
MAX_PROVENANCE = MAX_ENCODED + 2**20  # the encoded pipeline, plus the item's parameters
MAX_FIELD = 4096  # the step, the item and the folder a provenance names (PATH_MAX)
MEDIA = (".png", ".wav", ".mid", ".midi")
# what a re-opened file may weigh: the largest a format lets Studio write and read
MAX_FILE_BYTES = {".png": MAX_INPUT_BYTES, ".wav": 2**32 + 8, ".mid": MAX_MIDI_BYTES, ".midi": MAX_MIDI_BYTES}
MAX_WAV_CHUNKS = 1_000  # a WAV has a handful (fmt, LIST, data, a few more)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@dataclass
class Reopened:
    pipeline: dict[str, Any]  # the resolved pipeline, as the run's manifest records it
    base_dir: Path | None  # where its relative input files were read from
    step: str | None = None  # which step and item the file is (None for a manifest)
    item: str | None = None


def encode(pipeline: dict[str, Any]) -> str:
    text = json.dumps(pipeline, separators=(",", ":"), default=str)  # in the order it was written
    return base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")


def shown(path: Path | str) -> str:
    """A path (or a field) as a message or a YAML comment repeats it: one line, control
    characters and undecodable bytes as escapes, clipped."""
    text = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return clip(text, 300)


def decode(blob: Any, where: str) -> dict[str, Any]:
    """The pipeline in a provenance's KEY, held to a pipeline file's limits; `where`
    names the file the user gave."""
    what = f"{where}: its embedded pipeline"
    if not isinstance(blob, str):
        raise UserError(f"{what} is not one Studio wrote (a {_kind(blob)}, not base64 text); the file is damaged "
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
    data = _json(text, f"{what} cannot be read: not valid JSON")
    return check_pipeline(data, what)


def check_pipeline(data: Any, what: str) -> dict[str, Any]:
    """`data` if it is a pipeline within a pipeline file's limits (a mapping with a list
    of steps, at most MAX_DEPTH levels deep, MAX_WRITTEN_VALUES values, MAX_BYTES of
    text, keys that are text), walked without recursion; else a UserError saying `what`."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        got = f"a {_kind(data)}" if not isinstance(data, dict) else "a mapping without a list of `steps:`"
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
                    raise UserError(f"{what} has a mapping key that is a {_kind(key)}, not text")
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
            raise UserError(f"{what} holds a {_kind(value)}, which a pipeline cannot")
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
        raise UserError(f"{shown(path)}: give a pipeline (.yaml), a file Studio made (.png, .wav, .mid), a "
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
    from studio.manifest import read_manifest

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
        from studio.manifest import read_manifest

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
    (studio.yamlfile) would take for something else: "1e5" stays text, not 100000.0."""
    import yaml

    from studio.yamlfile import _Loader

    out = []
    for base in (getattr(yaml, "CSafeDumper", None), yaml.SafeDumper):
        if base is None:
            continue
        table = {first: list(entries) for first, entries in base.yaml_implicit_resolvers.items()}
        for first, entries in _Loader.yaml_implicit_resolvers.items():
            table.setdefault(first, []).extend(entries)
        out.append(type(f"Reopen{base.__name__}", (base,), {"yaml_implicit_resolvers": table}))
    return out


# --- reading the provenance a file carries ---------------------------------------------


def read_provenance_strict(path: Path) -> dict[str, Any] | None:
    """The provenance Studio embedded in a PNG, WAV or MIDI file: a dict, or None when
    the file carries none; a UserError naming `path` for anything else (not a regular
    file, too large, not the format its name says, damaged, not a JSON object)."""
    suffix = Path(path).suffix.lower()
    limit = MAX_FILE_BYTES.get(suffix)
    if limit is None:
        return None
    where = shown(path)
    with _open_regular(path, limit, where) as (f, size):
        if suffix == ".png":
            text = _png_text(f, size, where)
        elif suffix == ".wav":
            text = _wav_comment(f, size, where)
        else:
            text = _midi_text(f, size, where)
    if text is None:
        return None
    data = _json(text, f"{where}: its Studio provenance is not valid JSON")
    if not isinstance(data, dict):
        raise UserError(f"{where}: its Studio provenance is a {_kind(data)}, not a JSON object; the file is damaged")
    return data


class _open_regular:
    """`with _open_regular(path, limit, where) as (f, size)`: the file opened without
    blocking, refused unless it is a regular file of at most `limit` bytes."""

    def __init__(self, path: Path, limit: int, where: str):
        self.path, self.limit, self.where = path, limit, where
        self.file: BinaryIO | None = None

    def __enter__(self) -> tuple[BinaryIO, int]:
        where = self.where
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise UserError(f"{where}: no such file") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"{where}: not a regular file (a folder, pipe or device); give a PNG, WAV or MIDI "
                                "file Studio made")
            if st.st_size > self.limit:
                raise UserError(f"{where}: is {st.st_size / 2**20:,.1f} MB; a {Path(self.path).suffix.lower()[1:].upper()} "
                                f"file is re-opened up to {self.limit / 2**20:,.0f} MB, so this one is not read")
            os.set_blocking(fd, True)
            self.file = os.fdopen(fd, "rb")
        except BaseException:
            if self.file is None:
                os.close(fd)
            raise
        return self.file, st.st_size

    def __exit__(self, kind, exc, tb) -> None:
        if self.file is not None:
            self.file.close()
        if isinstance(exc, OSError):  # an I/O error while walking the file
            raise UserError(f"{self.where}: cannot be read ({exc.strerror or exc})") from None


def _read(f: BinaryIO, n: int, where: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise UserError(f"{where}: ends inside {what} (cut short?); the file is damaged")
    return data


def _png_text(f: BinaryIO, size: int, where: str) -> str | None:
    """The text of the PNG's first `studio` text chunk (tEXt, zTXt or iTXt), or None."""
    if f.read(8) != _PNG_SIGNATURE:
        raise UserError(f"{where}: not a PNG file (no PNG signature)")
    position = 8
    for _ in range(MAX_PNG_CHUNKS):
        head = f.read(8)
        if not head:
            return None  # no IEND: whatever the pixels, no provenance was found
        if len(head) < 8:
            raise UserError(f"{where}: ends inside a chunk header (cut short?); the file is damaged")
        length, kind = struct.unpack(">I4s", head)
        end = position + 8 + length + 4
        if end > size:
            raise UserError(f"{where}: its {_chunk_name(kind)} chunk runs past the end of the file (cut short?); "
                            "the file is damaged")
        if kind == b"IEND":
            return None
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword = f.read(min(length, 80)).split(b"\0", 1)[0]
            if keyword == b"studio":
                if length > MAX_PROVENANCE:
                    raise UserError(f"{where}: its studio text chunk is {length / 2**20:,.1f} MB; the provenance "
                                    f"Studio writes is at most {MAX_PROVENANCE / 2**20:,.1f} MB. Not read")
                f.seek(position + 8)
                body = _read(f, length, where, "its studio text chunk")
                crc = _read(f, 4, where, "its studio text chunk")
                if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
                    raise UserError(f"{where}: its studio text chunk fails its checksum (CRC); the file is damaged")
                return _png_chunk_text(kind, body, where)
        f.seek(end)
        position = end
    raise UserError(f"{where}: has more than {MAX_PNG_CHUNKS:,} chunks; a real PNG has a few hundred. Not read")


def _png_chunk_text(kind: bytes, body: bytes, where: str) -> str:
    rest = body.split(b"\0", 1)[1] if b"\0" in body else b""
    damaged = f"{where}: its studio {kind.decode('latin-1')} chunk is damaged"
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        if rest[:1] != b"\0":
            raise UserError(f"{damaged} (unknown compression method)")
        return _inflate(rest[1:], where, kind).decode("latin-1")
    # iTXt: compression flag and method, language tag, translated keyword, UTF-8 text
    if len(rest) < 2 or rest[1:2] != b"\0" or rest[:1] not in (b"\0", b"\1"):
        raise UserError(f"{damaged} (bad compression fields)")
    compressed = rest[:1] == b"\1"
    parts = rest[2:].split(b"\0", 2)
    if len(parts) != 3:
        raise UserError(f"{damaged} (no language tag or translated keyword)")
    text = _inflate(parts[2], where, kind) if compressed else parts[2]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{damaged} (not UTF-8 at byte {exc.start:,})") from None


def _inflate(data: bytes, where: str, kind: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_PROVENANCE + 1)
    except zlib.error as exc:
        raise UserError(f"{where}: its studio {kind.decode('latin-1')} chunk cannot be decompressed "
                        f"({clip(str(exc), 120)}); the file is damaged") from None
    if len(raw) > MAX_PROVENANCE or inflater.unconsumed_tail:
        raise UserError(f"{where}: its studio text chunk is larger than {MAX_PROVENANCE / 2**20:,.1f} MB once "
                        "decompressed; the provenance Studio writes is smaller. Not read (a decompression bomb?)")
    if not inflater.eof:
        raise UserError(f"{where}: its studio {kind.decode('latin-1')} chunk is cut short; the file is damaged")
    return raw


def _chunk_name(kind: bytes) -> str:
    return kind.decode("latin-1") if re.fullmatch(rb"[A-Za-z]{4}", kind) else repr(kind)


def _wav_comment(f: BinaryIO, size: int, where: str) -> str | None:
    """The comment (LIST INFO ICMT) of a RIFF WAVE file when it is JSON text, or None."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        kind = "an RF64 file (Studio writes its pipeline into RIFF WAV files)" if head[:4] == b"RF64" else \
            "not a WAV file (no RIFF WAVE header)"
        raise UserError(f"{where}: {kind}")
    position = 12
    for _ in range(MAX_WAV_CHUNKS):
        head = f.read(8)
        if len(head) < 8:
            return None
        kind, length = head[:4], struct.unpack("<I", head[4:])[0]
        end = position + 8 + length + (length & 1)
        if kind == b"LIST" and length >= 4:
            if position + 8 + length > size:
                raise UserError(f"{where}: its LIST chunk runs past the end of the file (cut short?); the file is "
                                "damaged")
            if _read(f, 4, where, "its LIST chunk") == b"INFO":
                found = _info_comment(f, position + 12, position + 8 + length, where)
                if found is not None:
                    return found
        f.seek(end)
        position = end
    raise UserError(f"{where}: has more than {MAX_WAV_CHUNKS:,} chunks; a real WAV has a handful. Not read")


def _info_comment(f: BinaryIO, start: int, stop: int, where: str) -> str | None:
    position = start
    for _ in range(MAX_WAV_CHUNKS):
        if position + 8 > stop:
            return None
        f.seek(position)
        head = _read(f, 8, where, "its LIST INFO chunk")
        kind, length = head[:4], struct.unpack("<I", head[4:])[0]
        if position + 8 + length > stop:
            raise UserError(f"{where}: its LIST INFO chunk is damaged (a field runs past its end)")
        if kind == b"ICMT":
            if length > MAX_PROVENANCE:
                raise UserError(f"{where}: its comment is {length / 2**20:,.1f} MB; the provenance Studio writes is at "
                                f"most {MAX_PROVENANCE / 2**20:,.1f} MB. Not read")
            raw = _read(f, length, where, "its comment").rstrip(b"\0")
            if not raw.startswith(b"{"):
                return None  # a comment, not Studio's provenance
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{where}: its comment is not UTF-8 text (byte {exc.start:,}); the file is "
                                "damaged") from None
        position += 8 + length + (length & 1)
    raise UserError(f"{where}: its LIST INFO chunk has more than {MAX_WAV_CHUNKS:,} fields. Not read")


_TEXT_EVENT = re.compile(rb"\xff\x01((?:[\x80-\xff]{0,3})[\x00-\x7f])studio:", re.DOTALL)


def _midi_text(f: BinaryIO, size: int, where: str) -> str | None:
    """The text of the MIDI file's first `studio:` text meta event (FF 01), or None. The
    file is at most MAX_MIDI_BYTES; the event is found by its bytes, in linear time."""
    data = f.read(size + 1)
    if len(data) > size or not data.startswith(b"MThd"):
        if not data.startswith(b"MThd"):
            raise UserError(f"{where}: not a MIDI file (no MThd header)")
        raise UserError(f"{where}: grew while it was read; not read")
    for match in _TEXT_EVENT.finditer(data):
        length = 0
        for byte in match.group(1):
            length = (length << 7) | (byte & 0x7F)
        start = match.end() - len(b"studio:")
        if length < len(b"studio:"):
            continue  # a shorter text event that happens to be followed by these bytes
        if start + length > len(data):
            raise UserError(f"{where}: its studio text event runs past the end of the file (cut short?); the file is "
                            "damaged")
        return data[match.end():start + length].decode("latin-1")  # as mido reads a text event
    return None


# --- small helpers ------------------------------------------------------------------------


def _json(text: str, refusal: str) -> Any:
    """json.loads, every failure (damage, nesting past the parser's recursion, a number of
    more than 4,300 digits, memory) a UserError saying `refusal`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{refusal} (nested too deeply to read); the file is damaged") from None
    except MemoryError:
        raise UserError(f"{refusal} (it needs more memory than is free)") from None
    except ValueError as exc:  # JSONDecodeError, and a number past Python's digit limit
        raise UserError(f"{refusal} ({clip(str(exc), 120)}); the file is damaged") from None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _echo(value: Any) -> str:
    if isinstance(value, str):
        return f"'{shown(clip(value, 120))}'"
    if isinstance(value, (dict, list)):
        return f"a {_kind(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a number of many digits"
    return clip(repr(value), 80)
