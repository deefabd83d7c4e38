"""Writing step outputs to disk: writers per media type, atomic writes, hashes."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from studio import media
from studio.pipeline.imageformat import DEFAULT_QUALITY, LOSSLESS_WEBP, ImageFormat
from studio.runs.provenance import (JPEG_COMMENT_PREFIX, JPEG_COMMENT_SLICE, XMP_PACKET, provenance_text,
                                    xml_safe)

WriteFn = Callable[[Any, Path, dict[str, Any]], None]
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286  # the EXIF sub-IFD, and its UserComment tag


@dataclass(frozen=True)
class Writer:
    """Writes a generator's output value for one media type to a file."""

    media_type: str
    extension: str  # without the dot
    write: WriteFn  # write(value, path, provenance)
    plugin: str = "studio"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def temp_path_for(final: Path) -> Path:
    """The name beside `final` to write into, free. The name is predictable, so whatever
    already has it (a crashed run's leftover, or a link planted there to send the write
    elsewhere) is removed first: a writer then creates a new file, never one through a
    link. (It is not created here: the step cache hard-links its file into this name.)"""
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    return tmp


def atomic_write(final: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file and rename, so `final` is either whole or absent.
    An interrupted write leaves no file that a later run could mistake for finished."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        tmp = temp_path_for(final)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` survive a power cut, where the file system
    allows it (some refuse to open or sync a directory: then the rename is as safe as
    the file system makes it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(final: Path, data: Any) -> None:
    atomic_write(
        final,
        lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n", "utf-8"),
    )


# --- file-system errors, in words ---------------------------------------------------

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def is_storage_problem(exc: BaseException) -> bool:
    """A full disk or a folder that refuses writes: the machine's problem, which every
    later write would hit too, not the generator's."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL | NOT_WRITABLE | {errno.EIO}


def os_error_text(exc: OSError, path: Path | str | None = None, *, writing: bool = True) -> str:
    """What went wrong with a file, naming it: `path` when the caller knows which file
    mattered (the artifact rather than its temporary name), else the error's own.
    `writing=False` when the caller does not know whether it was a read or a write."""
    where = path if path is not None else (exc.filename or "a file the system did not name")
    if exc.errno in DISK_FULL:
        return f"disk full at {where}: free space or use --out on another disk"
    if exc.errno in NOT_WRITABLE and writing:
        return f"cannot write to {where}: {exc.strerror or exc}"
    return f"{where}: {exc.strerror or exc}"


# --- built-in writers ------------------------------------------------------------


def write_png(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if not isinstance(value, Image.Image):
        raise TypeError(f"an image port needs a PIL.Image, got {type(value).__name__}")
    info = PngInfo()
    info.add_text("studio", json.dumps(provenance, sort_keys=True, default=str))
    parameters = value.info.get("parameters")
    if isinstance(parameters, str) and parameters:
        # a generator's A1111 infotext (docs/plugins.md, "Text metadata on images"): a
        # `parameters` chunk, where A1111, ComfyUI and model sites look (iTXt when not Latin-1)
        info.add_text("parameters", parameters)
    value.save(path, format="PNG", pnginfo=info)


def write_jpeg(value: Any, path: Path, provenance: dict[str, Any], quality: int = DEFAULT_QUALITY) -> None:
    """JPEG at `quality`: A1111's `parameters` in the EXIF UserComment (where A1111 writes
    it for a JPEG), Studio's provenance in comment segments (studio.runs.provenance says
    why there). A JPEG has no alpha: transparency is drawn over white."""
    import io

    image = _pil_image(value)
    encoded = io.BytesIO()
    exif = _parameters_exif(image)
    # one JPEG segment holds 64 KB: a longer infotext (32,000 characters) stays in the provenance only
    extra = {"exif": exif} if 0 < len(exif) <= 65_533 else {}
    _without_alpha(image).save(encoded, format="JPEG", quality=quality, **extra)
    path.write_bytes(_with_comments(encoded.getvalue(), provenance_text(provenance).encode("ascii")))


def write_webp(value: Any, path: Path, provenance: dict[str, Any], quality: int = DEFAULT_QUALITY) -> None:
    """WebP at `quality` (100: lossless), alpha kept: A1111's `parameters` in the EXIF
    UserComment, as for a JPEG; Studio's provenance in the XMP chunk."""
    image = _pil_image(value)
    extra = {"exif": exif} if (exif := _parameters_exif(image)) else {}
    xmp = XMP_PACKET % xml_safe(provenance_text(provenance)).encode("ascii")
    image.save(path, format="WEBP", quality=quality, lossless=quality == LOSSLESS_WEBP,
               exact=quality == LOSSLESS_WEBP, xmp=xmp, **extra)


def image_writer(image_format: ImageFormat) -> Writer:
    """The built-in writer of a step's `format:` at its `quality:`."""
    write = {"png": write_png, "jpeg": write_jpeg, "webp": write_webp}[image_format.name]
    if image_format.quality is not None:
        write = functools.partial(write, quality=image_format.quality)
    return Writer(image_format.media_type, image_format.extension, write)


