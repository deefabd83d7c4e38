"""The metadata blocks inside an image file, walked as untrusted input without decoding a
pixel: a PNG's text chunks (tEXt, zTXt, iTXt), a JPEG's segments before its image data,
a WebP's RIFF chunks. One walker per format, shared by the two readers that need them:
studio.runs.provenance (Studio's own provenance, to re-open a run) and
studio.interop.imagetext (another tool's generation text, to import it).

Each walk is bounded before it starts: a number of chunks or segments, a size for each
block read (the caller's limit), an inflate that stops at the limit and must reach the
end of its stream. The caller opens the file (regular files only, of a bounded size) and
words the refusal of a block that is too large (`too_large`), since what its limit
means differs; damage is worded here, naming the file (`where`). `strict` callers
(re-opening) refuse a file cut short; the others keep what was found before the cut.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable

from studio.errors import UserError, clip

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_KINDS = (b"tEXt", b"zTXt", b"iTXt")
# too_large(block, size in bytes, decompressed) -> the refusal's words after "{where}: "
TooLarge = Callable[[str, int, bool], str]


@dataclass(frozen=True)
class PngText:
    """One text chunk's text, not yet decoded: `encoding` is what its kind says (Latin-1
    for tEXt and zTXt, UTF-8 for iTXt); the caller decides what text it accepts."""

    kind: str  # tEXt | zTXt | iTXt
    data: bytes
    encoding: str


def png_texts(f: BinaryIO, size: int, where: str, wanted: tuple[str, ...], *, max_bytes: int,
              max_chunks: int, too_large: TooLarge, strict: bool) -> dict[str, PngText]:
    """{keyword: text} for the first chunk of each wanted keyword, walking from the
    signature to IEND (or to the last wanted keyword found). `max_bytes` bounds a chunk
    and its inflated text. Strict: a cut-short file, a chunk past the end and a wrong
    checksum of a wanted chunk are refused as damage."""
    if f.read(8) != PNG_SIGNATURE:
        raise UserError(f"{where}: not a PNG file (no PNG signature)")
    position, found = 8, {}
    keys = {k.encode("latin-1") for k in wanted}
    for _ in range(max_chunks):
        head = f.read(8)
        if len(head) < 8:
            if head and strict:
                raise UserError(f"{where}: ends inside a chunk header (cut short?); the file is damaged")
            return found  # no IEND: what was found is what there is
        length, kind = struct.unpack(">I4s", head)
        end = position + 8 + length + 4
        if end > size:
            if strict:
                raise UserError(f"{where}: its {chunk_name(kind)} chunk runs past the end of the file (cut short?); "
                                "the file is damaged")
            return found
        if kind == b"IEND":
            return found
        if kind in PNG_TEXT_KINDS:
            keyword = f.read(min(length, 80)).split(b"\0", 1)[0]
            name = keyword.decode("latin-1")
            if keyword in keys and name not in found:
                if length > max_bytes:
                    raise UserError(f"{where}: " + too_large(f"{name} text chunk", length, False))
                f.seek(position + 8)
                body = read_exactly(f, length, where, f"its {name} text chunk")
                crc = read_exactly(f, 4, where, f"its {name} text chunk")
                if strict and struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
                    raise UserError(f"{where}: its {name} text chunk fails its checksum (CRC); the file is damaged")
                found[name] = _png_chunk_text(kind, body, where, max_bytes, too_large)
                if len(found) == len(keys):
                    return found
        f.seek(end)
        position = end
    raise UserError(f"{where}: has more than {max_chunks:,} chunks; a real PNG has a few hundred. Not read")


def _png_chunk_text(kind: bytes, body: bytes, where: str, max_bytes: int, too_large: TooLarge) -> PngText:
    keyword, _, rest = body.partition(b"\0")
    name = f"{keyword.decode('latin-1')} {kind.decode('latin-1')}"
    damaged = f"{where}: its {name} chunk is damaged"
    if kind == b"tEXt":
        return PngText("tEXt", rest, "latin-1")
    if kind == b"zTXt":
        if rest[:1] != b"\0":
            raise UserError(f"{damaged} (unknown compression method)")
        return PngText("zTXt", inflate(rest[1:], max_bytes, where, name, too_large), "latin-1")
    # iTXt: compression flag and method, language tag, translated keyword, UTF-8 text
    if len(rest) < 2 or rest[1:2] != b"\0" or rest[:1] not in (b"\0", b"\1"):
        raise UserError(f"{damaged} (bad compression fields)")
    parts = rest[2:].split(b"\0", 2)
    if len(parts) != 3:
        raise UserError(f"{damaged} (no language tag or translated keyword)")
    text = inflate(parts[2], max_bytes, where, name, too_large) if rest[:1] == b"\1" else parts[2]
    return PngText("iTXt", text, "utf-8")


def inflate(data: bytes, max_bytes: int, where: str, name: str, too_large: TooLarge) -> bytes:
    """A zlib stream inflated to at most `max_bytes`, refused past it (a decompression
    bomb stops there) and when the stream does not end (a chunk cut short)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise UserError(f"{where}: its {name} chunk cannot be decompressed ({clip(str(exc), 120)}); the file is "
                        "damaged") from None
    if len(raw) > max_bytes or inflater.unconsumed_tail:
        raise UserError(f"{where}: " + too_large(f"{name} chunk", len(raw), True))
    if not inflater.eof:
        raise UserError(f"{where}: its {name} chunk is cut short; the file is damaged")
    return raw


