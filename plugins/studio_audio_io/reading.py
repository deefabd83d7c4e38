"""Reading audio files for a model: soundfile decodes, torchaudio resamples.

Whatever comes in (any sample rate, mono, stereo, 5.1) leaves as a float32 tensor
shaped (channels, frames) at the model's rate and channel count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio import UserError

READABLE = "WAV, FLAC, OGG/Vorbis, MP3 or AIFF"
# Samples decoded from one input at most (frames x channels, 1 GB as float32): 10 minutes
# of 8-channel 48 kHz audio. A few kilobytes of FLAC can declare far more.
MAX_DECODED_SAMPLES = 2**28


def decode_problem(frames: int, channels: int, rate: int, max_seconds: float | None) -> str | None:
    """Why decoding `frames` (at most max_seconds of them) of `channels` is refused, or None."""
    if max_seconds is not None:
        frames = min(frames, int(max_seconds * rate) + 1)
    if frames * channels > MAX_DECODED_SAMPLES:
        return (f"{frames / max(rate, 1):,.0f} s of {channels}-channel audio at {rate:,} Hz is {frames * channels:,} "
                f"samples to decode; inputs are limited to {MAX_DECODED_SAMPLES:,} (10 minutes of 8-channel "
                "48 kHz audio). Give a shorter clip or fewer channels")
    return None


def read_audio(path: Path, max_seconds: float | None = None) -> tuple[Any, int]:
    """(samples as float32 numpy (frames, channels), sample rate), or a UserError that
    names the file and what was wrong with it. With max_seconds (a generator's input),
    only the start of the file is decoded, a second more than asked so resampling sees
    past the cut, and at most MAX_DECODED_SAMPLES of it; training reads whole files."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file {str(path)!r} not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path.name}: the file is empty (0 bytes); give a {READABLE} file")
    try:
        frames = -1
        if max_seconds is not None:
            info = soundfile.info(str(path))
            problem = decode_problem(info.frames, info.channels, info.samplerate, max_seconds)
            if problem:
                raise UserError(f"{path.name}: {problem}")
            frames = int((max_seconds + 1) * info.samplerate)
        samples, rate = soundfile.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UserError(f"{path.name}: not an audio file Studio can read ({exc}); "
                        f"give a {READABLE} file") from exc
    if samples.shape[0] == 0:
        raise UserError(f"{path.name}: the audio has no samples (0 s long); give a clip with sound in it")
    problem = samples_problem(samples, int(rate))
    if problem:
        raise UserError(f"{path.name}: {problem}")
    return samples, int(rate)


# Float WAVs hold any float; real audio stays within [-1, 1], a little over when clipped.
MAX_SAMPLE = 64.0


def samples_problem(samples: Any, rate: int) -> str | None:
    """Why decoded samples (frames, channels) are not audio a model can take, or None:
    NaN or infinite samples, or samples far outside [-1, 1] (a damaged float file)."""
    import numpy as np

    for what, bad in (("NaN", np.isnan), ("infinite", np.isinf),
                      (f"samples beyond +-{MAX_SAMPLE:g} (audio lies within +-1)",
                       lambda a: np.abs(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)) > MAX_SAMPLE)):
        flags = bad(samples).any(axis=1)
        if flags.any():
            at = int(np.argmax(flags)) / max(rate, 1)
            label = what if what.startswith("samples") else f"{what} samples"
            return (f"holds {label} at {at:.2f} s; the file is damaged or not audio. "
                    "Give a clip of plain samples (re-export it as 16-bit PCM WAV)")
    return None


def conform(samples: Any, rate: int, *, sample_rate: int, channels: int) -> Any:
    """numpy (frames, channels) at `rate` -> torch (channels, frames) at `sample_rate`,
    mixed down (mean) or up (copies) to `channels`."""
    import torch
    import torchaudio.functional as AF

    audio = torch.as_tensor(samples, dtype=torch.float32).T.contiguous()
    if audio.shape[0] != channels:
        mono = audio.mean(dim=0, keepdim=True)
        audio = mono.expand(channels, -1).contiguous()
    if rate != sample_rate:
        audio = AF.resample(audio, rate, sample_rate)
    return audio


def load_audio(path: Path, *, sample_rate: int, channels: int, min_frames: int = 1,
               max_seconds: float | None = None) -> Any:
    """The file at `path` as a torch (channels, frames) tensor ready for the model; with
    max_seconds, a little more than that many seconds (the caller cuts)."""
    samples, rate = read_audio(path, max_seconds)
    audio = conform(samples, rate, sample_rate=sample_rate, channels=channels)
    if audio.shape[1] < min_frames:
        raise UserError(f"{Path(path).name}: {samples.shape[0] / rate * 1000:.1f} ms of audio is too short; "
                        f"the model needs at least {min_frames / sample_rate * 1000:.0f} ms")
    return audio
