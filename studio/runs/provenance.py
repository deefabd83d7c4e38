"""The provenance Studio embeds in the files it writes (a PNG text chunk `studio`, the
WAV comment, a MIDI text event `studio:`), read back as untrusted input: a regular file
(never a pipe or a device) of a size its format allows, walked chunk by chunk (PNG,
WAV) or read whole (MIDI, at most 2 MB), a bounded number of chunks, never decoding
pixels or samples; the text at most MAX_PROVENANCE bytes, then JSON. Every refusal is
a UserError naming the file."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from studio.errors import UserError, clip
from studio.limits import FileRefused, open_regular
from studio.pipeline.yamlfile import MAX_BYTES
from studio.sniff import MAX_INPUT_BYTES, MAX_MIDI_BYTES
from studio.sniff.png import MAX_PNG_CHUNKS

# the embedded pipeline (base64 of at most a pipeline file's size, compressed), plus the
# item's parameters; zlib at worst adds a few bytes per 16 KB block, base64 4 characters per 3 bytes
MAX_ENCODED = 4 * (MAX_BYTES + MAX_BYTES // 1000 + 1024) // 3 + 4
MAX_PROVENANCE = MAX_ENCODED + 2**20
# what a re-opened file may weigh: the largest a format lets Studio write and read
MAX_FILE_BYTES = {".png": MAX_INPUT_BYTES, ".wav": 2**32 + 8, ".mid": MAX_MIDI_BYTES, ".midi": MAX_MIDI_BYTES}
MAX_WAV_CHUNKS = 1_000  # a WAV has a handful (fmt, LIST, data, a few more)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def shown(path: Path | str) -> str:
    """A path (or a field) as a message or a YAML comment repeats it: one line, control
    characters and undecodable bytes as escapes, clipped."""
    text = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return clip(text, 300)



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
    data = json_or_refuse(text, f"{where}: its Studio provenance is not valid JSON")
    if not isinstance(data, dict):
        raise UserError(f"{where}: its Studio provenance is a {kind_of(data)}, not a JSON object; the file is damaged")
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
            self.file, size = open_regular(self.path, self.limit)
        except FileNotFoundError:
            raise UserError(f"{where}: no such file") from None
        except FileRefused as exc:
            if exc.kind == FileRefused.NOT_REGULAR:
                raise UserError(f"{where}: not a regular file (a folder, pipe or device); give a PNG, WAV or MIDI "
                                "file Studio made") from None
            raise UserError(f"{where}: is {exc.size / 2**20:,.1f} MB; a {Path(self.path).suffix.lower()[1:].upper()} "
                            f"file is re-opened up to {self.limit / 2**20:,.0f} MB, so this one is not read") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        return self.file, size

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


def json_or_refuse(text: str, refusal: str) -> Any:
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


def kind_of(value: Any) -> str:
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
