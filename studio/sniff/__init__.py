"""What a user's input file really is, read from its content, never its extension.

A `.png` that is a renamed WAV, a zero-byte or truncated file, a PNG that declares
100,000 x 100,000 pixels, a MIDI with no notes: each is found here, before anything
runs, with a bounded amount of reading. Every check reads headers or walks a file of
capped size; nothing decodes a whole image or renders audio.

`sniff(path)` returns a `Sniffed`: the media type, a problem in words (None when the
file is usable) and facts a generator's checks may want (pixel size, duration, notes).

Validation bounds the time all its file checks take together (`check_budget`): past
the budget, a file gets only the cheap check (it exists, is a regular file within the
size limits, its magic bytes and header say what it is) and a `deferred` result; the
run checks it in full (studio.execute.executor sniffs every input again), with the same words.

The byte-level readers live beside it: studio.sniff.midi (what a MIDI file plays, in one
pass; its midi_facts, midi_notes and midi_clock are public here) and studio.sniff.png (a
PNG's chunks and image data).
"""

from __future__ import annotations

import os
import stat
import threading
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from studio import media
from studio.sniff.midi import (MAX_MIDI_TRACKS, midi_chunks_of_file, midi_clock, midi_facts, midi_notes,
                              no_notes_problem)
from studio.sniff.png import MAX_PNG_CHUNKS, OUT_OF_TIME, png_chunk_count, png_data_problem

# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["MAX_AUDIO_SECONDS", "MAX_IMAGE_PIXELS", "MAX_INPUT_BYTES", "MAX_MIDI_BYTES", "MAX_MIDI_TRACKS", "Sniffed",
           "check_budget", "checks_deferred", "midi_clock", "midi_facts", "midi_notes", "sniff"]

MAX_INPUT_BYTES = 512 * 2**20  # an input file larger than this is not read at all
MAX_IMAGE_PIXELS = 8192 * 8192  # beyond it, decoding is a memory hazard (a decompression bomb)
MAX_DECODED_PIXELS = 4096 * 4096  # non-PNG images up to this size are decoded to find damage
MAX_MIDI_BYTES = 2 * 2**20  # real MIDI files are kilobytes; larger ones are not read
MAX_AUDIO_SECONDS = 4 * 3600
MAX_TEXT_BYTES = 16 * 2**20
CACHE_SIZE = 4096  # full results kept, by (path, size, mtime)

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
    # True when only the cheap check ran (validation's time budget was spent): the
    # file is what its header says, and the run checks its content in full
    deferred: bool = False

    @property
    def ok(self) -> bool:
        return self.media_type is not None and self.problem is None


# --- the time budget of one validation ------------------------------------------------

_deadline: ContextVar[float | None] = ContextVar("studio_sniff_deadline", default=None)


@contextmanager
def check_budget(seconds: float) -> Iterator[None]:
    """Within this block, full content checks of files start only during the first
    `seconds`; later files get the cheap check and a `deferred` result (and a plugin's
    own content checks see `checks_deferred()`). Nested budgets keep the earlier end.
    Outside any budget (a run) every file is checked in full."""
    end = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _deadline.reset(token)


def checks_deferred() -> bool:
    """True inside a check_budget whose time is spent: a content check that costs more
    than a header read is left to the run."""
    end = _deadline.get()
    return end is not None and time.monotonic() > end


_cache: OrderedDict[tuple[str, int, int], Sniffed] = OrderedDict()  # full results
_cheap_cache: OrderedDict[tuple[str, int, int], Sniffed] = OrderedDict()  # deferred ones
_cache_lock = threading.Lock()


def sniff(path: Path, *, full: bool = False) -> Sniffed:
    """What `path` holds. Never raises for a bad file; the problem is in the result.
    `full`: check the content even when a validation's time budget is spent."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return Sniffed(None, f"cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(st.st_mode):
        return Sniffed(None, "is not a regular file (a directory, device or pipe)")
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    if not full and checks_deferred():  # the cheap check, once per file and version
        with _cache_lock:
            found = _cheap_cache.get(key)
        if found is None:
            found = _remember(_cheap_cache, key, _sniff_file(key[0], st.st_size, cheap=True))
        return found
    found = _sniff_file(key[0], st.st_size, cheap=False)
    # a check cut short by the budget (a large PNG's image data) is kept as a cheap one
    return _remember(_cheap_cache if found.deferred else _cache, key, found)


def _remember(cache: OrderedDict, key: tuple[str, int, int], found: Sniffed) -> Sniffed:
    """Keep `found` in `cache`, least recently used out beyond CACHE_SIZE."""
    with _cache_lock:
        cache[key] = found
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
    return found


def _sniff_file(path: str, size: int, cheap: bool) -> Sniffed:
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
            return _text(Path(path), size, cheap)
        if kind.startswith("image/"):
            return _image(Path(path), kind, cheap)
        if kind == media.MIDI:
            return _midi(Path(path), size, cheap)
        return _audio(Path(path), kind)  # header reads only: as cheap as a check gets
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


def _image(path: Path, kind: str, cheap: bool = False) -> Sniffed:
    from PIL import Image

    # counted first, cheaply: Pillow's open walks every chunk before the image data, and a
    # million empty ones take it seconds
    if kind == media.IMAGE and png_chunk_count(path) > MAX_PNG_CHUNKS:
        return Sniffed(kind, f"has more than {MAX_PNG_CHUNKS:,} chunks; a real PNG has a few hundred")
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
    if cheap:  # the header's size is known; damage further in is the run's to find
        return Sniffed(kind, None, info, deferred=True)
    if kind == media.IMAGE:
        with Image.open(path) as im:
            im.verify()  # walks every chunk and its checksum: finds truncation cheaply
        problem = png_data_problem(path, checks_deferred)  # the checksums can be right and the pixels still missing
        if problem is OUT_OF_TIME:  # validation's budget ran out while inflating: the run checks it
            return Sniffed(kind, None, info, deferred=True)
        if problem:
            return Sniffed(kind, problem, info)
    elif width * height <= MAX_DECODED_PIXELS:
        with Image.open(path) as im:
            im.load()  # other formats have no cheap check: small ones are decoded to find damage
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


def _midi(path: Path, size: int, cheap: bool = False) -> Sniffed:
    if size > MAX_MIDI_BYTES:
        return Sniffed(media.MIDI, f"is {size / 2**20:.1f} MB; MIDI inputs are limited to "
                                   f"{MAX_MIDI_BYTES // 2**20} MB (a piece is kilobytes)")
    if cheap:  # the header and the chunk list: what is declared is there
        chunks = midi_chunks_of_file(path, size)
        return Sniffed(media.MIDI, chunks if isinstance(chunks, str) else None, deferred=True)
    facts = midi_facts(path.read_bytes())
    if isinstance(facts, str):
        return Sniffed(media.MIDI, facts)
    if facts["notes"] == 0:
        return Sniffed(media.MIDI, no_notes_problem(facts), facts)
    return Sniffed(media.MIDI, None, facts)



def _text(path: Path, size: int, cheap: bool = False) -> Sniffed:
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".md", ".json", ".text", ""):
        return Sniffed(None, "is not a file type Studio reads (PNG, JPEG, WebP, WAV, FLAC, OGG, MIDI or UTF-8 text)")
    if size > MAX_TEXT_BYTES:
        return Sniffed(media.TEXT, f"is {size / 2**20:.0f} MB; text inputs are limited to "
                                   f"{MAX_TEXT_BYTES // 2**20} MB")
    if cheap:
        return Sniffed(media.JSON if suffix == ".json" else media.TEXT, None, deferred=True)
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
