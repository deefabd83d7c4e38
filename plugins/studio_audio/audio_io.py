"""Reading audio files for a model: soundfile decodes, torchaudio resamples.

Whatever comes in (any sample rate, mono, stereo, 5.1) leaves as a float32 tensor
shaped (channels, frames) at the model's rate and channel count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio.errors import UserError

READABLE = "WAV, FLAC, OGG/Vorbis, MP3 or AIFF"


def read_audio(path: Path) -> tuple[Any, int]:
    """(samples as float32 numpy (frames, channels), sample rate), or a UserError that
    names the file and what was wrong with it."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file {str(path)!r} not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path.name}: the file is empty (0 bytes); give a {READABLE} file")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UserError(f"{path.name}: not an audio file Studio can read ({exc}); "
                        f"give a {READABLE} file") from exc
    if samples.shape[0] == 0:
        raise UserError(f"{path.name}: the audio has no samples (0 s long); give a clip with sound in it")
    return samples, int(rate)


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


def load_audio(path: Path, *, sample_rate: int, channels: int, min_frames: int = 1) -> Any:
    """The file at `path` as a torch (channels, frames) tensor ready for the model."""
    samples, rate = read_audio(path)
    audio = conform(samples, rate, sample_rate=sample_rate, channels=channels)
    if audio.shape[1] < min_frames:
        raise UserError(f"{Path(path).name}: {samples.shape[0] / rate * 1000:.1f} ms of audio is too short; "
                        f"the model needs at least {min_frames / sample_rate * 1000:.0f} ms")
    return audio
