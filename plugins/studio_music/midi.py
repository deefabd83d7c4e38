"""Reading MIDI files safely: bounded, facts cached, every failure a UserError that says
which file and why. Used by music.transformer (primers, training data) and by
audio.render (the MIDI it plays)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from studio import UserError

MIDI_SUFFIXES = {".mid", ".midi"}
# pretty_midi keeps a table of every tick up to the last one (8 bytes each) and refuses
# files past this many ticks; the same limit is checked first, with the reason in words.
MAX_TICKS = 10_000_000


@dataclass(frozen=True)
class MidiFacts:
    seconds: float  # when the last event plays, tempo changes applied
    notes: int
    last_tick: int  # the largest absolute tick of any track


def read_midi(path: Path):
    """A mido.MidiFile, or a UserError that says what is wrong with the file."""
    import mido

    if not path.is_file():
        raise UserError(f"{path}: no such MIDI file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); give a Standard MIDI File")
    with open(path, "rb") as f:
        header = f.read(4)
    if header != b"MThd":
        raise UserError(f"{path}: not a MIDI file (it starts with {header!r}, a MIDI file with b'MThd')")
    try:
        midi = mido.MidiFile(str(path))
    except Exception as exc:  # mido raises many kinds for a damaged file
        raise UserError(f"{path}: the MIDI file is damaged or truncated ({type(exc).__name__}: {exc})") from None
    if midi.type == 2:  # independent patterns have no one timeline to play or measure
        raise UserError(f"{path}: a type 2 MIDI file (independent patterns); give a type 0 or 1 file")
    return midi


def measure(midi) -> MidiFacts:
    """Length, notes and last tick of a mido.MidiFile, by walking its messages once:
    nothing is allocated per tick."""
    seconds, notes = 0.0, 0
    for message in midi:  # merged tracks, delta times in seconds (tempo applied)
        seconds += message.time
        if message.type == "note_on" and message.velocity > 0:
            notes += 1
    last_tick = max((sum(m.time for m in track) for track in midi.tracks), default=0)
    return MidiFacts(seconds, notes, last_tick)


@lru_cache(maxsize=64)
def _facts(path: str, size: int, mtime_ns: int) -> MidiFacts:
    # one pass over the bytes (studio.sniff), not mido's message objects: a 2 MB file of
    # notes is measured in a fraction of a second instead of seconds
    from studio.sniff import MAX_MIDI_BYTES, midi_facts

    if size > MAX_MIDI_BYTES:
        raise UserError(f"{path}: {size / 2**20:.1f} MB; MIDI inputs are limited to {MAX_MIDI_BYTES // 2**20} MB")
    facts = midi_facts(Path(path).read_bytes())
    if isinstance(facts, str):
        raise UserError(f"{path}: {facts}")
    return MidiFacts(facts["seconds"], facts["notes"], facts["last_tick"])


def file_facts(path: Path) -> MidiFacts:
    """measure() of a file, read once per version of it."""
    st = path.stat()
    return _facts(str(path), st.st_size, st.st_mtime_ns)


def midi_problem(facts: MidiFacts, max_seconds: float | None = None, what: str = "",
                 need_notes: bool = True) -> str | None:
    """Why a MIDI with these facts is refused, or None."""
    if need_notes and facts.notes == 0:
        return "the MIDI file has no notes to play"
    if facts.last_tick > MAX_TICKS:
        return (f"its last event is at tick {facts.last_tick:,}; MIDI files are limited to {MAX_TICKS:,} ticks "
                "(a few hours at any resolution): the file is damaged, or its timing is not meant to be played")
    if max_seconds is not None and facts.seconds > max_seconds:
        return (f"it lasts {facts.seconds:,.0f} s; {what or 'Studio'} takes MIDI files of at most "
                f"{max_seconds:,.0f} s ({max_seconds / 60:.0f} minutes). Cut the file, or check its tempo")
    return None


def check_midi_input(artifact, max_seconds: float | None = None, what: str = "") -> None:
    """For a Params validator: a ValueError when a MIDI input is refused by
    midi_problem. An input an upstream step will make (pending) is checked when it exists."""
    if artifact is None or artifact.pending:
        return
    try:
        facts = file_facts(artifact.path)
    except (UserError, OSError) as exc:
        raise ValueError(str(exc)) from None
    problem = midi_problem(facts, max_seconds, what)
    if problem:
        raise ValueError(f"{artifact.path.name}: {problem}")


def load_midi(path: Path, *, max_seconds: float | None = None, what: str = "", need_notes: bool = True):
    """A pretty_midi.PrettyMIDI, or a UserError that says what is wrong with the file.
    Its length and last tick are measured before pretty_midi builds anything."""
    import pretty_midi

    midi = read_midi(path)
    problem = midi_problem(measure(midi), max_seconds, what, need_notes)
    if problem:
        raise UserError(f"{path.name}: {problem}")
    try:
        return pretty_midi.PrettyMIDI(mido_object=midi)
    except Exception as exc:  # mido raises many kinds for a damaged file
        raise UserError(f"{path}: the MIDI file is damaged or truncated ({type(exc).__name__}: {exc})") from None
