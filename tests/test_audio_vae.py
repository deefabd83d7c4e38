"""audio.vae: every mode on tiny Oobleck VAEs saved here (a plain diffusers directory and
Stable Audio Open's `vae/` layout), resampling and remixing of inputs, bad audio files,
parameter rules caught by `studio validate`, and a short training run."""

import json

import numpy as np
import pytest
import soundfile
import torch

from studio.errors import UserError
from studio.testing import run_yaml


def tiny_oobleck(channels=1, rate=8000):
    from diffusers import AutoencoderOobleck

    from studio_diffusers.oobleck import quiet_weight_norm

    torch.manual_seed(0)
    with quiet_weight_norm():
        return AutoencoderOobleck(encoder_hidden_size=8, downsampling_ratios=[2, 4], channel_multiples=[1, 2],
                                  decoder_channels=8, decoder_input_channels=4, audio_channels=channels,
                                  sampling_rate=rate)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    """A mono 8 kHz Oobleck (hop 8) saved as a diffusers model directory."""
    path = tmp_path_factory.mktemp("vae") / "tiny"
    tiny_oobleck().save_pretrained(path)
    return path


def tone(path, freq=440.0, seconds=0.5, rate=8000, channels=1, level=0.5):
    t = np.arange(round(seconds * rate)) / rate
    wave = level * np.sin(2 * np.pi * freq * t)
    soundfile.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
    return path


def run(tmp_path, steps):
    return run_yaml(json.dumps({"name": "v", "device": "cpu", "steps": steps}), tmp_path)


def vae_step(model, step_id="v", sweep=None, **with_):
    step = {"id": step_id, "uses": "audio.vae", "with": {"model": str(model), **with_}}
    if sweep:
        step["sweep"] = sweep
    return step


def outputs(result, step_id="v"):
    assert result.status == "done", [i.error for i in result.failed]
    return [soundfile.read(a.path, dtype="float32") for a in result.artifacts(step_id)]


def rms(samples):
    return float(np.sqrt(np.mean(samples ** 2)))


def notes(result, step_id="v"):
    return [item["notes"] for item in json.loads(result.manifest_path.read_text())["steps"][step_id]["items"]]


def test_sample_lasts_as_asked_and_follows_the_seed(tiny_vae, tmp_path):
    result = run(tmp_path, [vae_step(tiny_vae, mode="sample", duration_s=0.3, sweep={"seed": [1, 2]}),
                            vae_step(tiny_vae, "again", mode="sample", duration_s=0.3, seed=1)])
    (a, rate), (b, _) = outputs(result)
    (c, _), = outputs(result, "again")
    assert rate == 8000 and len(a) == 2400
    assert np.array_equal(a, c) and not np.array_equal(a, b)
    assert np.abs(a).max() > 0


def test_variation_strength_zero_is_the_reconstruction(tiny_vae, tmp_path):
    tone(tmp_path / "a.wav")
    result = run(tmp_path, [vae_step(tiny_vae, "r", mode="reconstruct", audio="a.wav"),
                            vae_step(tiny_vae, "v", mode="variation", audio="a.wav", sweep={"strength": [0.0, 1.0]})])
    (recon, rate), = outputs(result, "r")
    (same, _), (varied, _) = outputs(result, "v")
    assert len(recon) == len(same) == len(varied) == 4000
    assert np.array_equal(recon, same)
    assert np.abs(varied - recon).mean() > 1e-4


def test_reconstruct_decodes_the_encoders_mean(tiny_vae, tmp_path):
    """The generator's output is diffusers' encode -> mean -> decode, nothing else."""
    from diffusers import AutoencoderOobleck

    path = tone(tmp_path / "a.wav")
    (got, _), = outputs(run(tmp_path, [vae_step(tiny_vae, mode="reconstruct", audio="a.wav", loudness="as_decoded")]))
    vae = AutoencoderOobleck.from_pretrained(tiny_vae)
    x = torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None, None]
    with torch.no_grad():
        expected = vae.decode(vae.encode(x).latent_dist.mean).sample[0, 0].numpy()
    peak = np.abs(expected).max()
    expected = expected * min(1.0, 0.99 / peak)  # the output is scaled down only if it would clip
    assert np.abs(got - expected).max() < 2 / 32768  # 16-bit WAV rounding


