"""audio.vae: diffusers' AutoencoderOobleck, the VAE of Stable Audio Open.

The encoder turns a waveform into a sequence of Gaussian latents (one frame per
`hop_length` samples); the decoder turns latents back into a waveform. Four things to
do with that:
- sample: decode latents drawn from the prior N(0, temperature^2);
- variation: encode `audio`, push its latents by `strength` units of noise, decode;
- interpolate: encode `audio` and `audio_b`, decode points on the line between them;
- reconstruct: encode and decode, to hear what the model keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from studio import Artifact, Generator, Params, UserError, media, media_input, model_input
from studio.weights import local_path, model_problem
from studio_diffusers import oobleck
from studio_diffusers.oobleck import config_problem, decode, encode, hop_and_rate

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "vae"
CROSSFADE_S = 0.02  # between the segments of an interpolation written as one file
MAX_OUTPUT_S = 20 * 60  # an interpolation writes frames x its inputs' length


def vae_config(model: str) -> dict[str, Any] | None:
    """The VAE's config.json as a dict, read without loading weights; None when there is
    nothing local to read."""
    return oobleck.vae_config(model, DEFAULT_WEIGHTS)


def load_vae(model: str) -> Any:
    """An AutoencoderOobleck from 'default' (the embedded weights), a directory, or a hub
    id in the local cache."""
    return oobleck.load_vae(model, DEFAULT_WEIGHTS)


class AudioVAE(Generator):
    name = "audio.vae"
    description = ("Oobleck VAE (diffusers AutoencoderOobleck, Stable Audio Open's architecture): sample "
                   "new audio from the prior, make variations of a clip, interpolate between two clips, "
                   "or reconstruct one. Input audio of any rate and channel count is converted.")
    outputs = {"audio": media.AUDIO}
    # fp16 first: its 10-bit mantissa keeps the decoder's long chain of Snake activations
    # close to fp32 (measured on the default, 2 s sampled: SNR 33 dB vs fp32, bf16 only
    # 12 dB); a decode that overflows fp16 is rerun in fp32 by the runtime
    precisions = ("fp16", "bf16", "fp32")
    default_weights = DEFAULT_WEIGHTS
    version = "2"  # 2: loudness matched to the input by default

    class Params(Params):
        model: str = model_input("default", files=("config.json", "vae/config.json"), hub=True, description=(
            "'default' (embedded, 16 kHz mono, trained on FluidSynth instrument notes), a diffusers "
            "AutoencoderOobleck directory (safetensors), a Stable Audio Open directory (vae/ inside), or a hub id "
            "in the local Hugging Face cache."))
        mode: Literal["sample", "variation", "interpolate", "reconstruct"] = Field(
            "sample", description="sample: from the prior; variation: perturb `audio`; interpolate: "
                                  "`audio` -> `audio_b`; reconstruct: encode and decode `audio`.")
        audio: Artifact | None = media_input("audio/*", None, description=(
            "Input clip (variation, reconstruct, interpolate): an upstream audio output or a WAV/FLAC/OGG/MP3 file."))
        audio_b: Artifact | None = media_input("audio/*", None, description=(
            "Second clip, the end point of an interpolation."))
        duration_s: float = Field(4.0, gt=0.0, le=120.0, description="Seconds of audio to sample (mode sample).")
        temperature: float = Field(1.0, ge=0.0, le=3.0, description=(
            "Standard deviation of the prior latents (mode sample); below 1 is quieter and plainer."))
        strength: float = Field(0.5, ge=0.0, le=5.0, description=(
            "Noise added to the latents, in units of the prior's standard deviation (mode variation); "
            "0 gives the reconstruction."))
        frames: int = Field(5, ge=2, le=64, description=(
            "Points from `audio` to `audio_b`, written one after another in one file (mode interpolate); "
            "the file is at most 20 minutes long."))
        position: float | None = Field(None, ge=0.0, le=1.0, description=(
            "Decode only this point between `audio` (0) and `audio_b` (1); sweep it to get a sequence "
            "of files (mode interpolate)."))
        max_input_s: float = Field(30.0, gt=0.0, le=600.0, description=(
            "Longer inputs are cut to this many seconds before they are decoded."))
        loudness: Literal["match_input", "as_decoded"] = Field("match_input", description=(
            "match_input: scale the output to the RMS level of its input(s) (variation, reconstruct, "
            "interpolate); as_decoded: leave the decoder's level. Either way the peak never clips."))

        @field_validator("audio", "audio_b")
        @classmethod
        def is_sound_not_notes(cls, value: Artifact | None) -> Artifact | None:
            # "audio/*" takes audio/midi too, and a MIDI file holds notes, not samples to encode
            if value is not None and value.media_type == media.MIDI:
                name = "an upstream MIDI output" if value.pending else f"{value.path.name} is a MIDI file"
                raise ValueError(f"{name}: audio.vae encodes sound, not notes; render it to a WAV first "
                                 "(uses: audio.render) and give that")
            return value

        @model_validator(mode="after")
        def inputs_fit_the_mode(self):
            needs = {"sample": (), "variation": ("audio",), "reconstruct": ("audio",),
                     "interpolate": ("audio", "audio_b")}[self.mode]
            missing = [name for name in needs if getattr(self, name) is None]
            if missing:
                raise ValueError(f"mode {self.mode!r} needs {' and '.join(repr(m) for m in missing)}: "
                                 "an upstream audio output or an audio file")
            unused = [name for name in ("audio", "audio_b") if name not in needs and getattr(self, name) is not None]
            if unused:
                raise ValueError(f"mode {self.mode!r} does not use {' or '.join(repr(u) for u in unused)}; "
                                 "remove it, or pick a mode that does (variation, reconstruct, interpolate)")
            return self

        @field_validator("model")
        @classmethod
        def is_an_oobleck(cls, value: str) -> str:
            problem = model_problem(value, local_path(value, DEFAULT_WEIGHTS), config_problem, ("", "vae"),
                                    read=lambda: vae_config(value) or None)
            if problem:
                raise ValueError(problem)
            return value

        @model_validator(mode="after")
        def inputs_are_usable(self):
            # what the sniffed inputs tell: how much would be decoded, whether the model
            # gets a whole latent frame, how long an interpolation comes out
            from studio_audio_io.reading import decode_problem

            known = {name: a.info for name in ("audio", "audio_b")
                     if (a := getattr(self, name)) is not None and "frames" in a.info}
            for name, info in known.items():
                problem = decode_problem(info["frames"], info["channels"], info["sample_rate"], self.max_input_s)
                if problem:
                    raise ValueError(f"{getattr(self, name).path.name}: {problem}")
            model = vae_config(self.model)
            sizes = hop_and_rate(model) if model else None
            if sizes:
                for name, info in known.items():
                    too_short = short_input_problem(info["seconds"], *sizes)
                    if too_short:
                        raise ValueError(f"{getattr(self, name).path.name}: {too_short}")
            if self.mode == "interpolate" and self.position is None and len(known) == 2:
                seconds = min(known["audio"]["seconds"], known["audio_b"]["seconds"], self.max_input_s)
                problem = interpolation_problem(seconds, self.frames)
                if problem:
                    raise ValueError(problem)
            return self

    def load(self, params: Params, ctx) -> Any:
        return load_vae(params.model)

    def prepare(self, vae: Any, ctx) -> Any:
        from studio_diffusers.prepare import prepare_autoencoder

        return prepare_autoencoder(vae, ctx)

    def generate(self, params: Params, ctx) -> dict:
        import torch

        vae = ctx.model(self, params)
        rate, channels = int(vae.config.sampling_rate), int(vae.config.audio_channels)
        hop = int(vae.hop_length)
        with ctx.autocast():
            if params.mode == "sample":
                frames = max(1, -(-round(params.duration_s * rate) // hop))
                shape = (1, int(vae.config.decoder_input_channels), frames)
                z = torch.randn(shape, generator=ctx.torch_generator()) * params.temperature
                audio = decode(vae, z)[:, : round(params.duration_s * rate)]
                target = None
            elif params.mode in ("variation", "reconstruct"):
                clip = self._input(params.audio, params, rate, channels, hop, ctx, "audio")
                mean = encode(vae, clip)
                z = mean
                if params.mode == "variation" and params.strength > 0:
                    z = mean + params.strength * torch.randn(mean.shape, generator=ctx.torch_generator())
                audio = decode(vae, z)[:, : clip.shape[1]]
                target = rms(clip)
            else:
                audio, target = self._interpolate(vae, params, rate, channels, hop, ctx)
        if params.loudness == "match_input" and target is not None:
            audio, gain_db = match_rms(audio, target)
            ctx.record(loudness_gain_db=gain_db)
        audio, scaled_db = limit_peak(audio)
        ctx.record(sample_rate=rate, channels=channels, seconds=round(audio.shape[1] / rate, 3),
                   **({"scaled_down_db": scaled_db} if scaled_db else {}))
        return {"audio": media.Audio(audio.T.numpy(), rate)}

    def _input(self, artifact: Artifact, params: Params, rate: int, channels: int, hop: int, ctx, name: str):
        from studio_audio_io.reading import load_audio

        clip = load_audio(artifact.path, sample_rate=rate, channels=channels, min_frames=hop,
                          max_seconds=params.max_input_s)
        limit = round(params.max_input_s * rate)
        if clip.shape[1] > limit:
            ctx.record(**{f"{name}_cut_to_s": params.max_input_s})
            clip = clip[:, :limit]
        return clip

    def _interpolate(self, vae, params: Params, rate: int, channels: int, hop: int, ctx):
        import torch

        a = self._input(params.audio, params, rate, channels, hop, ctx, "audio")
        b = self._input(params.audio_b, params, rate, channels, hop, ctx, "audio_b")
        length = min(a.shape[1], b.shape[1])  # both clips cut to the shorter one
        points_out = 1 if params.position is not None else params.frames
        problem = interpolation_problem(length / rate, points_out)
        if problem:  # before any decoding: the inputs' lengths are sure only now
            raise UserError(problem)
        za, zb = encode(vae, a[:, :length]), encode(vae, b[:, :length])
        points = [params.position] if params.position is not None else torch.linspace(0, 1, params.frames).tolist()
        segments = [decode(vae, torch.lerp(za, zb, t))[:, :length] for t in points]
        ctx.record(points=[round(t, 4) for t in points], segment_s=round(length / rate, 3))
        if params.loudness == "match_input":  # each point at the level between the two inputs'
            level_a, level_b = rms(a[:, :length]), rms(b[:, :length])
            segments = [match_rms(seg, level_a + t * (level_b - level_a))[0] for seg, t in zip(segments, points)]
        return join(segments, round(CROSSFADE_S * rate)), None


def short_input_problem(seconds: float, hop: int, rate: int) -> str | None:
    """Why a clip of `seconds` is too short for a model that needs `hop` samples at `rate`."""
    if seconds * rate < hop:
        return (f"{seconds * 1000:.1f} ms of audio is too short; the model needs at least "
                f"{hop / rate * 1000:.0f} ms")
    return None


def interpolation_problem(segment_s: float, frames: int) -> str | None:
    """Why `frames` segments of `segment_s` each make too long a file, or None."""
    total = segment_s * frames
    if total > MAX_OUTPUT_S:
        return (f"{frames} frames of {segment_s:,.1f} s make {total:,.0f} s of audio; an interpolation is at most "
                f"{MAX_OUTPUT_S // 60} minutes. Lower frames or max_input_s, or sweep position for one file "
                "per point")
    return None


def join(segments: list, crossfade: int) -> Any:
    """Segments one after another, each boundary an equal-power crossfade of
    `crossfade` samples so the joins do not click."""
    import torch

    out = segments[0]
    for seg in segments[1:]:
        n = min(crossfade, out.shape[1], seg.shape[1])
        if n == 0:
            out = torch.cat([out, seg], dim=1)
            continue
        ramp = torch.linspace(0, 1, n)
        mixed = out[:, -n:] * torch.cos(ramp * torch.pi / 2) + seg[:, :n] * torch.sin(ramp * torch.pi / 2)
        out = torch.cat([out[:, :-n], mixed, seg[:, n:]], dim=1)
    return out


def rms(audio) -> float:
    return float(audio.pow(2).mean().sqrt())


def match_rms(audio, target: float) -> tuple[Any, float]:
    """Scale `audio` to RMS `target`; (audio, gain in dB). Silence stays silence."""
    import math

    level = rms(audio)
    if level < 1e-9 or target < 1e-9:
        return audio, 0.0
    return audio * (target / level), round(20 * math.log10(target / level), 2)


def limit_peak(audio, ceiling: float = 0.99) -> tuple[Any, float]:
    """Scale the audio down when its peak would clip; (audio, dB removed or 0)."""
    import math

    peak = float(audio.abs().max())
    if peak <= ceiling or not math.isfinite(peak):
        return audio, 0.0
    return audio * (ceiling / peak), round(20 * math.log10(peak / ceiling), 2)

