"""Trains audio.vae: an AutoencoderOobleck learns to reconstruct short windows of audio.

Loss = multi-resolution STFT distance (auraloss: spectral convergence + log magnitude +
linear magnitude at four FFT sizes) + kl_weight x KL(q(z|x) || N(0, I)), with z drawn by the
reparameterization trick (diffusers' OobleckDiagonalGaussianDistribution.sample).
No adversarial loss: it keeps training small and stable, at the price of some buzz.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from studio.training import CommaSeparated, Trainer, TrainerOptions

FFT_SIZES = [2048, 1024, 512, 256]


def stft_loss(linear_magnitude: float = 0.0):
    """auraloss' multi-resolution STFT distance: spectral convergence + log magnitude
    (+ `linear_magnitude` x linear magnitude, which weighs the loud partials that log
    magnitude alone leaves to the noise floor)."""
    import auraloss

    return auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=FFT_SIZES, hop_sizes=[n // 4 for n in FFT_SIZES], win_lengths=FFT_SIZES,
        w_lin_mag=linear_magnitude)


def log_mel(audio, sample_rate: int):
    """(batch, frames) -> log mel spectrogram (batch, 64, time), as metrics compare."""
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=1024, hop_length=256, n_mels=64)
    return torch.log(mel(audio) + 1e-5)


class VAETrainer(Trainer):
    generator = "audio.vae"
    description = "An Oobleck VAE (16 kHz mono by default) on a folder of audio or FluidSynth notes."
    default_steps = 800
    default_batch_size = 8
    default_lr = 5e-4

    class Options(TrainerOptions):
        sample_rate: int = Field(16000, ge=4000, le=192000, description="Sample rate the VAE works at, in Hz (mono).")
        window: int = Field(8192, ge=2048, le=2**20, description=(
            "Samples per training example: at least 2048 (the loss's largest FFT), and a multiple of the "
            "product of downsampling_ratios. Shortened to the clips' length when they are shorter."))
        kl_weight: float = Field(1e-4, ge=0, le=10, description="Weight of the KL term against the STFT loss.")
        linear_magnitude: float = Field(1.0, ge=0, le=100, description=(
            "Weight of the linear-magnitude STFT distance, which favours the loud partials."))
        clip_s: float = Field(2.0, gt=0, le=60, description="Length of the clips the data is cut into, in seconds.")
        clips: int = Field(1200, ge=2, le=100_000, description=(
            "How many clips fluidsynth:gm synthesizes (other data: unused)."))
        channel_multiples: Annotated[tuple[Annotated[int, Field(ge=1, le=64)], ...], CommaSeparated] = Field(
            (1, 2, 4, 4), min_length=1, max_length=8, description=(
                "Encoder width per stage, in multiples of encoder_hidden_size; one per downsampling ratio."))
        downsampling_ratios: Annotated[tuple[Annotated[int, Field(ge=1, le=16)], ...], CommaSeparated] = Field(
            (4, 4, 4, 4), min_length=1, max_length=8, description=(
                "Stride of each encoder stage; their product is the samples per latent frame."))
        encoder_hidden_size: int = Field(32, ge=2, le=1024, multiple_of=2, description=(
            "Encoder width; the latent has half as many channels."))
        decoder_channels: int = Field(24, ge=1, le=1024, description="Decoder width.")

        @model_validator(mode="after")
        def _stages_fit(self):
            if len(self.channel_multiples) != len(self.downsampling_ratios):
                raise ValueError(f"channel_multiples has {len(self.channel_multiples)} entries and downsampling_ratios "
                                 f"{len(self.downsampling_ratios)}; give one multiple per ratio")
            hop = math.prod(self.downsampling_ratios)
            if self.window % hop:  # the decoder gives back whole hops: a remainder would not match the input
                raise ValueError(f"window {self.window} is not a multiple of {hop}, the product of "
                                 f"downsampling_ratios {','.join(map(str, self.downsampling_ratios))}")
            return self

    options: Options

    def setup(self) -> None:
        import numpy as np
        import torch
        from diffusers import AutoencoderOobleck

        from studio_diffusers.oobleck import quiet_weight_norm
        from studio_audio.vae_data import load_clips

        opts = self.options
        self.sample_rate = opts.sample_rate
        self.window = opts.window
        self.kl_weight = opts.kl_weight
        self.linear_magnitude = opts.linear_magnitude
        clip_s = opts.clip_s
        cache = self.config.out / "training" / "clips.npy"
        clips = _cached_clips(cache, opts.clips, int(clip_s * self.sample_rate))
        if clips is None:
            clips = np.stack(load_clips(self.config.data, sample_rate=self.sample_rate, clip_s=clip_s,
                                        count=opts.clips, seed=self.config.seed))
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, clips)
        if clips.shape[1] < self.window:
            self.window = clips.shape[1]
        order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(0)).numpy()
        n_test = max(1, len(clips) // 10)
        self.test_clips = torch.from_numpy(clips[order[:n_test]])
        self.train_clips = torch.from_numpy(clips[order[n_test:]])
        multiples, ratios = list(opts.channel_multiples), list(opts.downsampling_ratios)  # diffusers adds to lists
        hidden = opts.encoder_hidden_size
        with quiet_weight_norm():
            self.vae = AutoencoderOobleck(
                encoder_hidden_size=hidden, downsampling_ratios=ratios, channel_multiples=multiples,
                decoder_channels=opts.decoder_channels, decoder_input_channels=hidden // 2,
                audio_channels=1, sampling_rate=self.sample_rate).to(self.device)
        self.loss_fn = stft_loss(self.linear_magnitude).to(self.device)
        self.modules = {"vae": self.vae}
        self.optimizers = {"vae": torch.optim.AdamW(self.vae.parameters(), lr=self.lr, betas=(0.8, 0.99),
                                                    weight_decay=0.0)}
        # the baseline a spectrum-only model reaches: every frame the training data's mean log-mel
        sample = self.train_clips[torch.randperm(len(self.train_clips), generator=self.rng)[:64]]
        self.mean_log_mel = log_mel(sample, self.sample_rate).mean(dim=(0, 2))

    def _batch(self):
        import torch

        rows = torch.randint(len(self.train_clips), (self.batch_size,), generator=self.rng)
        starts = torch.randint(self.train_clips.shape[1] - self.window + 1, (self.batch_size,), generator=self.rng)
        gain = torch.empty(self.batch_size, 1).uniform_(0.5, 1.0, generator=self.rng)  # loudness is not content
        batch = torch.stack([self.train_clips[r, s:s + self.window] for r, s in zip(rows, starts)]) * gain
        return batch[:, None].to(self.device)

    def train_step(self, step: int) -> dict[str, float]:
        x = self._batch()
        self.vae.train()
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=None)
        y = self.vae.decode(z).sample
        recon = self.loss_fn(y, x)
        kl = posterior.kl()
        loss = recon + self.kl_weight * kl
        self.optimize(loss, "vae", clip=1.0)
        return {"loss": loss.item(), "stft": recon.item(), "kl": kl.item()}

    def evaluate(self) -> dict[str, float]:
        return reconstruction_metrics(self.vae, self.test_clips, self.sample_rate, self.mean_log_mel)

    def samples(self) -> dict:
        """The first held-out clip, a quarter second of silence, then its reconstruction
        (the latent mean: no random draw), to listen to one after the other."""
        import numpy as np

        from studio import media

        hop = int(np.prod(self.vae.config.downsampling_ratios))
        clip = self.test_clips[0][:len(self.test_clips[0]) // hop * hop]
        self.vae.eval()
        made = self.vae.decode(self.vae.encode(clip.reshape(1, 1, -1).to(self.device)).latent_dist.mean).sample
        self.vae.train()
        gap = np.zeros(self.sample_rate // 4, dtype=np.float32)
        return {"held-out-then-reconstructed": media.Audio(
            np.concatenate([clip.numpy(), gap, made[0, 0].float().cpu().numpy()]), self.sample_rate)}

    def export(self, out: Path) -> None:
        self.vae.save_pretrained(out)  # config.json + diffusion_pytorch_model.safetensors
        (out / "studio.json").write_text(json.dumps({"data": self.config.data, "kl_weight": self.kl_weight,
                                                     "linear_magnitude": self.linear_magnitude}))


def reconstruction_metrics(vae, clips, sample_rate: int, mean_log_mel=None, batch: int = 16) -> dict[str, float]:
    """Held-out reconstruction quality of `vae` on mono `clips` (n, frames), decoding the
    latent means, against two trivial baselines: silence and (for the log-mel distance)
    every frame the training set's mean spectrum."""
    import torch

    loss_fn = stft_loss()
    was_training = vae.training
    vae.eval()
    hop = int(vae.hop_length)
    length = clips.shape[1] - clips.shape[1] % hop
    totals = {"stft": 0.0, "stft_silence": 0.0, "log_mel_l1": 0.0, "log_mel_l1_mean_spectrum": 0.0, "kl": 0.0}
    n = 0
    with torch.no_grad():
        for start in range(0, len(clips), batch):
            x = clips[start:start + batch, :length].float()
            posterior = vae.encode(x[:, None].to(vae.device)).latent_dist
            y = vae.decode(posterior.mean).sample[:, 0].float().cpu()
            k = len(x)
            totals["stft"] += loss_fn(y[:, None], x[:, None]).item() * k
            totals["stft_silence"] += loss_fn(torch.zeros_like(x)[:, None], x[:, None]).item() * k
            mx, my = log_mel(x, sample_rate), log_mel(y, sample_rate)
            totals["log_mel_l1"] += (mx - my).abs().mean().item() * k
            if mean_log_mel is not None:
                totals["log_mel_l1_mean_spectrum"] += (mx - mean_log_mel[None, :, None]).abs().mean().item() * k
            totals["kl"] += posterior.kl().item() * k  # per latent frame, summed over channels
            n += k
    vae.train(was_training)
    out = {key: value / n for key, value in totals.items()}
    if mean_log_mel is None:
        out.pop("log_mel_l1_mean_spectrum")
    out["held_out_clips"] = n
    return out


def _cached_clips(cache, count: int, samples: int):
    """The clips an earlier run of this folder saved (synthesizing them takes a while; a
    resumed run reuses them), or None to make them again: the file is untrusted like any
    in OUT, so one that is not a plain file of the size these options give, or not a
    float32 array of that shape, is ignored (the clips come from the seed: remade alike)."""
    import os
    import stat

    import numpy as np

    try:
        st = os.lstat(cache)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > count * samples * 4 + 4096:
        return None
    try:
        clips = np.load(cache, allow_pickle=False)
    except (OSError, ValueError, EOFError, MemoryError):
        return None
    if clips.dtype != np.float32 or clips.ndim != 2 or clips.shape[1] > samples or not 0 < len(clips) <= count:
        return None
    return clips
