"""What a user's input file really is, read from its content, never its extension.

A `.png` that is a renamed WAV, a zero-byte or truncated file, a PNG that declares
100,000 x 100,000 pixels, a MIDI with no notes: each is found here, before anything
runs, with a bounded amount of reading. Every check reads headers or walks a file of
capped size; nothing decodes a whole image or renders audio.

`sniff(path)` returns a `Sniffed`: the media type, a problem in words (None when the
file is usable) and facts a generator's checks may want (pixel size, duration, notes).
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from studio import media


# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["MAX_AUDIO_SECONDS", "MAX_IMAGE_PIXELS", "MAX_INPUT_BYTES", "MAX_MIDI_BYTES", "Sniffed", "midi_facts",
           "sniff"]

MAX_INPUT_BYTES = 512 * 2**20  # an input file larger than this is not read at all
MAX_IMAGE_PIXELS = 8192 * 8192  # beyond it, decoding is a memory hazard (a decompression bomb)
MAX_PNG_CHUNKS = 30_000  # PNG writers use 8-64 KB IDAT chunks: a few thousand at most here
MAX_DECODED_PIXELS = 4096 * 4096  # non-PNG images up to this size are decoded to find damage
MAX_MIDI_BYTES = 2 * 2**20  # real MIDI files are kilobytes; larger ones are not read
MAX_AUDIO_SECONDS = 4 * 3600
MAX_TEXT_BYTES = 16 * 2**20

# (media type, magic bytes at offset 0, more magic at offset 8 or None)
_SIGNATURES: list[tuple[str, bytes, bytes | None]] = [
    (media.IMAGE, b"\x89PNG\r\n\x1a\n", None),
    ("image/jpeg", b"\xff\xd8\xff", None),
    ("image/gif", b"GIF8", None),
    ("image/webp", b"RIFF", b"WEBP"),
    ("image/bmp", b"BM", None),
    (media.AUDIO, b"RIFF", b"WAVE"),
    ("audio/flac", b"fLaC", None),
    ("audio/ogg", b"OggS", None),
    ("audio/aiff", b"FORM", b"AIFF"),
    ("audio/mpeg", b"ID3", None),
    (media.MIDI, b"MThd", None),
]


@dataclass(frozen=True)
class Sniffed:
    media_type: str | None  # None: not a kind of file Studio reads
    problem: str | None = None  # why it cannot be used, in words; None when it can
    info: dict[str, Any] = field(default_factory=dict)  # width/height, seconds, notes...

    @property
    def ok(self) -> bool:
        return self.media_type is not None and self.problem is None


def sniff(path: Path) -> Sniffed:
    """What `path` holds. Never raises for a bad file; the problem is in the result."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return Sniffed(None, f"cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(st.st_mode):
        return Sniffed(None, "is not a regular file (a directory, device or pipe)")
    return _sniff_cached(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4096)
def _sniff_cached(path: str, size: int, mtime_ns: int) -> Sniffed:
    if size == 0:
        return Sniffed(None, "is empty (0 bytes)")
    if size > MAX_INPUT_BYTES:
        return Sniffed(None, f"is {size / 2**20:,.0f} MB; inputs are limited to {MAX_INPUT_BYTES // 2**20} MB")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return Sniffed(None, f"cannot be read ({exc.strerror or exc})")
    kind = _magic(head)
    try:
        if kind is None:
            return _text(Path(path), size)
        if kind.startswith("image/"):
            return _image(Path(path), kind)
        if kind == media.MIDI:
            return _midi(Path(path), size)
        return _audio(Path(path), kind)
    except MemoryError:
        return Sniffed(kind, "is too large to check in memory")
    except Exception as exc:  # a parser's surprise is a damaged file, never a crash
        return Sniffed(kind, f"is a damaged {_what(kind)} ({type(exc).__name__}: {str(exc)[:200]})")


def _magic(head: bytes) -> str | None:
    for media_type, magic, more in _SIGNATURES:
        if head.startswith(magic) and (more is None or head[8:8 + len(more)] == more):
            return media_type
    if head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    return None


def _what(kind: str) -> str:
    return {media.IMAGE: "PNG", media.MIDI: "MIDI file", media.AUDIO: "WAV"}.get(kind, kind)


