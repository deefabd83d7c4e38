"""Measure an audio.vae model on audio it never saw, for its model card.

    python -m model_cards.audio_vae [--model default] [--clips 100] [--seed 1234] [--wav A.wav ...]
                                    [--spectrograms FOLDER]

Clips: FluidSynth General MIDI notes made with a seed the training data did not use, and
any WAV files given (the model card uses music.transformer tunes played by audio.render).
For each set it reports, on the latent means decoded:
- spectral convergence of the reconstruction, and of a variation at strength 0.5
  (||S_x - S_y|| / ||S_x|| on STFT magnitudes; silence scores 1.0);
- log-mel L1 against the input, beside the same distance for the set's mean spectrum;
- the decoder's own level against its input's (loudness `as_decoded`, in dB);
and the same reconstruction figures for an untrained VAE of the same shape.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

STFT_SIZE, STFT_HOP = 1024, 256


def level_db(x) -> float:
    rms = float((x ** 2).mean().sqrt())
    return round(20 * math.log10(max(rms, 1e-12)), 1)


def magnitudes(x):
    """(frames,) -> STFT magnitudes, Hann window of STFT_SIZE."""
    import torch

    return torch.stft(x, STFT_SIZE, STFT_HOP, window=torch.hann_window(STFT_SIZE), return_complex=True).abs()


def spectral_convergence(x, y) -> float:
    """||S_x - S_y||_F / ||S_x||_F for mono clips x (the reference) and y; 0 is identical,
    silence (or anything with no energy where x has it) scores 1."""
    sx, sy = magnitudes(x), magnitudes(y[: len(x)])
    return float((sx - sy).norm() / sx.norm().clamp_min(1e-12))


def log_mel_distance(y, mel, rate: int) -> float:
    """Mean |log-mel(y) - mel|: the distance the model card's log-mel figures use."""
    from studio_audio.vae_train import log_mel

    return float((log_mel(y[None], rate)[0] - mel).abs().mean())


def measure(vae, clips: list, rate: int, strength: float = 0.5, seed: int = 0) -> dict[str, float]:
    """The figures above, averaged over mono `clips` (1-D tensors at `rate`, any lengths)."""
    import torch

    from studio_diffusers.oobleck import decode, encode
    from studio_audio.vae_train import log_mel

    mels = [log_mel(c[None], rate)[0] for c in clips]
    mean_spectrum = torch.cat(mels, dim=1).mean(dim=1, keepdim=True)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for clip, mel in zip(clips, mels):
            z = encode(vae, clip[None])
            y = decode(vae, z)[0, : len(clip)]
            noise = torch.randn(z.shape, generator=gen)
            v = decode(vae, z + strength * noise)[0, : len(clip)]
            rows.append({
                "sc_reconstruction": spectral_convergence(clip, y),
                f"sc_variation_{strength}": spectral_convergence(clip, v),
                "log_mel_l1": log_mel_distance(y, mel, rate),
                "log_mel_l1_mean_spectrum": float((mean_spectrum - mel).abs().mean()),
                "decoded_minus_input_db": level_db(y) - level_db(clip)})
    return {key: round(sum(r[key] for r in rows) / len(rows), 3) for key in rows[0]} | {"clips": len(rows)}


def interpolation_path(vae, a, b, rate: int, points: int = 5) -> dict:
    """Decode `points` steps on the line between the latents of clips `a` and `b` (same
    length): each point's log-mel L1 to `a` and to `b`. A smooth path moves away from
    one and towards the other at every step."""
    import torch

    from studio_diffusers.oobleck import decode, encode
    from studio_audio.vae_train import log_mel

    length = min(len(a), len(b))
    a, b = a[:length], b[:length]
    ma, mb = log_mel(a[None], rate)[0], log_mel(b[None], rate)[0]
    with torch.no_grad():
        za, zb = encode(vae, a[None]), encode(vae, b[None])
        decoded = [decode(vae, torch.lerp(za, zb, t))[0, :length] for t in torch.linspace(0, 1, points).tolist()]
    to_a = [round(log_mel_distance(y, ma, rate), 3) for y in decoded]
    to_b = [round(log_mel_distance(y, mb, rate), 3) for y in decoded]
    monotonic = all(x < y for x, y in zip(to_a, to_a[1:])) and all(x > y for x, y in zip(to_b, to_b[1:]))
    return {"log_mel_l1_to_a": to_a, "log_mel_l1_to_b": to_b, "monotonic": monotonic}


def spectrogram_image(clips: dict, rate: int, path: Path) -> None:
    """One row per named clip: its log-mel spectrogram, as a PNG (for eyes, not metrics)."""
    import numpy as np
    from PIL import Image

    from studio_audio.vae_train import log_mel

    mels = [log_mel(clip[None], rate)[0].flip(0).numpy() for clip in clips.values()]
    low, high = np.percentile(mels[0], [1, 99.5])  # the first clip's range, dark = loud
    rows = []
    for mel in mels:
        rows.append(1 - np.clip((mel - low) / (high - low), 0, 1))
        rows.append(np.ones((2, mel.shape[1])))
    picture = (np.concatenate(rows[:-1]) * 255).astype(np.uint8)
    Image.fromarray(picture).resize((picture.shape[1] * 2, picture.shape[0] * 2), Image.NEAREST).save(path)


def main() -> None:
    import torch
    from diffusers import AutoencoderOobleck

    from studio_audio.vae import load_vae
    from studio_audio.vae_data import gm_notes
    from studio_audio_io.reading import load_audio
    from studio_diffusers.oobleck import decode, encode, quiet_weight_norm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--wav", nargs="*", default=[], help="more clips to measure, e.g. rendered tunes")
    parser.add_argument("--spectrograms", type=Path, help="write spectrogram PNGs of the first WAV here")
    args = parser.parse_args()

    torch.manual_seed(0)
    vae = load_vae(args.model).eval()
    rate = int(vae.config.sampling_rate)
    with quiet_weight_norm():
        untrained = AutoencoderOobleck(**{k: v for k, v in vae.config.items() if not k.startswith("_")}).eval()
    sets = {"held_out_notes": [torch.from_numpy(c) for c in
                               gm_notes(count=args.clips, sample_rate=rate, clip_s=2.0, seed=args.seed)]}
    if args.wav:
        sets["wav"] = [load_audio(Path(p), sample_rate=rate, channels=1)[0] for p in args.wav]
    report = {}
    for name, clips in sets.items():
        report[name] = {"model": measure(vae, clips, rate), "untrained": measure(untrained, clips, rate)}
    if args.spectrograms and args.wav:
        clip = sets["wav"][0][: rate * 6]
        with torch.no_grad():
            z = encode(vae, clip[None])
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
            shown = {"input": clip, "reconstruction": decode(vae, z)[0],
                     "variation_0.5": decode(vae, z + 0.5 * noise)[0]}
        args.spectrograms.mkdir(parents=True, exist_ok=True)
        spectrogram_image(shown, rate, args.spectrograms / "spectrograms.png")
    notes = sets["held_out_notes"]
    pairs = min(3, len(notes) // 2)  # the first clips, two by two
    report["interpolation"] = [interpolation_path(vae, notes[2 * i], notes[2 * i + 1], rate) for i in range(pairs)]
    report["latent"] = {"frames_per_second": rate / vae.hop_length, "channels": int(vae.config.decoder_input_channels)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