def test_outputs_take_the_loudness_of_their_input_unless_asked_not_to(tiny_vae, tmp_path):
    tone(tmp_path / "a.wav", level=0.25)
    result = run(tmp_path, [vae_step(tiny_vae, mode="variation", audio="a.wav"),
                            vae_step(tiny_vae, "raw", mode="variation", audio="a.wav", loudness="as_decoded")])
    (matched, _), = outputs(result)
    (raw, _), = outputs(result, "raw")
    assert abs(rms(matched) - 0.25 / np.sqrt(2)) < 0.005  # a sine's RMS is peak / sqrt 2
    assert abs(rms(raw) - rms(matched)) > 0.01
    assert notes(result)[0]["loudness_gain_db"] != 0


def test_interpolation_as_one_file_and_as_a_sequence(tiny_vae, tmp_path):
    tone(tmp_path / "a.wav", 440, seconds=0.5)
    tone(tmp_path / "b.wav", 1000, seconds=0.25)  # the shorter clip sets the length
    steps = [vae_step(tiny_vae, "one", mode="interpolate", audio="a.wav", audio_b="b.wav", frames=3),
             vae_step(tiny_vae, "seq", mode="interpolate", audio="a.wav", audio_b="b.wav",
                      sweep={"position": [0.0, 1.0]}),
             vae_step(tiny_vae, "ra", mode="reconstruct", audio="a.wav", max_input_s=0.25),
             vae_step(tiny_vae, "rb", mode="reconstruct", audio="b.wav")]
    result = run(tmp_path, steps)
    (one, _), = outputs(result, "one")
    (start, _), (end, _) = outputs(result, "seq")
    (ra, _), = outputs(result, "ra")
    (rb, _), = outputs(result, "rb")
    crossfade = round(0.02 * 8000)
    assert len(one) == 3 * 2000 - 2 * crossfade
    assert notes(result, "one")[0]["points"] == [0.0, 0.5, 1.0]
    assert np.allclose(start, ra, atol=3 / 32768) and np.allclose(end, rb, atol=3 / 32768)
    assert np.allclose(one[:2000 - crossfade], ra[:2000 - crossfade], atol=3 / 32768)


def test_inputs_are_resampled_and_remixed_to_the_model(tiny_vae, tmp_path):
    tone(tmp_path / "stereo.wav", 440, seconds=1.0, rate=44100, channels=2)
    result = run(tmp_path, [vae_step(tiny_vae, mode="reconstruct", audio="stereo.wav")])
    (out, rate), = outputs(result)
    assert rate == 8000 and out.ndim == 1 and len(out) == 8000


def test_conform_keeps_the_pitch_when_resampling():
    from studio_audio_io.reading import conform

    rate = 44100
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32)
    mono = conform(stereo, rate, sample_rate=16000, channels=1)
    assert mono.shape == (1, 16000)
    spectrum = np.abs(np.fft.rfft(mono[0].numpy() * np.hanning(16000)))
    assert abs(np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] - 440) < 2
    both = conform(mono.T.numpy(), 16000, sample_rate=16000, channels=2)
    assert both.shape == (2, 16000) and torch.equal(both[0], both[1])


def test_a_stable_audio_open_folder_loads_from_its_vae_subfolder(tmp_path):
    """Stable Audio Open's repository keeps the VAE in vae/ beside the other parts."""
    root = tmp_path / "stable-audio-open"
    vae = tiny_oobleck(channels=2, rate=16000)
    vae.save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableAudioPipeline",
                                                       "vae": ["diffusers", "AutoencoderOobleck"]}))
    tone(tmp_path / "a.wav", 440, seconds=0.5, rate=8000)
    result = run(tmp_path, [vae_step(root, mode="reconstruct", audio="a.wav")])
    (out, rate), = outputs(result)
    assert rate == 16000 and out.shape == (8000, 2)


