"""The MIDI byte scanner: what a Standard MIDI File plays, read in one pass over its
bytes, the way mido reads its events and pretty_midi pairs its notes, so that a file
it accepts is one the run's readers play, with the same notes and seconds.

Nothing here decodes into message objects or builds a per-tick table: the pass holds
a few counters per track, so a file of MAX_MIDI_BYTES is checked in linear time.
`studio.sniff` uses it to judge a user's MIDI input; plugins reach it through
`studio.sniff` (midi_facts, midi_notes, midi_clock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_MIDI_TRACKS = 32_767  # mido reads the header's track count as a signed 16-bit number
MAX_MIDI_EVENT_BYTES = 1_000_000  # one meta or sysex event; mido refuses longer ones


def midi_facts(data: bytes, notes: list | None = None) -> dict[str, Any] | str:
    """What a Standard MIDI File plays, read in one pass over its bytes (no message
    objects, no per-tick table), or a problem in words.

    It reads what the run's readers read, and refuses what they would refuse: the
    tracks the header declares (mido), events and meta events mido decodes, the notes
    pretty_midi plays (a note-on ended by a later note-off; see _Track) and
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



def no_notes_problem(facts: dict[str, Any]) -> str:
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


def midi_chunks_of_file(path: Path, size: int) -> tuple[int, list[tuple[int, int]]] | str:
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
    track): [first, last], pretty_midi's grouping). With `notes`, each played note is
    appended as (start tick, end tick, channel, program, track); see _Track for how
    notes are paired."""
    track = _Track(number, lengths, spans, notes)
    tick = status = 0
    while j < end:
        delta = data[j]
        if delta < 0x80:
            j += 1
        else:
            delta, j = _varint(data, j)
        tick += delta
        byte = data[j]
        if byte == 0xFF:  # meta event: running status stays as it was
            if data[j + 1] not in _MIDO_META:
                tick -= delta  # mido reads a meta event of a kind it does not know without its delta time
            j = _meta_event(data, j, end, tick, number, tempos)
        elif byte == 0xF0 or byte == 0xF7:  # system exclusive: ends running status
            j, status = _sysex_event(data, j, end), 0
        elif byte > 0xF0:
            raise _Damaged(f"status byte 0x{byte:02X} at byte {j:,}, which starts no event of a MIDI file")
        else:
            if byte & 0x80:
                status = byte
                j += 1
            elif not status:
                raise _Damaged(f"a data byte without a status at byte {j:,}")
            j = _channel_event(data, j, status, tick, track)
    if j != end:
        raise _Damaged("its last event runs past the end of the track")
    return track.played, track.drums, track.ons, track.zero, track.unended(), tick


def _meta_event(data: bytes, j: int, end: int, tick: int, number: int, tempos: list[tuple[int, int]]) -> int:
    """Checks the meta event at byte `j` (0xFF, its kind, its length, its body) as mido
    decodes it and returns where the next event starts. The first track's tempo changes
    go to `tempos`: they are pretty_midi's clock."""
    kind = data[j + 1]
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
        if kind == 0x51 and number == 0:
            tempos.append((tick, int.from_bytes(body[:3], "big")))
    return j + size


def _sysex_event(data: bytes, j: int, end: int) -> int:
    """Checks the system-exclusive event at byte `j` and returns where the next event
    starts: mido refuses one whose data holds a byte above 127."""
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
    return j + size


def _channel_event(data: bytes, j: int, status: int, tick: int, track: _Track) -> int:
    """Reads the data bytes of a channel event of `status` at byte `j` into `track`
    (program changes and notes; the rest are only checked) and returns where the next
    event starts."""
    high = status & 0xF0
    if high == 0xC0 or high == 0xD0:  # one data byte: program change, channel pressure
        value = data[j]
        if value > 0x7F:
            raise _Damaged(f"a data byte above 127 at byte {j:,}")
        if high == 0xC0:
            track.programs[status & 0x0F] = value
        return j + 1
    pitch, value = data[j], data[j + 1]
    if pitch > 0x7F or value > 0x7F:
        raise _Damaged(f"a data byte above 127 at byte {j:,}")
    if high == 0x90 and value:
        track.note_on(status & 0x0F, pitch, tick)
    elif high == 0x80 or high == 0x90:  # a note-off, or a note-on of velocity 0
        track.note_off(status & 0x0F, pitch, tick)
    return j + 2


class _Track:
    """The notes of one track, paired as pretty_midi pairs them (each track on its own,
    by channel and pitch): a note-off (or a note-on of velocity 0) ends every open note
    of its pitch that started on an earlier tick; one that started on the same tick
    stays open if some earlier one was ended, else it is dropped (a zero-length note).
    A note-on that is never ended is not played."""

    def __init__(self, number: int, lengths: dict[int, int], spans: dict[tuple[int, int, int], list[int]],
                 notes: list | None) -> None:
        self.number, self.lengths, self.spans, self.notes = number, lengths, spans, notes
        self.played = self.drums = self.ons = self.zero = 0
        self.open_notes: dict[int, list[int]] = {}  # channel << 7 | pitch -> start ticks
        self.programs = [0] * 16

    def note_on(self, channel: int, pitch: int, tick: int) -> None:
        self.ons += 1
        key = channel << 7 | pitch
        starts = self.open_notes.get(key)
        if starts is None:
            self.open_notes[key] = [tick]
        else:
            starts.append(tick)

    def note_off(self, channel: int, pitch: int, tick: int) -> None:
        key = channel << 7 | pitch
        starts = self.open_notes.get(key)
        if starts is None:
            return  # a note-off of no open note: ignored
        if starts[-1] != tick:  # every open note started earlier: all end here
            ended = starts
            del self.open_notes[key]
        elif starts[0] == tick:  # every open note started on this tick: dropped
            self.zero += len(starts)
            del self.open_notes[key]
            return
        else:  # those that started on this tick stay open
            k = len(starts) - 1
            while starts[k - 1] == tick:
                k -= 1
            ended, self.open_notes[key] = starts[:k], starts[k:]
        self._play(channel, ended, tick)

    def _play(self, channel: int, ended: list[int], tick: int) -> None:
        """Counts the notes of `channel` that started at `ended` ticks and end at `tick`."""
        count, first = len(ended), ended[0]
        self.played += count
        if channel == 9:  # channel 10, General MIDI's drums
            self.drums += count
        elif count == 1:
            length = tick - first
            self.lengths[length] = self.lengths.get(length, 0) + 1
        else:
            for start in ended:
                self.lengths[tick - start] = self.lengths.get(tick - start, 0) + 1
        group = (self.programs[channel], channel, self.number)
        span = self.spans.get(group)
        if span is None:
            self.spans[group] = [first, tick]
        else:
            if first < span[0]:
                span[0] = first
            span[1] = tick
        if self.notes is not None:
            self.notes.extend((start, tick, channel, self.programs[channel], self.number) for start in ended)

    def unended(self) -> int:
        return sum(map(len, self.open_notes.values()))
