"""The embedded audio.vae default: small, documented, and it reconstructs instrument
notes it never heard better than a model that only knows the average spectrum."""

from pathlib import Path

import numpy as np
import torch

WEIGHTS = Path(__file__).resolve().parent.parent / "plugins" / "studio_audio" / "weights" / "vae"


def test_default_is_small_safetensors_with_a_model_card():
    files = [p for p in WEIGHTS.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    assert (WEIGHTS / "diffusion_pytorch_model.safetensors").is_file()
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Command", "## Training", "## Quality", "studio train audio.vae"):
        assert section in card


def test_default_reconstructs_unheard_notes_better_than_the_baselines():
    from studio_audio.vae import load_vae
    from studio_audio.vae_data import gm_notes
    from studio_audio.vae_train import log_mel, reconstruction_metrics

    vae = load_vae("default").eval()
    assert (vae.config.sampling_rate, vae.config.audio_channels) == (16000, 1)
    clips = torch.from_numpy(np.stack(gm_notes(count=16, sample_rate=16000, clip_s=2.0, seed=99)))
    # the spectrum-only baseline knows the average of other clips, as one trained on them would
    others = torch.from_numpy(np.stack(gm_notes(count=32, sample_rate=16000, clip_s=2.0, seed=98)))
    metrics = reconstruction_metrics(vae, clips, 16000, log_mel(others, 16000).mean(dim=(0, 2)))
    assert metrics["stft"] < 0.6 * metrics["stft_silence"]
    assert metrics["log_mel_l1"] < 0.85 * metrics["log_mel_l1_mean_spectrum"]
