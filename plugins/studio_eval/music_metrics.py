"""Music-set metrics: muspy's descriptive metrics per piece (Dong et al. 2020), their
means over the set, and how far each mean is from a reference set's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS = ("pitch_range", "n_pitches_used", "n_pitch_classes_used", "polyphony", "polyphony_rate",
           "pitch_class_entropy", "scale_consistency", "groove_consistency", "empty_beat_rate")


def piece_metrics(path: Path) -> dict[str, float] | None:
    """muspy's metrics of one MIDI file, None when it has no notes. Groove consistency
    is taken over 4/4 measures at the file's resolution."""
    import math

    from studio_eval.requires import require

    muspy = require("muspy", "music metrics")

    music = muspy.read_midi(str(path))
    if not any(track.notes for track in music.tracks):
        return None
    values = {
        "pitch_range": muspy.pitch_range(music), "n_pitches_used": muspy.n_pitches_used(music),
        "n_pitch_classes_used": muspy.n_pitch_classes_used(music), "polyphony": muspy.polyphony(music),
        "polyphony_rate": muspy.polyphony_rate(music), "pitch_class_entropy": muspy.pitch_class_entropy(music),
        "scale_consistency": muspy.scale_consistency(music),
        "groove_consistency": muspy.groove_consistency(music, measure_resolution=4 * music.resolution),
        "empty_beat_rate": muspy.empty_beat_rate(music),
    }
    return {k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))}


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
