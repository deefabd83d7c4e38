"""The embedded audio VAE on a small fixed clip it never saw: Ode to Joy played by
FluidSynth's General MIDI piano (the showcase's own path, audio.render), reconstructed
and varied through `audio.vae` as a pipeline runs it. The bounds are the model card's
measured figures with a margin: a retrained default that does worse fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.testing import run_yaml

REPO = Path(__file__).resolve().parents[1]
ODE = REPO / "pipelines" / "assets" / "ode-to-joy.mid"

# Measured on this clip (MODEL_CARD.md): reconstruction 0.378, variation 0.418, level
# -0.8 dB. The bounds leave a margin for other BLAS builds; the targets the default was
# trained for are 0.35 (missed by 0.03 on this clip), 0.6 and 3 dB.
RECONSTRUCTION_SC = 0.42
VARIATION_SC = 0.47
LEVEL_DB = 3.0


@pytest.fixture(scope="module")
def clip_and_outputs(tmp_path_factory):
    from studio_audio.render import fluidsynth_available

    if not fluidsynth_available():
        pytest.fail("FluidSynth is part of the test set-up (scripts/install-system-packages)")
    tmp = tmp_path_factory.mktemp("vae")
    result = run_yaml(json.dumps({"name": "vae", "device": "cpu", "seed": 1, "steps": [
        {"id": "play", "uses": "audio.render", "with": {"midi": str(ODE), "sample_rate": 16000,
                                                        "synthesizer": "fluidsynth"}},
        {"id": "vae", "uses": "audio.vae",
         "with": {"audio": "${steps.play.outputs.audio}", "loudness": "as_decoded"},
         "sweep": {"mode": ["reconstruct", "variation"]}},
    ]}), tmp)
    assert result.status == "done", result.failed
    return result.artifacts("play")[0].path, [a.path for a in result.artifacts("vae")]


def mono(path):
    import torch
    from studio_audio_io.reading import load_audio

    return load_audio(path, sample_rate=16000, channels=1)[0].to(torch.float32)


def test_the_default_vae_reconstructs_a_played_tune(clip_and_outputs):
    from model_cards.audio_vae import level_db, spectral_convergence

    clip, (reconstruction, _) = clip_and_outputs
    x, y = mono(clip), mono(reconstruction)
    assert spectral_convergence(x, y) <= RECONSTRUCTION_SC
    assert abs(level_db(y) - level_db(x)) <= LEVEL_DB


def test_a_variation_at_half_strength_stays_close_to_the_input(clip_and_outputs):
    from model_cards.audio_vae import spectral_convergence

    clip, (_, variation) = clip_and_outputs
    assert spectral_convergence(mono(clip), mono(variation)) <= VARIATION_SC
