"""Music-set metrics: muspy's descriptive metrics per piece (Dong et al. 2020), their
means over the set, and how far each mean is from a reference set's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio.errors import clip, printable

METRICS = ("pitch_range", "n_pitches_used", "n_pitch_classes_used", "polyphony", "polyphony_rate",
           "pitch_class_entropy", "scale_consistency", "groove_consistency", "empty_beat_rate")


MAX_ROLL_STEPS = 1_000_000  # time steps of the piano roll polyphony is taken over: 128 MB of booleans
MAX_SECONDS = 20 * 60  # of music measured in a file, as audio.render renders at most


def piece_metrics(path: Path) -> dict[str, float] | None:
    """muspy's metrics of one MIDI file, None when it has no notes. Groove consistency
    is taken over 4/4 measures at the file's resolution. The file is read and checked
    before muspy builds anything from it (see check_midi); a piece whose piano roll
    would be longer than MAX_ROLL_STEPS is measured at a coarser resolution."""
    import math

    from studio import UserError
    from studio_eval.requires import require

    muspy = require("muspy", "music metrics")

    check_midi(path)
    try:
        music = muspy.read_midi(str(path))
    except MemoryError:
        raise
    except Exception as exc:  # mido and muspy raise many kinds on a damaged file
        raise UserError(f"{_shown(path)}: not a MIDI file muspy can read ({type(exc).__name__}: "
                        f"{clip(str(exc), 200)})") from None
    if not any(track.notes for track in music.tracks):
        return None
    end = max(note.end for track in music.tracks for note in track.notes)
    if end >= MAX_ROLL_STEPS and music.resolution:
        target = music.resolution * MAX_ROLL_STEPS // (end + 1)
        if target < 1:
            raise UserError(f"{_shown(path)}: its notes span {end:,} ticks, {end // music.resolution:,} beats; music "
                            f"metrics are measured over at most {MAX_ROLL_STEPS:,} beats")
        music.adjust_resolution(target=target)
    values = {
        "pitch_range": muspy.pitch_range(music), "n_pitches_used": muspy.n_pitches_used(music),
        "n_pitch_classes_used": muspy.n_pitch_classes_used(music), "polyphony": muspy.polyphony(music),
        "polyphony_rate": muspy.polyphony_rate(music), "pitch_class_entropy": muspy.pitch_class_entropy(music),
        "scale_consistency": muspy.scale_consistency(music),
        "groove_consistency": muspy.groove_consistency(music, measure_resolution=4 * music.resolution),
        "empty_beat_rate": muspy.empty_beat_rate(music),
    }
    return {k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))}


def check_midi(path: Path) -> dict[str, Any]:
    """A MIDI file's facts (studio.sniff.midi_facts), read only if it is a regular file
    of at most 2 MB, and refused by name when it is damaged or plays longer than
    MAX_SECONDS: its notes' lengths, not its size, are what a piano roll costs."""
    import os
    import stat

    from studio import UserError
    from studio.sniff import MAX_MIDI_BYTES, midi_facts

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UserError(f"{_shown(path)}: cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{_shown(path)}: not a regular file (a pipe, a device or a folder)")
        if st.st_size > MAX_MIDI_BYTES:
            raise UserError(f"{_shown(path)}: {st.st_size:,} bytes; MIDI files are measured up to "
                            f"{MAX_MIDI_BYTES:,} bytes (real ones are kilobytes)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_MIDI_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_MIDI_BYTES:
        raise UserError(f"{_shown(path)}: grows past {MAX_MIDI_BYTES:,} bytes while read; not measured")
    facts = midi_facts(data)
    if isinstance(facts, str):
        raise UserError(f"{_shown(path)} {facts}")
    if facts["seconds"] > MAX_SECONDS:
        raise UserError(f"{_shown(path)}: plays {facts['seconds'] / 60:,.0f} minutes (its last event at tick "
                        f"{facts['last_tick']:,}); music metrics measure pieces of at most {MAX_SECONDS // 60} "
                        "minutes: give shorter pieces")
    beats = facts["last_tick"] // facts["ticks_per_beat"] if isinstance(facts["ticks_per_beat"], int) else 0
    if beats >= MAX_ROLL_STEPS:  # not even one step a beat would fit the piano roll
        raise UserError(f"{_shown(path)}: its notes span {facts['last_tick']:,} ticks, {beats:,} beats; music metrics "
                        f"are measured over at most {MAX_ROLL_STEPS:,} beats")
    return facts


def _shown(path: Path) -> str:
    return printable(clip(str(path), 300))


def summarise(pieces: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """metric -> {mean, std} over the pieces that have it."""
    import statistics

    out = {}
    for name in METRICS:
        values = [p[name] for p in pieces if name in p]
        if values:
            out[name] = {"mean": statistics.fmean(values),
                         "std": statistics.pstdev(values) if len(values) > 1 else 0.0}
    return out


def compare(generated: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per metric: the generated and reference means and their gap in reference standard
    deviations (0: the same on average; beyond 1: clearly apart)."""
    out = {}
    for name in METRICS:
        if name in generated and name in reference:
            gap = generated[name]["mean"] - reference[name]["mean"]
            scale = reference[name]["std"] or abs(reference[name]["mean"]) or 1.0
            out[name] = {"generated": generated[name]["mean"], "reference": reference[name]["mean"],
                         "gap_in_std": gap / scale}
    return out
