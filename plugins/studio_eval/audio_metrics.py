"""Audio-set metrics:
- log-mel statistics: the Fréchet distance between the two sets' log-mel frames (each
  frame a 64-band spectrum at 16 kHz) and the gap between their mean spectra in dB;
- the Fréchet distance between the sets' latent frames under Studio's audio VAE
  (audio.vae's embedded AutoencoderOobleck): like FAD in spirit, in another space, so
  never comparable with VGGish-based FAD numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MEL_RATE = 16_000
MAX_CLIP_S = 30.0  # each clip is measured over its first 30 seconds
MAX_FRAMES = 200_000  # frames pooled per set (about 50 minutes of log-mel frames)


def log_mel_frames(paths: list[Path]) -> Any:
    """(frames, 64) log-mel frames of every clip, mono at 16 kHz."""
    import torch
    import torchaudio

    from studio_audio_io.reading import conform, read_audio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=MEL_RATE, n_fft=1024, hop_length=256, n_mels=64)
    frames = []
    for path in paths:
        samples, rate = read_audio(path, MAX_CLIP_S)
        audio = conform(samples[: int(MAX_CLIP_S * rate)], rate, sample_rate=MEL_RATE, channels=1)
        frames.append(torch.log(mel(audio)[0].T + 1e-5))
        if sum(len(f) for f in frames) >= MAX_FRAMES:
            break
    return torch.cat(frames)[:MAX_FRAMES].double()


def vae_latent_frames(paths: list[Path], vae: Any) -> Any:
    """(frames, latent channels) latent means of every clip under `vae`."""
    import torch

    from studio_audio_io.reading import conform, read_audio
    from studio_diffusers.oobleck import encode

    rate, channels = int(vae.config.sampling_rate), int(vae.config.audio_channels)
    frames = []
    with torch.no_grad():
        for path in paths:
            samples, file_rate = read_audio(path, MAX_CLIP_S)
            audio = conform(samples[: int(MAX_CLIP_S * file_rate)], file_rate, sample_rate=rate, channels=channels)
            frames.append(encode(vae, audio)[0].T)
            if sum(len(f) for f in frames) >= MAX_FRAMES:
                break
    return torch.cat(frames)[:MAX_FRAMES].double()


def measure_audio(generated: list[Path], reference: list[Path], vae: Any | None) -> dict[str, Any]:
    from studio_eval.frechet import frechet_distance

    fake, real = log_mel_frames(generated), log_mel_frames(reference)
    db = 10 / 2.302585092994046  # natural-log power -> dB
    out: dict[str, Any] = {
        "generated": len(generated), "reference": len(reference),
        "log_mel_frechet": frechet_distance(real, fake),
        "log_mel_mean_gap_db": float((fake.mean(0) - real.mean(0)).abs().mean() * db),
    }
    if vae is not None:
        out["vae_latent_frechet"] = frechet_distance(vae_latent_frames(reference, vae),
                                                     vae_latent_frames(generated, vae))
    return out
