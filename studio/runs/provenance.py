"""The provenance Studio embeds in the files it writes (a PNG text chunk `studio`, a
JPEG's `studio:` comment segments, a WebP's XMP element, the WAV comment, a MIDI text
event `studio:`), read back as untrusted input: a regular file (never a pipe or a
device) of a size its format allows, walked chunk by chunk (PNG, JPEG, WebP, WAV; the
walkers of studio.runs.image_chunks for the images) or read whole (MIDI, at most 2 MB), a bounded number of chunks, never decoding
pixels or samples; the text at most MAX_PROVENANCE bytes, then JSON. Every refusal is
a UserError naming the file."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

from studio.errors import UserError, clip
from studio.limits import FileRefused, open_regular
from studio.runs.image_chunks import JPEG_COM, jpeg_segments, png_texts, read_exactly, webp_chunk
from studio.pipeline.yamlfile import MAX_BYTES
from studio.sniff import MAX_INPUT_BYTES, MAX_MIDI_BYTES
from studio.sniff.png import MAX_PNG_CHUNKS

# the embedded pipeline (base64 of at most a pipeline file's size, compressed), plus the
# item's parameters; zlib at worst adds a few bytes per 16 KB block, base64 4 characters per 3 bytes
MAX_ENCODED = 4 * (MAX_BYTES + MAX_BYTES // 1000 + 1024) // 3 + 4
MAX_PROVENANCE = MAX_ENCODED + 2**20
# what a re-opened file may weigh: the largest a format lets Studio write and read
MAX_FILE_BYTES = {".png": MAX_INPUT_BYTES, ".jpg": MAX_INPUT_BYTES, ".jpeg": MAX_INPUT_BYTES,
                  ".webp": MAX_INPUT_BYTES, ".wav": 2**32 + 8, ".mid": MAX_MIDI_BYTES, ".midi": MAX_MIDI_BYTES}
MAX_JPEG_SEGMENTS = 1_000  # a JPEG has a few dozen before its image data (Studio's: 2 + 1 per 64 KB of provenance)
MAX_WEBP_CHUNKS = 1_000  # a WebP has a handful (VP8X, ICCP, ANIM, VP8, EXIF, XMP)

# Where JPEG and WebP files carry the provenance (docs/pipelines.md, "Image formats"). A
# JPEG: comment (COM) segments, each "studio:" and the next slice of the JSON text; one
# segment holds at most 64 KB, so a larger provenance continues in the next. A WebP: its
# XMP chunk, the JSON as the text of one element. The JSON is ASCII (json.dumps escapes
# the rest) and the writer escapes "<", ">" and "&" as JSON \u escapes, so the XMP needs
# no XML escaping and is read without an XML parser: no entity, so no entity bomb.
JPEG_COMMENT_PREFIX = b"studio:"
JPEG_COMMENT_SLICE = 65_533 - len(JPEG_COMMENT_PREFIX)
XMP_OPEN, XMP_CLOSE = b"<studio:provenance>", b"</studio:provenance>"
XMP_PACKET = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
              b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description rdf:about="" xmlns:studio="urn:studio:provenance:1">'
              + XMP_OPEN + b"%s" + XMP_CLOSE + b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>')
MAX_XMP = MAX_PROVENANCE + len(XMP_PACKET)


def provenance_text(provenance: dict[str, Any]) -> str:
    """The provenance as every writer embeds it: sorted JSON, ASCII only."""
    return json.dumps(provenance, sort_keys=True, default=str)


def xml_safe(text: str) -> str:
    """JSON text with "<", ">" and "&" as JSON escapes: the same JSON, and no XML markup."""
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
MAX_WAV_CHUNKS = 1_000  # a WAV has a handful (fmt, LIST, data, a few more)

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
        elif suffix in (".jpg", ".jpeg"):
            text = _jpeg_comment(f, where)
        elif suffix == ".webp":
            text = _webp_xmp(f, size, where)
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
                raise UserError(f"{where}: not a regular file (a folder, pipe or device); give a PNG, JPEG, WebP, WAV "
                                "or MIDI file Studio made") from None
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


def _too_large(block: str, size: int, decompressed: bool) -> str:
    if decompressed:
        return (f"its {block} is larger than {MAX_PROVENANCE / 2**20:,.1f} MB once decompressed; the provenance "
                "Studio writes is smaller. Not read (a decompression bomb?)")
    return (f"its {block} is {size / 2**20:,.1f} MB; the provenance Studio writes is at most "
            f"{MAX_PROVENANCE / 2**20:,.1f} MB. Not read")


def _png_text(f: BinaryIO, size: int, where: str) -> str | None:
    """The text of the PNG's first `studio` text chunk (tEXt, zTXt or iTXt), or None."""
    found = png_texts(f, size, where, ("studio",), max_bytes=MAX_PROVENANCE, max_chunks=MAX_PNG_CHUNKS,
                      too_large=_too_large, strict=True).get("studio")
    if found is None:
        return None
    try:
        return found.data.decode(found.encoding)
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: its studio {found.kind} chunk is damaged (not UTF-8 at byte {exc.start:,})") from None


