"""The metrics of studio_eval on sets with known answers: identical sets, shifted
sets, a collapsed generator."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import soundfile
import torch

from studio_eval.frechet import frechet_distance, kernel_distance
from studio_eval.image_metrics import class_report, measure_images, nearest_classes, precision_recall
from studio_eval.music_metrics import compare, piece_metrics, summarise
from studio_eval.text_metrics import distinct_n, repetition


def gaussian(n, d=16, seed=0, shift=0.0, scale=1.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).double() * scale + shift


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_moved_one():
    a = gaussian(4000)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, gaussian(4000, seed=1)) < 0.2  # two samples of one Gaussian
    assert frechet_distance(a, a + 1.0) == pytest.approx(16.0, rel=1e-6)  # |shift|^2 = 16 x 1^2
    # N(0, I) against N(0, 4I): trace(I + 4I - 2 * 2I) = 16
    assert frechet_distance(gaussian(4000, seed=2), gaussian(4000, seed=3, scale=2.0)) == pytest.approx(16, rel=0.05)


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    same, spread = kernel_distance(gaussian(600, seed=1), gaussian(600, seed=2))
    assert abs(same) < 3 * spread + 0.02
    near, _ = kernel_distance(gaussian(600, seed=1), gaussian(600, seed=2, shift=0.5))
    far, _ = kernel_distance(gaussian(600, seed=1), gaussian(600, seed=2, shift=2.0))
    assert same < near < far


def test_precision_and_recall_tell_fidelity_from_diversity():
    real = gaussian(500, d=4, seed=0)
    assert precision_recall(real, gaussian(500, d=4, seed=1)) > (0.8, 0.8)  # the same distribution
    collapsed = real[:5].repeat(100, 1) + 0.01 * gaussian(500, d=4, seed=2)  # five modes, faithful
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.2
    elsewhere = gaussian(500, d=4, seed=3, shift=10.0)  # diverse, but nothing like the real set
    assert precision_recall(real, elsewhere) == (0.0, 0.0)


def test_classes_coverage_balance_and_agreement():
    labels = [str(i % 4) for i in range(400)]
    centres = torch.eye(4, dtype=torch.float64) * 10
    real = centres[[int(label) for label in labels]] + 0.1 * gaussian(400, d=4)
    fake = centres[[0, 1, 2, 3] * 25] + 0.1 * gaussian(100, d=4, seed=5)
    predicted = nearest_classes(real, labels, fake)
    assert predicted == ["0", "1", "2", "3"] * 25
    even = class_report(labels, predicted, ["0", "1", "2", "3"] * 25)
    assert even["class_coverage"] == 1.0 and even["class_balance"] == pytest.approx(1.0)
    assert even["label_agreement"] == 1.0
    one = class_report(labels, ["2"] * 100, ["0", "1", "2", "3"] * 25)
    assert one["class_coverage"] == 0.25 and one["class_balance"] == 0.0 and one["label_agreement"] == 0.25
    assert one["classes_missing"] == ["0", "1", "3"]
    measured = measure_images(real, centres[[2] * 100] + 0.1 * gaussian(100, d=4, seed=6), labels)
    assert measured["mode_collapse"] and measured["spread_ratio"] < 0.1 and measured["recall"] < 0.3
    healthy = measure_images(real, fake, labels)
    assert not healthy["mode_collapse"] and healthy["class_coverage"] == 1.0


def test_distinct_n_and_repetition():
    varied = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn"]
    assert distinct_n(varied, 2) == 1.0
    assert distinct_n(["the same words"] * 10, 2) == pytest.approx(0.1)
    assert repetition("one two three four five six seven eight") == 0.0
    assert repetition("la la la la la la la la la la") == pytest.approx(6 / 7)  # every 4-gram after the first


def scale_midi(path, pitches, start=0.0, step=0.5):
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    for i, pitch in enumerate(pitches):
        piano.notes.append(pretty_midi.Note(velocity=80, pitch=pitch, start=start + i * step,
                                            end=start + (i + 1) * step))
    midi.instruments.append(piano)
    midi.write(str(path))
    return path


def test_muspy_metrics_of_a_c_major_scale_and_a_chromatic_run(tmp_path):
    major = piece_metrics(scale_midi(tmp_path / "major.mid", [60, 62, 64, 65, 67, 69, 71, 72] * 2))
    assert major["n_pitch_classes_used"] == 7 and major["pitch_range"] == 12
    assert major["scale_consistency"] == 1.0 and major["polyphony"] == 1.0
    chromatic = piece_metrics(scale_midi(tmp_path / "chromatic.mid", list(range(60, 84))))
    assert chromatic["n_pitch_classes_used"] == 12 and chromatic["scale_consistency"] < 0.8
    same = compare(summarise([major, major]), summarise([major, major]))
    assert all(entry["gap_in_std"] == 0 for entry in same.values())
    pentatonic = piece_metrics(scale_midi(tmp_path / "pentatonic.mid", [60, 62, 64, 67, 69, 72] * 2))
    apart = compare(summarise([chromatic]), summarise([major, pentatonic]))  # 12 against 6 +- 1
    assert apart["n_pitch_classes_used"] == {"generated": 12, "reference": 6, "gap_in_std": 6}


def tone(path, hz, seconds=1.0, rate=16000, noise=0.0, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * hz * t) + noise * np.random.default_rng(seed).standard_normal(len(t))
    soundfile.write(path, np.clip(x, -1, 1).astype(np.float32), rate)
    return path


def test_audio_distances_are_zero_for_one_set_and_large_for_another_sound(tmp_path):
    from studio_audio.vae import load_vae
    from studio_eval.audio_metrics import measure_audio

    tones = [tone(tmp_path / f"t{i}.wav", 440 + 10 * i) for i in range(4)]
    noise = [tone(tmp_path / f"n{i}.wav", 440, noise=0.5, seed=i) for i in range(4)]
    vae = load_vae("default").eval()
    same = measure_audio(tones, tones, vae)
    assert same["log_mel_frechet"] == pytest.approx(0, abs=1e-3) and same["log_mel_mean_gap_db"] == 0
    assert same["vae_latent_frechet"] == pytest.approx(0, abs=1e-3)
    apart = measure_audio(noise, tones, vae)
    assert apart["log_mel_frechet"] > 100 and apart["log_mel_mean_gap_db"] > 10
    assert apart["vae_latent_frechet"] > 10 * max(same["vae_latent_frechet"], 1e-3)
