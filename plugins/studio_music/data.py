"""Music training data: a folder of MIDI files, or a corpus that installs with music21."""

from __future__ import annotations

import tempfile
from pathlib import Path

from studio.errors import UserError

SOURCES = {"music21:bach": "the Bach works in music21's corpus (433 files, 371 chorales)"}
MIDI_SUFFIXES = {".mid", ".midi"}


def load_midi(path: Path):
    """A pretty_midi.PrettyMIDI, or a UserError that says what is wrong with the file."""
    import pretty_midi

    if not path.is_file():
        raise UserError(f"{path}: no such MIDI file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); give a Standard MIDI File")
    with open(path, "rb") as f:
        header = f.read(4)
    if header != b"MThd":
        raise UserError(f"{path}: not a MIDI file (it starts with {header!r}, a MIDI file with b'MThd')")
    try:
        return pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido raises many kinds for a damaged file
        raise UserError(f"{path}: the MIDI file is damaged or truncated ({type(exc).__name__}: {exc})") from None


def load_pieces(source: str) -> list[list[int]]:
    """Event-token sequences (see events.py), one per piece."""
    from studio_music.events import encode

    if source in SOURCES:
        return _music21_bach()
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"--data {source!r}: give a folder of MIDI files or one of: "
                        + ", ".join(f"{k} ({v})" for k, v in SOURCES.items()))
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES)
    if not files:
        raise UserError(f"--data {source!r}: no .mid or .midi files found")
    pieces = [encode(load_midi(p)) for p in files]
    return [p for p in pieces if p]


def _music21_bach() -> list[list[int]]:
    import pretty_midi

    from studio_music.events import encode

    try:
        from music21 import converter, corpus
    except ImportError:
        raise UserError("--data music21:bach needs music21: pip install 'studio[train]'")
    pieces = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(corpus.getComposer("bach")):
            midi_path = Path(tmp) / f"{i}.mid"
            try:
                converter.parse(path).write("midi", fp=str(midi_path))
                tokens = encode(pretty_midi.PrettyMIDI(str(midi_path)))
            except Exception:  # a few corpus files do not export to MIDI; skip them
                continue
            if tokens:
                pieces.append(tokens)
    return pieces
