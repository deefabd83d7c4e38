"""music.transformer's training data: a folder of MIDI files, or a corpus that installs
with music21, as event-token sequences."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from studio import UserError
from studio_midi.reading import MIDI_SUFFIXES, load_midi

SOURCES = {"music21:bach": "the Bach works in music21's corpus (433 files, 371 chorales)"}
# a folder's MIDI files are all encoded into token lists in memory (about a token a byte,
# tens of bytes a token as Python ints): 32 MiB of MIDI is some 30,000 pieces of music.
# Each file is also within studio.sniff's MIDI limits (2 MB, 10 million ticks).
MAX_MIDI_FILES = 50_000
MAX_MIDI_TOTAL_BYTES = 32 * 2**20


def load_pieces(source: str) -> list[list[int]]:
    """Event-token sequences (see events.py), one per piece."""
    from studio_music.events import encode

    if source in SOURCES:
        return _music21_bach()
    if "\x00" in source:
        raise UserError(f"--data {source[:300]!r}: a path cannot hold a NUL character")
    root = Path(source).expanduser()
    if not root.is_dir():
        raise UserError(f"--data {source[:300]!r}: give a folder of MIDI files or one of: "
                        + ", ".join(f"{k} ({v})" for k, v in SOURCES.items()))
    from studio.limits import data_files

    files = data_files(root, MIDI_SUFFIXES, max_files=MAX_MIDI_FILES, max_total_bytes=MAX_MIDI_TOTAL_BYTES,
                       what="MIDI files")
    if not files:
        raise UserError(f"--data {source[:300]!r}: no .mid or .midi files found")
    pieces, skipped = [], []
    for path in files:
        try:
            pieces.append(encode(load_midi(path, need_notes=False)))
        except UserError as exc:  # a damaged or unplayable file among many: leave it out, say so
            skipped.append(f"{path.name}: {exc}")
    if skipped:
        if len(skipped) == len(files):
            raise UserError(f"--data {source!r}: none of the {len(files)} MIDI files can be read; the first: "
                            f"{skipped[0]}")
        warnings.warn(f"--data {source!r}: left out {len(skipped)} of {len(files)} MIDI files that cannot be "
                      f"read (the first: {skipped[0]})", stacklevel=2)
    return [p for p in pieces if p]


def _music21_bach() -> list[list[int]]:
    import pretty_midi

    from studio_music.events import encode

    try:
        from music21 import converter, corpus
    except ImportError:
        raise UserError("--data music21:bach needs music21: pip install 'studio-media[train]'")
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