def test_save_and_load_round_trip(tmp_path):
    from diffusers import AutoencoderOobleck

    from studio_audio.vae import load_vae

    vae = tiny_oobleck()
    vae.save_pretrained(tmp_path / "saved")
    loaded = load_vae(str(tmp_path / "saved"))
    z = torch.randn(1, 4, 50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(vae.decode(z).sample, loaded.decode(z).sample, atol=1e-6)
    assert isinstance(loaded, AutoencoderOobleck) and loaded.config.sampling_rate == 8000


def test_a_model_that_is_not_an_oobleck_is_a_clear_error(tmp_path):
    from studio_audio.vae import load_vae

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not be loaded as an AutoencoderOobleck"):
        load_vae(str(tmp_path / "empty"))


def write_zero_length_wav(path):
    soundfile.write(path, np.zeros((0,), dtype=np.float32), 8000)


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b""), "steps[0].with.audio (step 'v'): input file 'a.wav' is empty (0 bytes)"),
    (lambda p: p.write_text("this is a text file, not audio"),
     "steps[0].with.audio (step 'v'): input file 'a.wav' is not a file type Studio reads (PNG, JPEG, WebP, WAV, "
     "FLAC, OGG, MIDI or UTF-8 text); 'audio' accepts audio/*"),
    (write_zero_length_wav, "steps[0].with.audio (step 'v'): input file 'a.wav' (audio/wav) holds no audio (0 frames)"),
    (lambda p: tone(p, seconds=0.0005), "steps[0].with (step 'v'): a.wav: 0.5 ms of audio is too short"),
])
def test_bad_audio_gets_a_clear_error(tiny_vae, tmp_path, make, message):
    """Judged before anything runs: by content, then by the generator's own rules."""
    from studio.errors import PipelineError

    make(tmp_path / "a.wav")
    with pytest.raises(PipelineError) as refused:
        run(tmp_path, [vae_step(tiny_vae, mode="variation", audio="a.wav")])
    assert message in str(refused.value)
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize("with_,message", [
    ({"mode": "interpolate", "audio": "a.wav"}, "mode 'interpolate' needs 'audio_b'"),
    ({"mode": "variation"}, "mode 'variation' needs 'audio'"),
    ({"mode": "sample", "audio": "a.wav"}, "mode 'sample' does not use 'audio'"),
])
def test_studio_validate_reports_a_mode_without_its_inputs(tmp_path, with_, message):
    from click.testing import CliRunner

    from studio.cli import cli

    tone(tmp_path / "a.wav")
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "v", "steps": [
        {"id": "v", "uses": "audio.vae", "with": with_}]}, indent=1))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2
    assert message in result.output and "p.yaml:" in result.output and "step 'v'" in result.output


def test_training_lowers_the_loss_and_the_result_loads(tmp_path):
    from studio.testing import make_host
    from studio.training import TrainConfig, train

    data = tmp_path / "clips"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # 6 s of chords of three sines
        t = np.arange(8000) / 8000
        wave = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 1500, 3)) / 4
        soundfile.write(data / f"{i}.wav", wave, 8000)
    options = {"sample_rate": "8000", "window": "2048", "clip_s": "0.5", "encoder_hidden_size": "8",
               "channel_multiples": "1,2", "downsampling_ratios": "2,4", "decoder_channels": "8"}
    config = TrainConfig(data=str(data), out=tmp_path / "vae", steps=40, batch_size=4, lr=2e-3,
                         log_every=5, checkpoint_every=100, options=options)
    result = train(make_host().registry.trainer("audio.vae"), config, show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "vae" / "training" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["stft"] < log[0]["stft"] * 0.8
    assert result.metrics["stft"] < result.metrics["stft_silence"]
    # the sample written at the end: a held-out clip, a quarter second of silence, its reconstruction
    heard, rate = soundfile.read(tmp_path / "vae" / "training" / "samples" / "step-0000040" /
                                 "held-out-then-reconstructed.wav")
    assert rate == 8000 and len(heard) == 2 * 4000 + 2000
    assert np.abs(heard[4000:6000]).max() == 0 and np.abs(heard[:4000]).max() > 0.1
    tone(tmp_path / "a.wav")
    (out, rate), = outputs(run(tmp_path / "run", [vae_step(tmp_path / "vae", mode="reconstruct",
                                                           audio=str(tmp_path / "a.wav"))]))
    assert rate == 8000 and len(out) == 4000


def test_fluidsynth_notes_are_sounding_clips_of_the_asked_length():
    from studio_audio.vae_data import load_clips

    clips = load_clips("fluidsynth:gm", sample_rate=16000, clip_s=0.5, count=4, seed=3)
    again = load_clips("fluidsynth:gm", sample_rate=16000, clip_s=0.5, count=4, seed=3)
    assert len(clips) == 4 and all(c.shape == (8000,) for c in clips)
    assert all(0.1 < np.abs(c).max() <= 0.9 for c in clips)  # normalised to -18..-1 dBFS
    assert all(np.array_equal(a, b) for a, b in zip(clips, again))


def test_unknown_training_data_is_a_clear_error(tmp_path):
    from studio_audio.vae_data import load_clips

    with pytest.raises(UserError, match="unknown audio source 'fluidsynth:drums'"):
        load_clips("fluidsynth:drums", sample_rate=16000, clip_s=1, count=1, seed=0)
    with pytest.raises(UserError, match="no audio files"):
        load_clips(str(tmp_path), sample_rate=16000, clip_s=1, count=1, seed=0)
