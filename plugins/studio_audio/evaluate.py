"""Measure an audio.vae model on clips it never saw, for its model card.

    python -m studio_audio.evaluate [--model default] [--clips 100] [--seed 1234]

Clips: FluidSynth General MIDI notes made with a seed the training data did not use.
Reports the reconstruction distances against silence and the mean spectrum, the same
for an untrained VAE of the same shape, and level/centroid figures of one clip, its
reconstruction, a variation and a sample from the prior.
"""

from __future__ import annotations

import argparse
import json
import math


def level_db(x) -> float:
    rms = float((x ** 2).mean().sqrt())
    return round(20 * math.log10(max(rms, 1e-12)), 1)


def centroid_hz(x, rate: int) -> float:
    import torch

    spectrum = torch.fft.rfft(x * torch.hann_window(len(x))).abs()
    freqs = torch.fft.rfftfreq(len(x), 1 / rate)
    return round(float((spectrum * freqs).sum() / spectrum.sum()), 0)


def main() -> None:
    import numpy as np
    import torch
    from diffusers import AutoencoderOobleck

    from studio_audio.vae import decode, encode, load_vae, quiet_weight_norm
    from studio_audio.vae_data import gm_notes
    from studio_audio.vae_train import log_mel, reconstruction_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    vae = load_vae(args.model).eval()
    rate = int(vae.config.sampling_rate)
    clips = torch.from_numpy(np.stack(gm_notes(count=args.clips, sample_rate=rate, clip_s=2.0, seed=args.seed)))
    mean_spectrum = log_mel(clips, rate).mean(dim=(0, 2))
    torch.manual_seed(0)
    with quiet_weight_norm():
        untrained = AutoencoderOobleck(**{k: v for k, v in vae.config.items() if not k.startswith("_")}).eval()
    report = {"model": reconstruction_metrics(vae, clips, rate, mean_spectrum),
              "untrained": reconstruction_metrics(untrained, clips, rate, mean_spectrum)}
    with torch.no_grad():
        clip = clips[0][None]
        z = encode(vae, clip)
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        prior = torch.randn((1, z.shape[1], z.shape[2]), generator=torch.Generator().manual_seed(1))
        signals = {"input": clip[0], "reconstruction": decode(vae, z)[0],
                   "variation_0.5": decode(vae, z + 0.5 * noise)[0], "variation_2": decode(vae, z + 2 * noise)[0],
                   "prior_sample": decode(vae, prior)[0]}
    report["one_clip"] = {name: {"rms_dbfs": level_db(x), "peak": round(float(x.abs().max()), 3),
                                 "centroid_hz": centroid_hz(x, rate)} for name, x in signals.items()}
    report["latent"] = {"frames_per_second": rate / vae.hop_length, "channels": z.shape[1],
                        "mean_abs": round(float(z.abs().mean()), 3), "std": round(float(z.std()), 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
