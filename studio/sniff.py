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
run checks it in full (studio.executor sniffs every input again), with the same words.
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


# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["MAX_AUDIO_SECONDS", "MAX_IMAGE_PIXELS", "MAX_INPUT_BYTES", "MAX_MIDI_BYTES", "MAX_MIDI_TRACKS", "Sniffed",
           "check_budget", "checks_deferred", "midi_clock", "midi_facts", "midi_notes", "sniff"]

MAX_INPUT_BYTES = 512 * 2**20  # an input file larger than this is not read at all
MAX_IMAGE_PIXELS = 8192 * 8192  # beyond it, decoding is a memory hazard (a decompression bomb)
MAX_PNG_CHUNKS = 30_000  # PNG writers use 8-64 KB IDAT chunks: a few thousand at most here
MAX_DECODED_PIXELS = 4096 * 4096  # non-PNG images up to this size are decoded to find damage
MAX_MIDI_BYTES = 2 * 2**20  # real MIDI files are kilobytes; larger ones are not read
MAX_MIDI_TRACKS = 32_767  # mido reads the header's track count as a signed 16-bit number
MAX_MIDI_EVENT_BYTES = 1_000_000  # one meta or sysex event; mido refuses longer ones
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
    if kind == media.IMAGE and _png_chunk_count(path) > MAX_PNG_CHUNKS:
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
        problem = _png_data_problem(path)  # the checksums can be right and the pixels still missing
        if problem is _OUT_OF_TIME:  # validation's budget ran out while inflating: the run checks it
            return Sniffed(kind, None, info, deferred=True)
        if problem:
            return Sniffed(kind, problem, info)
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


# PNG colour type -> samples a pixel
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 interlacing: (first column, first row, column step, row step) of each pass
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_PIECE = 1 << 20  # bytes inflated at a time: the check holds this much, never the image
_OUT_OF_TIME = "out of time"  # _png_data_problem's answer when validation's time budget ends first


