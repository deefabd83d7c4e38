"""Magenta's performance encoding (Oore et al. 2018, "This Time with Feeling"): a
piece as a stream of 388 events.

    NOTE_ON(pitch)     0..127
    NOTE_OFF(pitch)    128..255
    TIME_SHIFT(n)      256..355   n = 1..100 steps of 10 ms (longer gaps chain shifts)
    VELOCITY(bin)      356..387   bin = 1..32, 4 MIDI velocities each

plus two tokens of our own: BOS (388) starts a piece, EOS (389) ends one. Every
non-drum instrument is merged into one stream: two voices striking one pitch together
become one note, and a pitch struck again while sounding ends the earlier note there.
Otherwise timing round-trips within one 10 ms step and velocity within one bin.
"""

from __future__ import annotations

from dataclasses import dataclass

NOTE_ON, NOTE_OFF, TIME_SHIFT, VELOCITY = 0, 128, 256, 356
BOS, EOS = 388, 389
VOCAB_SIZE = 390
STEP_S = 0.01
MAX_SHIFT = 100
VELOCITY_BINS = 32
BIN_WIDTH = 128 // VELOCITY_BINS


def velocity_to_bin(velocity: int) -> int:
    return min(VELOCITY_BINS, max(1, (velocity - 1) // BIN_WIDTH + 1))


def bin_to_velocity(b: int) -> int:
    return (b - 1) * BIN_WIDTH + BIN_WIDTH // 2 + 1  # the middle of the bin


def describe(token: int) -> str:
    if token < NOTE_OFF:
        return f"NOTE_ON({token})"
    if token < TIME_SHIFT:
        return f"NOTE_OFF({token - NOTE_OFF})"
    if token < VELOCITY:
        return f"TIME_SHIFT({(token - TIME_SHIFT + 1) * 10}ms)"
    if token < BOS:
        return f"VELOCITY({token - VELOCITY + 1})"
    return {BOS: "BOS", EOS: "EOS"}.get(token, f"?{token}")


@dataclass(frozen=True)
class Note:
    pitch: int
    velocity: int
    start: float
    end: float


def notes_of(midi) -> list[Note]:
    """Every pitched note of a pretty_midi.PrettyMIDI, in time order."""
    notes = [Note(n.pitch, n.velocity, n.start, n.end)
             for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def encode(midi) -> list[int]:
    """pretty_midi.PrettyMIDI -> event tokens (without BOS/EOS)."""
    return encode_notes(notes_of(midi))


def encode_notes(notes: list[Note]) -> list[int]:
    """Notes in time order -> event tokens (without BOS/EOS), from time 0."""
    edges = []  # (step, order, kind, pitch, velocity, note id); offs sort before ons
    spans = {}  # note id -> (start step, end step)
    for i, n in enumerate(notes):
        start, end = round(n.start / STEP_S), round(n.end / STEP_S)
        end = max(end, start + 1)
        spans[i] = (start, end)
        edges.append((start, 1, NOTE_ON, n.pitch, n.velocity, i))
        edges.append((end, 0, NOTE_OFF, n.pitch, 0, i))
    edges.sort()
    tokens: list[int] = []
    now, velocity_bin = 0, None
    current: dict[int, int] = {}  # pitch -> id of the note the stream is sounding
    for step, _, kind, pitch, velocity, note in edges:
        while step > now:
            shift = min(MAX_SHIFT, step - now)
            tokens.append(TIME_SHIFT + shift - 1)
            now += shift
        if kind == NOTE_ON:
            held = current.get(pitch)
            if held is not None and spans[held][0] == step:  # a unison: one note, the longer
                if spans[note][1] > spans[held][1]:
                    current[pitch] = note
                continue
            # struck again while sounding: the earlier note ends here (decode does the same)
            b = velocity_to_bin(velocity)
            if b != velocity_bin:
                tokens.append(VELOCITY + b - 1)
                velocity_bin = b
            tokens.append(NOTE_ON + pitch)
            current[pitch] = note
        elif current.get(pitch) == note:  # only the sounding note's own end stops it
            tokens.append(NOTE_OFF + pitch)
            del current[pitch]
    return tokens


def tail_notes(notes: list[Note], seconds: float) -> list[Note]:
    """The notes that start in the last `seconds` of a piece, moved to start at 0: a
    primer as the model continues it, cut before it is encoded (a long file is never
    tokenized whole)."""
    if not notes:
        return []
    end = max(n.end for n in notes)
    kept = [n for n in notes if n.start >= end - seconds]
    if not kept or len(kept) == len(notes):
        return kept
    offset = kept[0].start
    return [Note(n.pitch, n.velocity, n.start - offset, n.end - offset) for n in kept]


def decode(tokens, *, program: int = 0, tempo_bpm: float = 120.0, min_note_s: float = 0.05):
    """Event tokens -> pretty_midi.PrettyMIDI with one instrument. Unknown or special
    tokens are skipped; notes left on at the end are closed."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    instrument = pretty_midi.Instrument(program=program)
    now, velocity = 0.0, bin_to_velocity(velocity_to_bin(64))
    open_notes: dict[int, tuple[float, int]] = {}

    def close(pitch: int, at: float) -> None:
        start, vel = open_notes.pop(pitch)
        instrument.notes.append(pretty_midi.Note(vel, pitch, start, max(at, start + min_note_s)))

    for token in tokens:
        token = int(token)
        if token < NOTE_OFF:
            if token in open_notes:
                close(token, now)
            open_notes[token] = (now, velocity)
        elif token < TIME_SHIFT:
            if token - NOTE_OFF in open_notes:
                close(token - NOTE_OFF, now)
        elif token < VELOCITY:
            now += (token - TIME_SHIFT + 1) * STEP_S
        elif token < BOS:
            velocity = bin_to_velocity(token - VELOCITY + 1)
    for pitch in list(open_notes):
        close(pitch, now)
    instrument.notes.sort(key=lambda n: (n.start, n.pitch))
    midi.instruments.append(instrument)
    return midi


def duration_of(tokens) -> float:
    return sum((t - TIME_SHIFT + 1) * STEP_S for t in tokens if TIME_SHIFT <= t < VELOCITY)


def transpose(tokens, semitones: int) -> list[int] | None:
    """Shift every pitch; None when a note would leave 0..127."""
    out = []
    for t in tokens:
        if t < TIME_SHIFT:
            base = NOTE_ON if t < NOTE_OFF else NOTE_OFF
            pitch = t - base + semitones
            if not 0 <= pitch <= 127:
                return None
            out.append(base + pitch)
        else:
            out.append(t)
    return out
