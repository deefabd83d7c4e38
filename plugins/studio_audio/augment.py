"""audio.augment: classical audio augmentation with torchaudio, seeded per item: gain,
pitch shift, speed change, added noise at a signal-to-noise ratio, and a random
low-pass, so a pipeline can mix classical and generated augmentation."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from studio import Artifact, Generator, Params, media, media_input

MAX_INPUT_S = 600.0  # an input is read up to 10 minutes


class AudioAugment(Generator):
    name = "audio.augment"
    description = ("Classical audio augmentation (torchaudio): random gain, pitch shift, speed, noise at a "
                   "signal-to-noise ratio and a low-pass, each drawn from the item's seed; the sample rate and "
                   "channels stay.")
    outputs = {"audio": media.AUDIO}
    uses_device = False
    version = "2"  # 2: speed and pitch drawn on a grid that resamples quickly

    class Params(Params):
        audio: Artifact = media_input("audio/wav", description="The clip: an upstream audio output or a file.")
        gain_db: float = Field(3.0, ge=0.0, le=24.0, description="Change the level by up to +- this many dB.")
        pitch_semitones: float = Field(0.0, ge=0.0, le=12.0, description=(
            "Shift the pitch by up to +- this many semitones, keeping the length (torchaudio's pitch_shift)."))
        speed: float = Field(0.0, ge=0.0, le=0.5, description=(
            "Play faster or slower by a factor within 1 +- speed (pitch and length change together)."))
        noise_snr_db: float | None = Field(None, ge=-10.0, le=80.0, description=(
            "Add white noise at a signal-to-noise ratio drawn between this and 20 dB above it; omit for none."))
        lowpass_hz: float | None = Field(None, ge=200.0, le=24_000.0, description=(
            "Low-pass at a cutoff drawn between this and the Nyquist frequency; omit for none."))
        max_input_s: float = Field(60.0, gt=0, le=MAX_INPUT_S, description=(
            "Use at most this many seconds of the input."))

        @model_validator(mode="after")
        def lowpass_below_nyquist(self):
            rate = (self.audio.info or {}).get("sample_rate") if self.audio is not None else None
            if rate and self.lowpass_hz and self.lowpass_hz >= rate / 2:
                raise ValueError(f"lowpass_hz {self.lowpass_hz:g} is not below the Nyquist frequency of the "
                                 f"{rate:,} Hz input ({rate / 2:g} Hz); give less, or leave it out")
            return self

    def generate(self, params: Params, ctx) -> dict:
        import torch
        import torchaudio.functional as AF

        from studio_audio_io.reading import read_audio

        samples, rate = read_audio(params.audio.path, params.max_input_s)
        audio = torch.as_tensor(samples[: int(params.max_input_s * rate)]).T.contiguous()  # (channels, frames)
        rng = ctx.numpy_rng()
        drawn: dict[str, float] = {}
        if params.speed:
            factor = float(rng.uniform(1 - params.speed, 1 + params.speed))
            # faster playback = fewer samples at the same rate: resample from rate * factor
            source = quick_resampling_rate(rate * factor, rate)
            audio = AF.resample(audio, source, rate)
            drawn["speed"] = round(source / rate, 4)
        if params.pitch_semitones:
            steps = float(rng.uniform(-params.pitch_semitones, params.pitch_semitones))
            # pitch_shift stretches, then resamples from int(rate * 2 ** (steps / 12)) to rate;
            # + 0.25 keeps int() from flooring the chosen rate to the one below it
            source = quick_resampling_rate(rate * 2 ** (steps / 12), rate)
            steps = 12 * math.log2((source + 0.25) / rate)
            audio = AF.pitch_shift(audio, rate, n_steps=steps)
            drawn["pitch_semitones"] = round(steps, 3)
        if params.lowpass_hz:
            cutoff = float(rng.uniform(params.lowpass_hz, rate / 2 * 0.95))
            audio = AF.lowpass_biquad(audio, rate, cutoff)
            drawn["lowpass_hz"] = round(cutoff, 1)
        if params.gain_db:
            gain = float(rng.uniform(-params.gain_db, params.gain_db))
            audio = AF.gain(audio, gain)
            drawn["gain_db"] = round(gain, 3)
        if params.noise_snr_db is not None:
            snr = float(rng.uniform(params.noise_snr_db, params.noise_snr_db + 20))
            noise = torch.from_numpy(rng.standard_normal(audio.shape).astype("float32"))
            audio = AF.add_noise(audio, noise, torch.full(audio.shape[:1], snr))
            drawn["noise_snr_db"] = round(snr, 2)
        ctx.record(**drawn)
        return {"audio": media.Audio(audio.clamp(-1, 1).T.numpy(), rate)}


def quick_resampling_rate(wanted: float, rate: int) -> int:
    """The sample rate nearest `wanted` that resamples to `rate` quickly: a multiple of
    the largest divisor of `rate` up to rate / 1000, so that the two rates share that
    divisor. torchaudio's resampling kernel has rate / gcd rows: from a rate that shares
    no factor with `rate` it has thousands, and half a second of 16 kHz audio takes
    seconds to pitch-shift. The step is 0.1 % of the rate at most (under 2 cents)."""
    step = max(d for d in range(1, rate // 1000 + 1) if rate % d == 0) if rate >= 1000 else 1
    return max(step, round(wanted / step) * step)