def _pil_image(value: Any) -> Any:
    from PIL import Image

    if not isinstance(value, Image.Image):
        raise TypeError(f"an image port needs a PIL.Image, got {type(value).__name__}")
    return value


def _parameters_exif(image: Any) -> bytes:
    """An EXIF block holding the image's A1111 `parameters` as UserComment, as A1111
    writes it (piexif: UserComment.dump(text, encoding="unicode"), the code "UNICODE\\0"
    then UTF-16 big-endian, in a big-endian TIFF), or b"" when the image has none.
    Packed here: Pillow's Exif would type the tag BYTE, which piexif reads back as a
    tuple of numbers instead of UNDEFINED bytes."""
    parameters = image.info.get("parameters")
    if not isinstance(parameters, str) or not parameters:
        return b""
    comment = b"UNICODE\0" + parameters.encode("utf-16-be")
    # TIFF header; IFD0 (at 8) with one entry, the Exif IFD's offset (26); the Exif IFD
    # with one entry, UserComment, whose bytes follow it (at 44); no next IFD after either
    return (b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8)
            + struct.pack(">HHHII", 1, EXIF_IFD, 4, 1, 26) + struct.pack(">I", 0)
            + struct.pack(">HHHII", 1, USER_COMMENT, 7, len(comment), 44) + struct.pack(">I", 0) + comment)


def _without_alpha(image: Any) -> Any:
    """The image as JPEG holds it: RGB or grey, transparency drawn over white (as an
    image-to-image input is)."""
    from PIL import Image

    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def _with_comments(jpeg: bytes, text: bytes) -> bytes:
    """`jpeg` (as Pillow encoded it) with `text` in comment segments of at most 64 KB,
    each prefixed, placed after the APPn segments (JFIF's APP0 and EXIF's APP1 come first)."""
    slices = [text[i:i + JPEG_COMMENT_SLICE] for i in range(0, len(text), JPEG_COMMENT_SLICE)]
    segments = b"".join(b"\xff\xfe" + struct.pack(">H", 2 + len(JPEG_COMMENT_PREFIX) + len(piece))
                        + JPEG_COMMENT_PREFIX + piece for piece in slices)
    position = 2
    while jpeg[position] == 0xFF and 0xE0 <= jpeg[position + 1] <= 0xEF:
        position += 2 + struct.unpack(">H", jpeg[position + 2:position + 4])[0]
    return jpeg[:position] + segments + jpeg[position:]


def write_text(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a text port needs a str, got {type(value).__name__}")
    path.write_text(value, encoding="utf-8")


def write_json(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")


def write_wav(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    """16-bit PCM WAV; provenance goes in the INFO chunk's comment (ICMT). Encoded in
    memory, then written as bytes (the same file, byte for byte): libsndfile reports a
    full disk only as "System error", a plain write as ENOSPC, which the executor puts
    in words ("disk full at PATH")."""
    import io

    import numpy as np
    import soundfile

    if not isinstance(value, media.Audio):
        raise TypeError(f"an audio port needs a studio.media.Audio, got {type(value).__name__}")
    samples = value.samples
    if hasattr(samples, "detach"):  # a torch tensor
        samples = samples.detach().float().cpu().numpy()
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if samples.size == 0:
        raise ValueError("the audio is empty (0 samples)")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    encoded = io.BytesIO()
    with soundfile.SoundFile(encoded, "w", samplerate=int(value.sample_rate), channels=channels,
                             format="WAV", subtype="PCM_16") as f:
        f.comment = json.dumps(provenance, sort_keys=True, default=str)
        f.software = "studio"
        f.write(samples)
    with open(path, "wb") as out:
        out.write(encoded.getbuffer())


def write_midi(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    """Standard MIDI file; provenance is a text meta event at time 0."""
    import pretty_midi

    if not isinstance(value, pretty_midi.PrettyMIDI):
        raise TypeError(f"a MIDI port needs a pretty_midi.PrettyMIDI, got {type(value).__name__}")
    note = pretty_midi.Text("studio:" + json.dumps(provenance, sort_keys=True, default=str), 0.0)
    value.text_events.append(note)
    try:
        value.write(str(path))
    finally:
        value.text_events.remove(note)


BUILTIN_WRITERS = [
    Writer(media.IMAGE, "png", write_png),
    Writer(media.JPEG, "jpg", write_jpeg),
    Writer(media.WEBP, "webp", write_webp),
    Writer(media.TEXT, "txt", write_text),
    Writer(media.JSON, "json", write_json),
    Writer(media.AUDIO, "wav", write_wav),
    Writer(media.MIDI, "mid", write_midi),
]

def read_provenance(path: Path) -> dict[str, Any] | None:
    """The provenance Studio embedded in a PNG, JPEG, WebP, WAV or MIDI file, or None when it carries
    none. Bounded and regular files only (studio.runs.reopen reads it); a file that is not
    one to read, or is damaged, is a UserError naming it."""
    from studio.runs.provenance import read_provenance_strict

    return read_provenance_strict(path)


def read_png_provenance(path: Path) -> dict[str, Any] | None:
    return read_provenance(path) if Path(path).suffix.lower() == ".png" else None

