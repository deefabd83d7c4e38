"""The generation text other tools leave in an image file, read as untrusted input: a PNG's
text chunks (tEXt, zTXt, iTXt: A1111's `parameters`, ComfyUI's `prompt`), a JPEG's or a
WebP's EXIF UserComment (where A1111 writes `parameters` for those formats), or a plain
text file.

Bounded before any work: regular files only, of at most MAX_FILE_BYTES; the PNG walked
chunk by chunk (at most MAX_PNG_CHUNKS, only the wanted keywords' chunks read, each at
most MAX_TEXT_BYTES, inflated no further); the JPEG walked segment by segment up to its
image data (an EXIF segment is 64 KB at most by its format); the WebP's RIFF chunks walked
to its EXIF chunk (the walkers of studio.runs.image_chunks, which the provenance reader
shares). No pixel is decoded. Every refusal is a UserError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from studio.errors import UserError, clip
from studio.limits import FileRefused, open_regular
from studio.runs.image_chunks import JPEG_APP1, PNG_SIGNATURE, jpeg_segments, png_texts, webp_chunk
from studio.runs.provenance import shown

MAX_FILE_BYTES = 512 * 2**20  # an image larger than this is not opened (Studio's input limit)
MAX_TEXT_BYTES = 256 * 2**10  # one text: an A1111 infotext is a few KB, a ComfyUI graph tens
MAX_PNG_CHUNKS = 30_000
MAX_JPEG_SEGMENTS = 1_000
MAX_WEBP_CHUNKS = 1_000
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
# EXIF UserComment starts with 8 bytes naming its character code
COMMENT_CODES = {b"ASCII\0\0\0": "ascii", b"UNICODE\0": "utf-16", b"\0" * 8: "utf-8"}


def file_kind(head: bytes) -> str:
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "text"


def read_texts(path: Path, keywords: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """(the file's kind, {keyword: text}) for the wanted keywords found: a PNG's text
    chunks; a JPEG's or WebP's EXIF UserComment as `parameters`; a text file's whole text
    as `parameters`."""
    where = shown(path)
    try:
        f, size = open_regular(path, MAX_FILE_BYTES)
    except FileRefused as exc:
        if exc.kind == FileRefused.TOO_LARGE:
            raise UserError(f"{where}: {exc.size:,} bytes; an image or text to import is at most "
                            f"{MAX_FILE_BYTES // 2**20} MB. Not read") from None
        raise UserError(f"{where} is not a regular file (a FIFO, device or folder); give an image or a text "
                        "file") from None
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    with f:
        try:
            kind = file_kind(f.read(16))
            f.seek(0)
            if kind == "png":
                return kind, _png_texts(f, size, where, keywords)
            if kind in ("jpeg", "webp"):
                exif = _jpeg_exif(f, where) if kind == "jpeg" else _webp_exif(f, size, where)
                comment = None if exif is None else _user_comment(exif, where)
                return kind, {} if comment is None else {"parameters": comment}
            return kind, {"parameters": _text_file(f, size, where)}
        except OSError as exc:
            raise UserError(f"{where}: cannot be read ({exc.strerror or exc})") from None


def _text_file(f: BinaryIO, size: int, where: str) -> str:
    if size > MAX_TEXT_BYTES:
        raise UserError(f"{where}: {size:,} bytes of text; an infotext to import is at most "
                        f"{MAX_TEXT_BYTES // 2**10} KB (A1111's are a few KB). Not read")
    return decoded(f.read(MAX_TEXT_BYTES + 1), where, "its text")


def decoded(data: bytes, where: str, what: str, encoding: str = "utf-8") -> str:
    """Text of at most MAX_TEXT_BYTES, with no NUL or other control character than tab
    and line ends: anything else is a binary file, or not one to import."""
    if len(data) > MAX_TEXT_BYTES:
        raise UserError(f"{where}: {what} is larger than {MAX_TEXT_BYTES // 2**10} KB; an infotext to import is "
                        "a few KB. Not read")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: {what} is not {encoding.upper()} text (byte {exc.start:,}); give an image "
                        "A1111 or ComfyUI wrote, or a text file of its parameters") from None
    text = text.removeprefix("\ufeff")
    bad = next((i for i, c in enumerate(text) if (ord(c) < 32 and c not in "\t\r\n") or c == "\x7f"), None)
    if bad is not None:
        raise UserError(f"{where}: {what} holds the control character {text[bad]!r} at character {bad:,}: a "
                        "binary file, not an infotext")
    return text


# --- the blocks, walked by studio.runs.image_chunks --------------------------------------


def _too_large(block: str, size: int, decompressed: bool) -> str:
    if decompressed:
        return f"its {block} is larger than {MAX_TEXT_BYTES // 2**10} KB once decompressed. Not read"
    return f"its {block} is {size:,} bytes; at most {MAX_TEXT_BYTES // 2**10} KB is read. Not read"


def _png_texts(f: BinaryIO, size: int, where: str, keywords: tuple[str, ...]) -> dict[str, str]:
    found = png_texts(f, size, where, keywords, max_bytes=MAX_TEXT_BYTES, max_chunks=MAX_PNG_CHUNKS,
                      too_large=_too_large, strict=False)
    return {keyword: decoded(text.data, where, f"its {text.kind} chunk", text.encoding)
            for keyword, text in found.items()}


def _jpeg_exif(f: BinaryIO, where: str) -> bytes | None:
    """The EXIF segment's payload (APP1 "Exif\\0\\0"), walking the markers to the image data."""
    # APP1 holds EXIF (64 KB) and XMP (Adobe's extended XMP spans several segments)
    segments = jpeg_segments(f, where, {JPEG_APP1}, max_segments=MAX_JPEG_SEGMENTS, max_bytes=16 * 2**20,
                             too_large=_too_large, strict=False)
    return next((payload for _, payload in segments if payload.startswith(b"Exif\0\0")), None)


def _webp_exif(f: BinaryIO, size: int, where: str) -> bytes | None:
    return webp_chunk(f, size, where, b"EXIF", max_bytes=MAX_TEXT_BYTES * 2 + 1024, max_chunks=MAX_WEBP_CHUNKS,
                      too_large=lambda block, n, _: f"its {block} is {n:,} bytes; an infotext's is a few KB. Not read",
                      strict=False)


def _user_comment(exif: bytes, where: str) -> str | None:
    """EXIF's UserComment as text: 8 bytes naming the code, then the text (A1111 writes
    "UNICODE\\0" and UTF-16, big-endian as piexif does; a byte-order mark or the zero bytes'
    places tell little-endian)."""
    from PIL import Image

    try:
        info = Image.Exif()
        info.load(exif)
        comment = info.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception as exc:  # noqa: BLE001 - PIL's TIFF reader raises many kinds on a damaged block
        raise UserError(f"{where}: its EXIF block is damaged ({clip(str(exc) or type(exc).__name__, 120)})") from None
    if comment is None:
        return None
    if isinstance(comment, str):
        return decoded(comment.encode("utf-8", "surrogatepass"), where, "its EXIF UserComment")
    code, body = COMMENT_CODES.get(bytes(comment[:8])), bytes(comment[8:])
    if code is None:
        raise UserError(f"{where}: its EXIF UserComment names the character code {bytes(comment[:8])!r}; "
                        "A1111 writes UNICODE")
    if code == "utf-16":
        code = _utf16_order(body)
    return decoded(body, where, "its EXIF UserComment", code)


def _utf16_order(body: bytes) -> str:
    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"  # the mark says
    # ASCII characters in UTF-16 have a zero high byte: first in big-endian, second in little
    evens, odds = body[0::2].count(0), body[1::2].count(0)
    return "utf-16-le" if odds > evens else "utf-16-be"