def _image(path: Path, kind: str) -> Sniffed:
    from PIL import Image

    try:
        with warnings.catch_warnings():  # the size is judged below, in Studio's words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:
        return Sniffed(kind, f"declares more than {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?); images "
                             "are limited to 8192 x 8192")
    with opened as im:
        width, height = im.size
        info = {"width": width, "height": height, "mode": im.mode}
        if width * height > MAX_IMAGE_PIXELS:
            return Sniffed(kind, f"declares {width:,} x {height:,} pixels; images are limited to "
                                 f"{MAX_IMAGE_PIXELS:,} pixels (8192 x 8192)", info)
        if width == 0 or height == 0:
            return Sniffed(kind, "has no pixels", info)
    if kind == media.IMAGE:
        chunks = _png_chunk_count(path)
        if chunks > MAX_PNG_CHUNKS:
            return Sniffed(kind, f"has more than {MAX_PNG_CHUNKS:,} chunks; a real PNG has a few hundred", info)
        with Image.open(path) as im:
            im.verify()  # walks every chunk and its checksum: finds truncation cheaply
    elif width * height <= MAX_DECODED_PIXELS:
        with Image.open(path) as im:
            im.load()  # other formats have no cheap check: small ones are decoded to find damage
    return Sniffed(kind, None, info)


def _png_chunk_count(path: Path) -> int:
    """Chunks in a PNG, counted by their headers (stops past the limit): millions of
    empty chunks would make a full check crawl."""
    count = 0
    with open(path, "rb") as f:
        f.seek(8)
        while count <= MAX_PNG_CHUNKS:
            header = f.read(8)
            if len(header) < 8:
                break
            count += 1
            if header[4:8] == b"IEND":
                break
            f.seek(int.from_bytes(header[:4], "big") + 4, os.SEEK_CUR)
    return count


def _audio(path: Path, kind: str) -> Sniffed:
    import soundfile

    with soundfile.SoundFile(path) as f:
        frames, rate, channels = f.frames, f.samplerate, f.channels
    info = {"frames": frames, "sample_rate": rate, "channels": channels,
            "seconds": frames / rate if rate else 0.0}
    if frames <= 0 or rate <= 0:
        return Sniffed(kind, "holds no audio (0 frames)", info)
    if info["seconds"] > MAX_AUDIO_SECONDS:
        return Sniffed(kind, f"is {info['seconds']:,.0f} s long; audio inputs are limited to "
                             f"{MAX_AUDIO_SECONDS // 3600} hours", info)
    if kind == media.AUDIO:
        # a WAV whose data chunk claims more bytes than the file has was cut short
        declared = _wav_data_bytes(path)
        actual = path.stat().st_size
        if declared is not None and declared > actual:
            return Sniffed(kind, f"is truncated (its header declares {declared:,} bytes of audio, the file "
                                 f"has {actual:,})", info)
    return Sniffed(kind, None, info)


def _wav_data_bytes(path: Path) -> int | None:
    """Offset of the end of the 'data' chunk as the header declares it."""
    with open(path, "rb") as f:
        f.seek(12)
        for _ in range(64):  # a WAV has a handful of chunks before its data
            header = f.read(8)
            if len(header) < 8:
                return None
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                return f.tell() + size
            f.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _midi(path: Path, size: int) -> Sniffed:
    if size > MAX_MIDI_BYTES:
        return Sniffed(media.MIDI, f"is {size / 2**20:.1f} MB; MIDI inputs are limited to "
                                   f"{MAX_MIDI_BYTES // 2**20} MB (a piece is kilobytes)")
    facts = midi_facts(path.read_bytes())
    if isinstance(facts, str):
        return Sniffed(media.MIDI, facts)
    if facts["notes"] == 0:
        return Sniffed(media.MIDI, "has no notes", facts)
    return Sniffed(media.MIDI, None, facts)


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):  # the standard allows four bytes
        byte = data[i]
        i += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, i
    raise ValueError("a variable-length number longer than four bytes")


