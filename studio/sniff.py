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

MAX_INPUT_BYTES = 512 * 2**20  # an input file larger than this is not read at all
MAX_IMAGE_PIXELS = 8192 * 8192  # beyond it, decoding is a memory hazard (a decompression bomb)
MAX_MIDI_BYTES = 16 * 2**20  # real MIDI files are kilobytes; larger ones are not parsed
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
    with Image.open(path) as im:
        if kind == media.IMAGE:
            im.verify()  # walks every chunk and its checksum: finds truncation cheaply
        else:
            im.load()  # other formats have no cheap check; the size is bounded above
    return Sniffed(kind, None, info)


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
        return Sniffed(media.MIDI, f"is {size / 2**20:.0f} MB; MIDI inputs are limited to "
                                   f"{MAX_MIDI_BYTES // 2**20} MB")
    import mido

    midi = mido.MidiFile(str(path))
    if midi.type == 2:
        return Sniffed(media.MIDI, "is a type 2 MIDI file (independent patterns); give a type 0 or 1 file")
    notes = 0
    seconds = 0.0
    # mido's merged playback walks tempo changes in order: seconds without building any
    # per-tick table (pretty_midi allocates one as long as the last tick)
    for message in midi:
        seconds += message.time
        if message.type == "note_on" and message.velocity > 0:
            notes += 1
    info = {"notes": notes, "seconds": seconds, "tracks": len(midi.tracks),
            "ticks_per_beat": midi.ticks_per_beat}
    if notes == 0:
        return Sniffed(media.MIDI, "has no notes", info)
    return Sniffed(media.MIDI, None, info)


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
