"""Reading MIDI files safely: bounded, facts cached, every failure a UserError that says
which file and why. Used by music.transformer (primers, training data) and by
audio.render (the MIDI it plays).

What validation knows of a MIDI file and what the run reads agree: both take their
facts from studio.sniff's one pass over the bytes, which reads the file as mido and
pretty_midi do (the tracks the header declares, the notes pretty_midi plays, its
clock), and refuses what they would refuse."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from studio import UserError

MIDI_SUFFIXES = {".mid", ".midi"}
# pretty_midi keeps a table of every tick up to the last one (8 bytes each) and refuses
# files whose last tick + 1 is past this; the same limit is checked first, in words.
MAX_TICKS = 10_000_000


@dataclass(frozen=True)
class MidiFacts:
    seconds: float  # when the last event plays, by pretty_midi's clock
    notes: int  # notes pretty_midi plays: a note-on ended by a later note-off
    last_tick: int  # the largest absolute tick of any track
    drum_notes: int = 0  # of them, on channel 10
    no_notes_because: str = ""  # with notes == 0 and note-ons in the file: why none plays


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


def file_facts(path: Path, *, full: bool = False) -> MidiFacts | None:
    """The facts of the MIDI file at `path` (studio.sniff's pass, read once per version
    of the file), or a UserError naming the file when it cannot be used. None while a
    validation's time budget is spent (studio.sniff.check_budget) and not `full`: the
    run checks it."""
    from studio import media
    from studio.sniff import sniff

    found = sniff(path, full=full)
    if found.deferred and found.ok:
        return None
    if found.media_type == media.MIDI and "notes" in found.info:  # usable, or without notes to play
        info, because = found.info, ""
        if not info["notes"] and found.problem and ": " in found.problem:
            because = found.problem.split(": ", 1)[1]  # "has no notes to play: <why>"
        return MidiFacts(info["seconds"], info["notes"], info["last_tick"], info.get("drum_notes", 0), because)
    problem = found.problem or f"is {found.media_type or 'not a file type Studio reads'}, not a MIDI file"
    raise UserError(f"{path.name} {problem}")


def midi_problem(facts: MidiFacts, max_seconds: float | None = None, what: str = "",
                 need_notes: bool = True) -> str | None:
    """Why a MIDI with these facts is refused, or None."""
    if need_notes and facts.notes == 0:
        return "the MIDI file has no notes to play" + (f": {facts.no_notes_because}" if facts.no_notes_because else "")
    if facts.last_tick >= MAX_TICKS:
        return (f"its last event is at tick {facts.last_tick:,}; MIDI files are limited to {MAX_TICKS:,} ticks "
                "(a few hours at any resolution): the file is damaged, or its timing is not meant to be played")
    if max_seconds is not None and facts.seconds > max_seconds:
        return (f"it lasts {facts.seconds:,.0f} s; {what or 'Studio'} takes MIDI files of at most "
                f"{max_seconds:,.0f} s ({max_seconds / 60:.0f} minutes). Cut the file, or check its tempo")
    return None


def check_midi_input(artifact, max_seconds: float | None = None, what: str = "") -> None:
    """For a Params validator: a ValueError when a MIDI input is refused by
    midi_problem. An input an upstream step will make (pending) is checked when it
    exists, and so is a file validation had no time left for."""
    if artifact is None or artifact.pending:
        return
    try:
        facts = file_facts(artifact.path)
    except (UserError, OSError) as exc:
        raise ValueError(str(exc)) from None
    if facts is None:
        return
    problem = midi_problem(facts, max_seconds, what)
    if problem:
        raise ValueError(f"{artifact.path.name}: {problem}")


def load_midi(path: Path, *, max_seconds: float | None = None, what: str = "", need_notes: bool = True):
    """A pretty_midi.PrettyMIDI, or a UserError that says what is wrong with the file.
    Its length, notes and last tick are measured (and refused) before pretty_midi
    builds anything, by the same rules validation applies."""
    import pretty_midi

    path = Path(path)
    facts = file_facts(path, full=True)
    assert facts is not None
    problem = midi_problem(facts, max_seconds, what, need_notes)
    if problem:
        raise UserError(f"{path.name}: {problem}")
    midi = read_midi(path)
    try:
        with warnings.catch_warnings():  # e.g. "tempo changes on non-zero tracks": pretty_midi's clock is known
            warnings.simplefilter("ignore")
            result = pretty_midi.PrettyMIDI(mido_object=midi)
    except Exception as exc:  # mido raises many kinds for a damaged file
        raise UserError(f"{path}: the MIDI file is damaged or truncated ({type(exc).__name__}: {exc})") from None
    if need_notes and not any(instrument.notes for instrument in result.instruments):
        raise UserError(f"{path.name}: the MIDI file has no notes to play")  # never, while sniff reads as pretty_midi
    return result