def _jpeg_comment(f: BinaryIO, where: str) -> str | None:
    """Studio's comment segments before the JPEG's image data, joined, or None."""
    # the comments together at most twice the provenance's limit: Studio's, and room for others'
    segments = jpeg_segments(f, where, {JPEG_COM}, max_segments=MAX_JPEG_SEGMENTS, max_bytes=2 * MAX_PROVENANCE,
                             too_large=_too_large, strict=True)
    slices = [payload[len(JPEG_COMMENT_PREFIX):] for _, payload in segments if payload.startswith(JPEG_COMMENT_PREFIX)]
    if not slices:
        return None
    text = b"".join(slices)  # at most MAX_JPEG_SEGMENTS * 64 KB
    if len(text) > MAX_PROVENANCE:
        raise UserError(f"{where}: " + _too_large("studio comment", len(text), False))
    return _ascii(text, where, "studio comment", _NOT_ASCII)


def _webp_xmp(f: BinaryIO, size: int, where: str) -> str | None:
    """The text of the `studio:provenance` element in the WebP's XMP chunk, or None. Found
    by its bytes, not parsed as XML: Studio's element holds no markup and no entity."""
    xmp = webp_chunk(f, size, where, b"XMP ", max_bytes=MAX_XMP, max_chunks=MAX_WEBP_CHUNKS,
                     too_large=_too_large, strict=True)
    if xmp is None or XMP_OPEN not in xmp:
        return None
    start = xmp.index(XMP_OPEN) + len(XMP_OPEN)
    end = xmp.find(XMP_CLOSE, start)
    if end < 0:
        raise UserError(f"{where}: its XMP chunk's studio:provenance element is not closed; the file is damaged")
    return _ascii(xmp[start:end], where, "XMP studio:provenance element", _NOT_XML_SAFE_ASCII)


_NOT_ASCII = re.compile(rb"[^\x00-\x7f]")
_NOT_XML_SAFE_ASCII = re.compile(rb"[^\x00-\x7f]|[<&]")


def _ascii(data: bytes, where: str, what: str, refused: re.Pattern) -> str:
    """Studio writes its provenance as ASCII JSON (in XMP, with no markup or entity):
    anything else is damage, refused before JSON reads it."""
    bad = refused.search(data)
    if bad is not None:
        raise UserError(f"{where}: its {what} holds {bad.group()!r} at byte {bad.start():,}, which Studio does not "
                        "write there; the file is damaged")
    return data.decode("ascii")


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
            if read_exactly(f, 4, where, "its LIST chunk") == b"INFO":
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
        head = read_exactly(f, 8, where, "its LIST INFO chunk")
        kind, length = head[:4], struct.unpack("<I", head[4:])[0]
        if position + 8 + length > stop:
            raise UserError(f"{where}: its LIST INFO chunk is damaged (a field runs past its end)")
        if kind == b"ICMT":
            if length > MAX_PROVENANCE:
                raise UserError(f"{where}: its comment is {length / 2**20:,.1f} MB; the provenance Studio writes is at "
                                f"most {MAX_PROVENANCE / 2**20:,.1f} MB. Not read")
            raw = read_exactly(f, length, where, "its comment").rstrip(b"\0")
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