def chunk_name(kind: bytes) -> str:
    return kind.decode("latin-1") if re.fullmatch(rb"[A-Za-z ]{4}", kind) else repr(kind)


def read_exactly(f: BinaryIO, n: int, where: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise UserError(f"{where}: ends inside {what} (cut short?); the file is damaged")
    return data


# --- JPEG ------------------------------------------------------------------------------

JPEG_SOI = b"\xff\xd8"
JPEG_APP1, JPEG_COM = 0xE1, 0xFE
_SEGMENT_NAMES = {JPEG_APP1: "APP1 (EXIF, XMP)", JPEG_COM: "comment (COM)"}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM and the restart markers stand alone


def jpeg_segments(f: BinaryIO, where: str, wanted: set[int], *, max_segments: int, max_bytes: int,
                  too_large: TooLarge, strict: bool) -> list[tuple[int, bytes]]:
    """(marker, payload) of every wanted segment before the image data (SOS) or the end
    (EOI), in file order. A segment is at most 64 KB by its format; `max_segments`
    bounds how many are walked, `max_bytes` what the wanted ones hold together. Strict:
    a file cut short is refused as damage."""
    f.seek(0)
    if f.read(2) != JPEG_SOI:
        raise UserError(f"{where}: not a JPEG file (no JPEG start-of-image marker)")
    found: list[tuple[int, bytes]] = []
    kept = 0
    for _ in range(max_segments):
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            if strict:
                raise UserError(f"{where}: ends or breaks before its image data (cut short?); the file is damaged")
            return found
        if marker[1] in (0xD9, 0xDA):  # end of image, start of scan: no metadata after these
            return found
        if marker[1] in _NO_LENGTH or marker[1] == 0xFF:  # a fill byte before the marker
            if marker[1] == 0xFF:
                f.seek(-1, 1)
            continue
        length_bytes = f.read(2)
        length = struct.unpack(">H", length_bytes)[0] - 2 if len(length_bytes) == 2 else -1
        if length < 0:
            if strict or len(length_bytes) == 2:
                raise UserError(f"{where}: a JPEG segment has a length below its own size or none; the file is damaged")
            return found
        if marker[1] in wanted:
            kept += length
            if kept > max_bytes:
                name = _SEGMENT_NAMES.get(marker[1], f"{marker[1]:#04x} segment")
                raise UserError(f"{where}: " + too_large(f"JPEG {name} data", kept, False))
        payload = f.read(length) if marker[1] in wanted else None
        if payload is None:
            f.seek(length, 1)
        elif len(payload) < length:
            if strict:
                raise UserError(f"{where}: its JPEG segment {marker[1]:#04x} runs past the end of the file (cut "
                                "short?); the file is damaged")
            return found
        else:
            found.append((marker[1], payload))
    raise UserError(f"{where}: has more than {max_segments:,} JPEG segments before its image data; a real JPEG "
                    "has a few dozen. Not read")


# --- WebP ------------------------------------------------------------------------------


def webp_chunk(f: BinaryIO, size: int, where: str, fourcc: bytes, *, max_bytes: int, max_chunks: int,
               too_large: TooLarge, strict: bool) -> bytes | None:
    """The payload of the WebP's first `fourcc` chunk (b"EXIF", b"XMP "), or None. The
    RIFF chunks are walked by their headers; only the one wanted is read, at most
    `max_bytes`. Strict: a chunk running past the end is refused as damage."""
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise UserError(f"{where}: not a WebP file (no RIFF WEBP header)")
    position = 12
    for _ in range(max_chunks):
        head = f.read(8)
        if len(head) < 8:
            if head and strict:
                raise UserError(f"{where}: ends inside a chunk header (cut short?); the file is damaged")
            return None
        kind, length = head[:4], struct.unpack("<I", head[4:])[0]
        if position + 8 + length > size and (strict or kind == fourcc):
            raise UserError(f"{where}: its {chunk_name(kind)} chunk runs past the end of the file (cut short?); the "
                            "file is damaged")
        if kind == fourcc:
            if length > max_bytes:
                raise UserError(f"{where}: " + too_large(f"{chunk_name(kind).strip()} chunk", length, False))
            return read_exactly(f, length, where, f"its {chunk_name(kind).strip()} chunk")
        position += 8 + length + (length & 1)
        if position >= size:
            return None
        f.seek(position)
    raise UserError(f"{where}: has more than {max_chunks:,} chunks; a real WebP has a handful. Not read")
