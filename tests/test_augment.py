"""image.augment and audio.augment: seeded, measurable, and identity when asked for nothing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from PIL import Image

from studio.testing import assert_generator_contract, make_artifact, make_context, run_yaml
from studio_audio.augment import AudioAugment, quick_resampling_rate
from studio_image.augment import ImageAugment

NOTHING = dict(rotate=0, translate=0, scale=0, brightness=0, contrast=0)


@pytest.fixture
def digit(tmp_path):
    pixels = np.full((32, 32), 255, np.uint8)
    pixels[6:26, 12:20] = 0  # a dark bar on white: a "1"
    Image.fromarray(pixels).save(tmp_path / "one.png")
    return make_artifact(tmp_path / "one.png")


def augmented(params, seed=0):
    return np.asarray(ImageAugment().generate(params, make_context(seed=seed))["image"])


def test_the_generators_keep_the_contract():
    assert_generator_contract(ImageAugment)
    assert_generator_contract(AudioAugment)


def test_image_augment_is_seeded_keeps_size_and_mode_and_is_the_identity_when_asked_for_nothing(digit):
    params = ImageAugment.Params(image=digit)
    first = augmented(params, seed=1)
    assert first.shape == (32, 32) and np.array_equal(first, augmented(params, seed=1))
    assert not np.array_equal(first, augmented(params, seed=2))
    assert np.array_equal(augmented(ImageAugment.Params(image=digit, **NOTHING)), np.asarray(Image.open(digit.path)))


def test_a_shift_moves_the_ink_and_auto_fill_keeps_the_white_ground(digit):
    moved = augmented(ImageAugment.Params(image=digit, **{**NOTHING, "translate": 0.25}), seed=3)
    assert moved.min() == 0 and moved[0].min() > 200  # the ground stays white where the shift uncovers it
    original_centre = np.argwhere(np.asarray(Image.open(digit.path)) < 128).mean(axis=0)
    assert np.abs(np.argwhere(moved < 128).mean(axis=0) - original_centre).max() > 1  # the bar moved


def test_erasing_and_flipping(digit):
    erased = augmented(ImageAugment.Params(image=digit, **NOTHING, erase=1.0, fill="#808080"))
    assert (erased == 128).sum() > 0
    flipped = [augmented(ImageAugment.Params(image=digit, **NOTHING, vertical_flip=True), seed=s) for s in range(8)]
    original = np.asarray(Image.open(digit.path))
    assert any(np.array_equal(f, original[::-1]) for f in flipped) and any(np.array_equal(f, original) for f in flipped)


def test_a_seed_sweep_makes_variants_in_a_pipeline(digit, tmp_path):
    result = run_yaml(f"""
        name: variants
        steps:
          - id: aug
            uses: image.augment
            with: {{image: "{digit.path}", elastic: 30}}
            sweep: {{seed: [1, 2, 3, 4]}}
    """, tmp_path)
    assert result.status == "done", [item.error for item in result.failed]
    images = {a.sha256 for a in result.artifacts("aug")}
    assert len(images) == 4
    assert result.step("aug")[0].notes["ops"] == ["RandomAffine", "ElasticTransform", "ColorJitter"]


def tone(path, hz=440.0, rate=16000, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    return make_artifact(path)


def peak_hz(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]


def test_audio_augment_draws_are_recorded_and_heard(tmp_path):
    clip = tone(tmp_path / "a.wav")
    ctx = make_context(seed=5)
    out = AudioAugment().generate(AudioAugment.Params(audio=clip, gain_db=0, pitch_semitones=3, speed=0.2), ctx)
    heard = out["audio"].samples[:, 0]
    expected = 440 * ctx.notes["speed"] * 2 ** (ctx.notes["pitch_semitones"] / 12)
    assert abs(peak_hz(heard, 16000) - expected) < 3
    assert abs(len(heard) - 16000 / ctx.notes["speed"]) <= 2  # faster is shorter


@pytest.mark.parametrize("rate", [16000, 44100, 22050, 11025, 48000, 8000])
def test_speed_and_pitch_resample_from_a_rate_that_shares_a_large_factor(rate):
    """torchaudio's resampling kernel has rate / gcd rows: 16 kHz from 17,183 Hz (a
    drawn 1.2 semitones) took seconds for half a second of audio."""
    import math

    for wanted in (rate * 0.71, rate * 1.07931, rate * 1.4142):
        chosen = quick_resampling_rate(wanted, rate)
        assert abs(chosen - wanted) <= rate / 1000 and rate // math.gcd(chosen, rate) <= 2000


def test_audio_noise_is_added_at_the_drawn_ratio_and_the_gain_in_db(tmp_path):
    clip = tone(tmp_path / "a.wav")
    original = soundfile.read(clip.path)[0]
    ctx = make_context(seed=2)
    noisy = AudioAugment().generate(AudioAugment.Params(audio=clip, gain_db=0, noise_snr_db=10), ctx)
    noise = noisy["audio"].samples[:, 0] - original
    snr = 10 * np.log10(np.mean(original ** 2) / np.mean(noise ** 2))
    assert abs(snr - ctx.notes["noise_snr_db"]) < 0.5
    ctx = make_context(seed=4)
    louder = AudioAugment().generate(AudioAugment.Params(audio=clip, gain_db=6), ctx)["audio"].samples[:, 0]
    assert abs(20 * np.log10(np.abs(louder).max() / 0.5) - ctx.notes["gain_db"]) < 0.05


def test_a_lowpass_at_or_above_nyquist_is_refused_before_the_run(tmp_path):
    tone(tmp_path / "a.wav")
    with pytest.raises(Exception, match="lowpass_hz 9000 is not below the Nyquist frequency of the 16,000 Hz"):
        run_yaml("""
            name: bad
            steps:
              - {id: a, uses: audio.augment, with: {audio: a.wav, lowpass_hz: 9000}}
        """, tmp_path)