def _png_rows(width: int, height: int, bits: int, channels: int, interlaced: bool) -> list[tuple[int, int]]:
    """(rows, bytes a row takes with its filter byte) of each pass of a PNG's image data."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    out = []
    for x0, y0, dx, dy in passes:
        w, h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if w and h:
            out.append((h, 1 + (w * bits * channels + 7) // 8))
    return out


def _png_data_problem(path: Path) -> str | None:
    """Why a PNG's image data cannot give its declared pixels, or None: its IDAT chunks
    inflated (a piece at a time, never the whole image, and no further than the bytes
    the header's size needs) must hold every row, each starting with a filter type of 0
    to 4. Pillow decodes a PNG cut short (5 of its 32 rows) without complaint at open
    and fails only when the pixels are read. Inside a validation whose time budget ends
    while inflating (a large image on a slow machine), _OUT_OF_TIME: the run checks it."""
    import zlib

    header, parts = _png_image_chunks(path)
    if header is None or len(header) < 13:
        return None  # Pillow's open has judged the header already
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    bits, colour, interlace = header[8], header[9], header[12]
    channels = _PNG_CHANNELS.get(colour)
    if channels is None or interlace > 1:
        return None
    passes = _png_rows(width, height, bits, channels, interlace == 1)
    need = sum(rows * stride for rows, stride in passes)
    # the filter type byte of every row, in the order they come: pass by pass
    segment, row, next_filter, rows_done = 0, 0, 0, 0
    made = 0
    inflate = zlib.decompressobj()
    try:
        with open(path, "rb") as f:
            for offset, length in parts:
                f.seek(offset)
                left = length
                while left and made < need and not inflate.eof:
                    data = f.read(min(left, _INFLATE_PIECE))
                    if not data:
                        break
                    left -= len(data)
                    if checks_deferred():
                        return _OUT_OF_TIME
                    while data and made < need and not inflate.eof:
                        out = inflate.decompress(data, _INFLATE_PIECE)
                        data = inflate.unconsumed_tail
                        end = made + len(out)
                        while segment < len(passes) and next_filter < end:
                            kind = out[next_filter - made]
                            if kind > 4:
                                return (f"is a damaged PNG: row {rows_done + 1} of its image data has filter type "
                                        f"{kind} (a PNG's are 0 to 4)")
                            rows_done += 1
                            row += 1
                            next_filter += passes[segment][1]
                            if row == passes[segment][0]:
                                segment, row = segment + 1, 0
                        made = end
                if made >= need or inflate.eof:
                    break
    except zlib.error as exc:
        return f"is a damaged PNG: its image data is not a valid compressed stream ({exc})"
    if made >= need:
        return None
    if not interlace:
        return (f"is truncated: its image data holds {made // passes[0][1]:,} of its {height:,} rows "
                f"({made:,} of {need:,} bytes); the file was cut short or damaged")
    return (f"is truncated: its image data holds {made:,} of the {need:,} bytes its {width:,} x {height:,} "
            "pixels need; the file was cut short or damaged")


def _png_image_chunks(path: Path) -> tuple[bytes | None, list[tuple[int, int]]]:
    """A PNG's IHDR data and the (offset, length) of each IDAT chunk's data, read from
    the chunk headers (at most MAX_PNG_CHUNKS of them)."""
    header, parts = None, []
    with open(path, "rb") as f:
        f.seek(8)
        for _ in range(MAX_PNG_CHUNKS + 1):
            chunk = f.read(8)
            if len(chunk) < 8:
                break
            length, name = int.from_bytes(chunk[:4], "big"), chunk[4:8]
            if name == b"IHDR" and header is None:
                header = f.read(min(length, 13))
                f.seek(length - len(header), os.SEEK_CUR)
            elif name == b"IDAT":
                parts.append((f.tell(), length))
                f.seek(length, os.SEEK_CUR)
            elif name == b"IEND":
                break
            else:
                f.seek(length, os.SEEK_CUR)
            f.seek(4, os.SEEK_CUR)  # the checksum, which verify() has checked
    return header, parts


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
        chunks = _midi_chunks_of_file(path, size)
        return Sniffed(media.MIDI, chunks if isinstance(chunks, str) else None, deferred=True)
    facts = midi_facts(path.read_bytes())
    if isinstance(facts, str):
        return Sniffed(media.MIDI, facts)
    if facts["notes"] == 0:
        return Sniffed(media.MIDI, _no_notes(facts), facts)
    return Sniffed(media.MIDI, None, facts)


def _no_notes(facts: dict[str, Any]) -> str:
    """"has no notes", and why when it has note-ons: what pretty_midi (and so every
    synthesizer and the music models) plays is a note-on ended by a later note-off."""
    if not facts["note_ons"]:
        return "has no notes"
    why, fix = [], []
    zero, unended = facts["zero_length"], facts["unended"]
    if zero:
        why.append(f"{_count(zero, 'note')} {'ends on the tick it starts' if zero == 1 else 'end on the tick they start'}")
        fix.append("give each note a length of at least one tick")
    if unended:
        why.append(f"{_count(unended, 'note-on')} {'is' if unended == 1 else 'are'} never ended")
        fix.append("end each note with a note-off (or a note-on of velocity 0)")
    return ("has no notes to play: a note is a note-on ended by a note-off on a later tick, and here "
            + " and ".join(why) + "; " + " and ".join(fix))


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


class _Damaged(Exception):
    """A MIDI file's bytes break the standard (or what mido and pretty_midi read)."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):  # the standard allows four bytes
        byte = data[i]
        i += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, i
    raise _Damaged("a variable-length number longer than four bytes")


def _midi_chunks(data: bytes) -> tuple[int, list[tuple[int, int]]] | str:
    """(ticks per beat, [(start, end) of each track's events]) from the header and the
    chunk list, or a problem in words. mido reads the tracks the header declares, one
    chunk after another, and each must be a track: so must this."""
    return _chunk_list(lambda at, n: data[at:at + n], len(data))


def _midi_chunks_of_file(path: Path, size: int) -> tuple[int, list[tuple[int, int]]] | str:
    """_midi_chunks, reading only the header and each chunk's 8-byte header: the cheap
    check of a MIDI file."""
    with open(path, "rb") as f:
        def read(at: int, n: int) -> bytes:
            f.seek(at)
            return f.read(n)

        return _chunk_list(read, size)


def _chunk_list(read, size: int) -> tuple[int, list[tuple[int, int]]] | str:
    head = read(0, 14)
    if len(head) < 14 or head[:4] != b"MThd":
        return "is not a Standard MIDI File"
    header = int.from_bytes(head[4:8], "big")
    if header < 6:
        return f"is a damaged MIDI file: its header chunk is {header} bytes long; it needs 6"
    kind, tracks, division = (int.from_bytes(head[8:10], "big"), int.from_bytes(head[10:12], "big"),
                              int.from_bytes(head[12:14], "big"))
    if kind > 2:
        return f"is a damaged MIDI file (format {kind})"
    if kind == 2:
        return "is a type 2 MIDI file (independent patterns); give a type 0 or 1 file"
    if division & 0x8000:
        return "counts time in SMPTE frames; give a file that counts ticks per beat (what editors write)"
    if division == 0:
        return "is a damaged MIDI file (0 ticks per beat)"
    if tracks == 0:
        return "is a damaged MIDI file: its header declares no tracks"
    chunks: list[tuple[int, int]] = []
    i = 8 + header
    while len(chunks) < tracks:
        chunk = read(i, 8) if i + 8 <= size else b""
        if len(chunk) < 8:
            there = len(chunks)
            return (f"is a damaged MIDI file: the header declares {tracks:,} tracks, {there:,} "
                    f"{'is' if there == 1 else 'are'} there")
        name, length = chunk[:4], int.from_bytes(chunk[4:8], "big")
        if name != b"MTrk":
            return (f"is a damaged MIDI file: track {len(chunks) + 1} of {tracks:,} should start at byte {i:,}, "
                    f"and a {name.decode('latin-1')!r} chunk is there")
        if i + 8 + length > size:
            return (f"is a damaged MIDI file: truncated (track {len(chunks) + 1} declares {length:,} bytes, "
                    f"{size - i - 8:,} are there)")
        if length == 0:
            return f"is a damaged MIDI file: track {len(chunks) + 1} holds no events (not even its end)"
        chunks.append((i + 8, i + 8 + length))
        i += 8 + length
    if tracks > MAX_MIDI_TRACKS:
        return f"holds {tracks:,} tracks; MIDI files are limited to {MAX_MIDI_TRACKS:,} (a piece has a few dozen)"
    return division, chunks


# (key, mode) of a key signature: mido decodes only these
_KEYS = {(key, mode) for key in range(-7, 8) for mode in (0, 1)}


def _meta_problem(kind: int, body: bytes, first_track: bool) -> str | None:
    """Why mido or pretty_midi cannot read this meta event, or None (pretty_midi reads
    time signatures of the first track only)."""
    n = len(body)
    if kind == 0x51:
        if n < 3:
            return f"a tempo event of {n} bytes (it needs 3)"
        if not int.from_bytes(body[:3], "big"):
            return "a tempo of 0 microseconds per beat"
    elif kind == 0x58:
        if n < 4:
            return f"a time signature of {n} bytes (it needs 4)"
        if body[0] == 0 and first_track:
            return "a time signature of 0 beats per bar"
        if body[1] > 16:  # mido checks 2 ** n by a float logarithm, which fails for some large n
            return f"a time signature whose beat is a 1/2^{body[1]} note"
    elif kind == 0x59:
        if n < 2:
            return f"a key signature of {n} bytes (it needs 2)"
        if ((body[0] ^ 0x80) - 0x80, body[1]) not in _KEYS:
            return f"a key signature of {(body[0] ^ 0x80) - 0x80} sharps in mode {body[1]}, which names no key"
    elif kind == 0x54:
        if n < 5:
            return f"an SMPTE offset of {n} bytes (it needs 5)"
        if body[0] >> 5 > 3 or body[1] > 59 or body[2] > 59 or body[4] > 99:
            return "an SMPTE offset out of range"
    elif kind == 0x00 and n == 1:
        return "a sequence number of 1 byte (it needs 0 or 2)"
    elif kind == 0x20 and n == 0:
        return "a channel prefix without its channel"
    return None


_CHECKED_META = frozenset((0x00, 0x20, 0x51, 0x54, 0x58, 0x59))
# the meta events mido knows; it reads any other kind (0x08 program name, 0x4B tag ...)
# with a delta time of 0, and so later events come that much earlier (mido 1.3): what
# it reads is what pretty_midi plays, so the ticks here follow it
_MIDO_META = frozenset((0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x20, 0x21, 0x2F, 0x51, 0x54, 0x58,
                        0x59, 0x7F))


def _walk_track(data: bytes, j: int, end: int, number: int, tempos: list[tuple[int, int]],
                lengths: dict[int, int], spans: dict[tuple[int, int, int], list[int]],
                notes: list | None) -> tuple[int, int, int, int, int, int]:
    """One track's (played notes, played drum notes, note-ons, zero-length notes,
    note-ons never ended, last tick), in one pass over its bytes. Adds the first track's
    tempo changes to `tempos`, each pitched note's length in ticks to `lengths` (ticks:
    how many) and each instrument's first and last tick to `spans` ((program, channel,
    track): [first, last], pretty_midi's grouping).

    Notes are paired as pretty_midi pairs them (each track on its own, by channel and
    pitch): a note-off (or a note-on of velocity 0) ends every open note of its pitch
    that started on an earlier tick; one that started on the same tick stays open if
    some earlier one was ended, else it is dropped (a zero-length note). A note-on that
    is never ended is not played. With `notes`, each played note is appended as
    (start tick, end tick, channel, program, track)."""
    tick = status = played = drums = ons = zero = 0
    open_notes: dict[int, list[int]] = {}
    programs = [0] * 16
    while j < end:
        delta = data[j]
        if delta < 0x80:
            j += 1
        else:
            delta, j = _varint(data, j)
        tick += delta
        byte = data[j]
        if byte >= 0xF0:
            if byte == 0xFF:  # meta event: running status stays as it was
                kind = data[j + 1]
                if kind not in _MIDO_META:
                    tick -= delta  # mido reads a meta event of a kind it does not know without its delta time
                size, j = _varint(data, j + 2)
                if size > MAX_MIDI_EVENT_BYTES:
                    raise _Damaged(f"a meta event of {size:,} bytes (at most {MAX_MIDI_EVENT_BYTES:,})")
                if j + size > end:
                    raise _Damaged("an event runs past the end of its track")
                if kind in _CHECKED_META:
                    body = data[j:j + size]
                    problem = _meta_problem(kind, body, number == 0)
                    if problem:
                        raise _Damaged(f"{problem} at byte {j:,}")
                    if kind == 0x51 and number == 0:  # pretty_midi's clock: the first track's tempos
                        tempos.append((tick, int.from_bytes(body[:3], "big")))
                j += size
                continue
            if byte == 0xF0 or byte == 0xF7:  # system exclusive: ends running status
                size, j = _varint(data, j + 1)
                if size > MAX_MIDI_EVENT_BYTES:
                    raise _Damaged(f"a system-exclusive event of {size:,} bytes (at most {MAX_MIDI_EVENT_BYTES:,})")
                if j + size > end:
                    raise _Damaged("an event runs past the end of its track")
                body = data[j:j + size]
                if body[:1] == b"\xf0":
                    body = body[1:]
                if body[-1:] == b"\xf7":
                    body = body[:-1]
                if body and max(body) > 0x7F:
                    raise _Damaged(f"a system-exclusive event with a byte above 127 at byte {j:,}")
                j += size
                status = 0
                continue
            raise _Damaged(f"status byte 0x{byte:02X} at byte {j:,}, which starts no event of a MIDI file")
        if byte & 0x80:
            status = byte
            j += 1
        elif not status:
            raise _Damaged(f"a data byte without a status at byte {j:,}")
        high = status & 0xF0
        if high == 0xC0 or high == 0xD0:
            value = data[j]
            if value > 0x7F:
                raise _Damaged(f"a data byte above 127 at byte {j:,}")
            if high == 0xC0:
                programs[status & 0x0F] = value
            j += 1
            continue
        pitch, value = data[j], data[j + 1]
        if pitch > 0x7F or value > 0x7F:
            raise _Damaged(f"a data byte above 127 at byte {j:,}")
        j += 2
        if high == 0x90 and value:
            ons += 1
            key = (status & 0x0F) << 7 | pitch
            starts = open_notes.get(key)
            if starts is None:
                open_notes[key] = [tick]
            else:
                starts.append(tick)
        elif high == 0x80 or high == 0x90:
            key = (status & 0x0F) << 7 | pitch
            starts = open_notes.get(key)
            if starts is None:
                continue  # a note-off of no open note: ignored
            if starts[-1] != tick:  # every open note started earlier: all end here
                ended = starts
                del open_notes[key]
            elif starts[0] == tick:  # every open note started on this tick: dropped
                zero += len(starts)
                del open_notes[key]
                continue
            else:  # those that started on this tick stay open
                k = len(starts) - 1
                while starts[k - 1] == tick:
                    k -= 1
                ended, open_notes[key] = starts[:k], starts[k:]
            channel, count, first = status & 0x0F, len(ended), ended[0]
            played += count
            if channel == 9:  # channel 10, General MIDI's drums
                drums += count
            elif count == 1:
                length = tick - first
                lengths[length] = lengths.get(length, 0) + 1
            else:
                for start in ended:
                    lengths[tick - start] = lengths.get(tick - start, 0) + 1
            group = (programs[channel], channel, number)
            span = spans.get(group)
            if span is None:
                spans[group] = [first, tick]
            else:
                if first < span[0]:
                    span[0] = first
                span[1] = tick
            if notes is not None:
                notes.extend((start, tick, channel, programs[channel], number) for start in ended)
    if j != end:
        raise _Damaged("its last event runs past the end of the track")
    return played, drums, ons, zero, sum(map(len, open_notes.values())), tick


def midi_facts(data: bytes, notes: list | None = None) -> dict[str, Any] | str:
    """What a Standard MIDI File plays, read in one pass over its bytes (no message
    objects, no per-tick table), or a problem in words.

    It reads what the run's readers read, and refuses what they would refuse: the
    tracks the header declares (mido), events and meta events mido decodes, the notes
    pretty_midi plays (a note-on ended by a later note-off; see _walk_track) and
    seconds by pretty_midi's clock (the first track's tempo changes).

    notes, drum_notes: notes played (on channel 10); note_ons, zero_length, unended:
    note-ons in the file, those dropped for ending on the tick they start, those never
    ended; seconds, last_tick: when the last event of any track plays; tempos: the
    first track's (tick, microseconds per beat), in order; note_lengths: {ticks: how
    many} of the pitched notes; instruments: (program, channel, track, first tick, last
    tick) of each group pretty_midi makes an instrument of (see midi_clock for seconds).
    `notes`: a list to receive every played note as (start tick, end tick, channel,
    program, track)."""
    chunks = _midi_chunks(data)
    if isinstance(chunks, str):
        return chunks
    division, tracks = chunks
    tempos: list[tuple[int, int]] = []
    lengths: dict[int, int] = {}
    spans: dict[tuple[int, int, int], list[int]] = {}
    played = drums = ons = zero = unended = last_tick = 0
    number = 0
    try:
        for number, (start, end) in enumerate(tracks):
            p, d, o, z, u, t = _walk_track(data, start, end, number, tempos, lengths, spans, notes)
            played, drums, ons, zero, unended = played + p, drums + d, ons + o, zero + z, unended + u
            last_tick = max(last_tick, t)
    except _Damaged as exc:
        return f"is a damaged MIDI file (track {number + 1}: {exc})"
    except IndexError:
        return f"is a damaged MIDI file (track {number + 1} ends inside an event)"
    return {"notes": played, "drum_notes": drums, "note_ons": ons, "zero_length": zero, "unended": unended,
            "seconds": midi_clock({"tempos": tempos, "ticks_per_beat": division})(last_tick),
            "last_tick": last_tick, "tracks": len(tracks), "ticks_per_beat": division, "tempos": tuple(tempos),
            "note_lengths": lengths, "instruments": tuple((*group, *span) for group, span in spans.items())}


def midi_clock(facts: dict[str, Any]):
    """tick -> seconds for midi_facts' `facts`, as pretty_midi counts them: 120 bpm
    until the first track's first tempo change, then each change from its tick on."""
    import bisect

    division = facts["ticks_per_beat"]
    ticks, offsets, scales = [0], [0.0], [500_000 / division / 1e6]
    for change_tick, change_tempo in facts["tempos"]:
        offsets.append(offsets[-1] + (change_tick - ticks[-1]) * scales[-1])
        ticks.append(change_tick)
        scales.append(change_tempo / division / 1e6)
    if len(ticks) == 1:
        scale = scales[0]
        return lambda tick: tick * scale

    def seconds(tick: int) -> float:
        k = max(bisect.bisect_left(ticks, tick) - 1, 0)  # the last change before `tick`
        return offsets[k] + (tick - ticks[k]) * scales[k]

    return seconds


def midi_notes(data: bytes) -> list[tuple[float, float, int, int, int]] | str:
    """Every note pretty_midi would play, as (start s, end s, channel, program, track),
    or a problem in words."""
    raw: list[tuple[int, int, int, int, int]] = []
    facts = midi_facts(data, raw)
    if isinstance(facts, str):
        return facts
    seconds = midi_clock(facts)
    return [(seconds(s), seconds(e), c, p, t) for s, e, c, p, t in raw]


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