def midi_facts(data: bytes) -> dict[str, Any] | str:
    """Notes (and how many on the drum channel), length in seconds and last tick of a
    Standard MIDI File, read in one pass
    over its bytes (no message objects, no per-tick table), or a problem in words."""
    if len(data) < 14 or data[:4] != b"MThd":
        return "is not a Standard MIDI File"
    kind, tracks, division = int.from_bytes(data[8:10], "big"), int.from_bytes(data[10:12], "big"), \
        int.from_bytes(data[12:14], "big")
    if kind > 2:
        return f"is a damaged MIDI file (format {kind})"
    if kind == 2:
        return "is a type 2 MIDI file (independent patterns); give a type 0 or 1 file"
    if division & 0x8000:
        return "counts time in SMPTE frames; give a file that counts ticks per beat (what editors write)"
    if division == 0:
        return "is a damaged MIDI file (0 ticks per beat)"
    tempos: list[tuple[int, int]] = []  # (tick, microseconds per beat)
    notes = drum_notes = last_tick = found = 0
    i = 8 + int.from_bytes(data[4:8], "big")
    try:
        while i + 8 <= len(data) and found < tracks:
            length = int.from_bytes(data[i + 4:i + 8], "big")
            body_end = i + 8 + length
            if body_end > len(data):
                return (f"is a damaged MIDI file: truncated (a chunk declares {length:,} bytes, "
                        f"{len(data) - i - 8:,} are there)")
            if data[i:i + 4] != b"MTrk":
                i = body_end  # an unknown chunk: skipped, as the standard says
                continue
            found += 1
            j, tick, status = i + 8, 0, 0
            while j < body_end:
                delta, j = _varint(data, j)
                tick += delta
                byte = data[j]
                if byte == 0xFF:  # meta event
                    kind_byte = data[j + 1]
                    size, j = _varint(data, j + 2)
                    if kind_byte == 0x51 and size == 3:
                        tempos.append((tick, int.from_bytes(data[j:j + 3], "big")))
                    j += size
                    if kind_byte == 0x2F:
                        break
                elif byte in (0xF0, 0xF7):  # system exclusive
                    size, j = _varint(data, j + 1)
                    j += size
                else:
                    if byte & 0x80:
                        status, j = byte, j + 1
                    elif not status:
                        raise ValueError("a data byte without a status")
                    high = status & 0xF0
                    if high in (0xC0, 0xD0):
                        j += 1
                    else:
                        if high == 0x90 and data[j + 1] > 0:
                            notes += 1
                            drum_notes += (status & 0x0F) == 9  # channel 10, General MIDI's drums
                        j += 2
            last_tick = max(last_tick, tick)
            i = body_end
    except (IndexError, ValueError) as exc:
        return f"is a damaged MIDI file ({exc or 'it ends inside an event'})"
    if found == 0:
        return "is a damaged MIDI file (no tracks)"
    return {"notes": notes, "drum_notes": drum_notes, "seconds": _seconds_at(last_tick, tempos, division),
            "last_tick": last_tick, "tracks": found, "ticks_per_beat": division}


def _seconds_at(tick: int, tempos: list[tuple[int, int]], division: int) -> float:
    """Seconds from the start to `tick` through the tempo map (120 bpm until the first
    tempo event, as the standard says)."""
    seconds, at, tempo = 0.0, 0, 500_000
    for change_tick, change_tempo in sorted(tempos):
        if change_tick >= tick:
            break
        seconds += (change_tick - at) * tempo / division / 1e6
        at, tempo = change_tick, change_tempo
    return seconds + (tick - at) * tempo / division / 1e6


def _text(path: Path, size: int) -> Sniffed:
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".md", ".json", ".text", ""):
        return Sniffed(None, "is not a file type Studio reads (PNG, JPEG, WebP, WAV, FLAC, OGG, MIDI or UTF-8 text)")
    if size > MAX_TEXT_BYTES:
        return Sniffed(media.TEXT, f"is {size / 2**20:.0f} MB; text inputs are limited to "
                                   f"{MAX_TEXT_BYTES // 2**20} MB")
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Sniffed(None, f"is not UTF-8 text (byte {exc.start}) nor a media file Studio reads")
    if b"\x00" in data:
        return Sniffed(None, "holds NUL bytes; it is not a text file")
    if suffix == ".json":
        import json

        try:
            json.loads(data)
        except ValueError as exc:
            return Sniffed(media.JSON, f"is not valid JSON ({exc})")
        return Sniffed(media.JSON)
    return Sniffed(media.TEXT)
