"""Training audio for audio.vae: a folder of the user's files, or clips Studio plays
itself with FluidSynth from the General MIDI soundfont (`fluidsynth:gm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
SOURCES = "a folder of audio files (WAV/FLAC/OGG/MP3), or fluidsynth:gm"
# what a folder may hold: all of it is decoded into memory (2 hours at 48 kHz is 1.4 GB)
MAX_AUDIO_FILES = 20_000
MAX_AUDIO_SECONDS = 2 * 3600

# General MIDI programs that play pitched notes: everything but the percussive,
# sound-effect and ethnic-percussion families (112-127)
MELODIC_PROGRAMS = range(0, 112)


def load_clips(data: str, *, sample_rate: int, clip_s: float, count: int, seed: int) -> list[Any]:
    """Float32 numpy mono clips of `clip_s` seconds at `sample_rate`."""
    if data.startswith("fluidsynth:"):
        if data != "fluidsynth:gm":
            raise UserError(f"--data: unknown audio source {data[:300]!r}; use {SOURCES}")
        return gm_notes(count=count, sample_rate=sample_rate, clip_s=clip_s, seed=seed)
    if "\x00" in data:
        raise UserError(f"--data {data[:300]!r}: a path cannot hold a NUL character; use {SOURCES}")
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise UserError(f"--data {data[:300]!r} is not a folder; use {SOURCES}")
    return folder_clips(folder, sample_rate=sample_rate, clip_s=clip_s)


def folder_clips(folder: Path, *, sample_rate: int, clip_s: float) -> list[Any]:
    """Every audio file under `folder`, mixed to mono, resampled and cut into clips.
    Bounded before any file is decoded: at most MAX_AUDIO_FILES files, each within
    studio_audio_io's decoding limit, and MAX_AUDIO_SECONDS of audio in all, from the files'
    headers (a few kilobytes of FLAC can declare hours)."""
    from studio_audio_io.reading import conform, read_audio

    from studio.limits import data_files

    files = data_files(folder, AUDIO_SUFFIXES, max_files=MAX_AUDIO_FILES, what="audio files")
    if not files:
        raise UserError(f"--data: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    _check_lengths(files)
    size = round(clip_s * sample_rate)
    clips = []
    for path in files:
        samples, rate = read_audio(path)
        audio = conform(samples, rate, sample_rate=sample_rate, channels=1)[0].numpy()
        for start in range(0, max(1, len(audio) - size + 1), size):
            clip = audio[start:start + size]
            if len(clip) == size and abs(clip).max() > 1e-3:  # silent stretches teach nothing
                clips.append(clip)
    if len(clips) < 10:
        raise UserError(f"{folder} gives only {len(clips)} clips of {clip_s} s with sound; "
                        "training needs at least 10 (about a minute of audio)")
    return clips


def _check_lengths(files: list[Path]) -> None:
    """Each file's header read (never its samples): a UserError naming the file that
    cannot be read or is too long to decode, or the folder whose files add up to more
    than MAX_AUDIO_SECONDS."""
    import soundfile

    from studio_audio_io.reading import READABLE, decode_problem

    total = 0.0
    for path in files:
        try:
            info = soundfile.info(str(path))
        except (soundfile.LibsndfileError, RuntimeError, TypeError, OSError) as exc:
            raise UserError(f"--data: {str(path)[-300:]} is not an audio file Studio can read ({str(exc)[:200]}); "
                            f"give {READABLE} files, or remove it") from None
        rate = int(info.samplerate or 0)
        if rate <= 0 or info.channels <= 0 or info.frames < 0:
            raise UserError(f"--data: {str(path)[-300:]}: its header declares {info.frames} frames of "
                            f"{info.channels} channels at {rate} Hz; the file is damaged")
        problem = decode_problem(info.frames, info.channels, rate, None)
        if problem:
            raise UserError(f"--data: {str(path)[-300:]}: {problem}")
        total += info.frames / rate
        if total > MAX_AUDIO_SECONDS:
            raise UserError(f"--data: the audio files under {str(files[0].parent)[-300:]} last more than "
                            f"{MAX_AUDIO_SECONDS // 3600} hours, the limit for training on them (all are decoded "
                            "into memory); give a sample of them")


def gm_notes(*, count: int, sample_rate: int, clip_s: float, seed: int) -> list[Any]:
    """`count` clips, each one General MIDI instrument playing a note, a chord or a short
    run, at a random loudness: FluidSynth with the system's GM soundfont."""
    import numpy as np

    from studio_audio.render import find_soundfont, fluidsynth_available

    if not fluidsynth_available():
        raise UserError("fluidsynth:gm needs FluidSynth: `apt-get install fluidsynth fluid-soundfont-gm` "
                        "(and pip install pyfluidsynth), or train on a folder of audio files")
    import fluidsynth

    rng = np.random.default_rng(seed)
    synth = fluidsynth.Synth(samplerate=float(sample_rate))
    font = synth.sfload(find_soundfont(None))
    size = round(clip_s * sample_rate)
    clips = []
    try:
        while len(clips) < count:
            synth.program_select(0, font, 0, int(rng.choice(MELODIC_PROGRAMS)))
            events = _phrase(rng, clip_s)
            audio = _play(synth, events, sample_rate, size)
            synth.cc(0, 123, 0)  # all notes off, then let reverb tails die before the next clip
            synth.get_samples(sample_rate)
            peak = np.abs(audio).max()
            if peak < 1e-3:  # a program silent at that pitch
                continue
            level = 10 ** (rng.uniform(-18, -1) / 20)
            clips.append((audio / peak * level).astype(np.float32))
    finally:
        synth.delete()
    return clips


def _phrase(rng, clip_s: float) -> list[tuple[float, float, int, int]]:
    """(start_s, end_s, pitch, velocity) for a single note, a chord or a run."""
    root = int(rng.integers(36, 85))
    velocity = int(rng.integers(50, 128))
    kind = rng.choice(["note", "chord", "run"], p=[0.3, 0.35, 0.35])
    if kind == "note":
        return [(0.0, float(rng.uniform(0.2, clip_s * 0.9)), root, velocity)]
    if kind == "chord":
        shape = [0, 4, 7, 12] if rng.random() < 0.5 else [0, 3, 7, 10]
        end = float(rng.uniform(0.3, clip_s * 0.9))
        return [(0.0, end, root + i, velocity) for i in shape[: int(rng.integers(2, 5))]]
    step = float(rng.uniform(0.1, 0.35))
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    notes, t = [], 0.0
    while t + step < clip_s * 0.9:
        notes.append((t, t + step * 0.9, root + int(rng.choice(scale)), velocity))
        t += step
    return notes


def _play(synth, events, sample_rate: int, size: int) -> Any:
    """Render note events into `size` mono samples."""
    import numpy as np

    changes = sorted([(s, "on", p, v) for s, _, p, v in events] + [(e, "off", p, 0) for _, e, p, _ in events])
    out, done = [], 0
    for time_s, kind, pitch, velocity in changes:
        frame = min(size, round(time_s * sample_rate))
        if frame > done:
            out.append(synth.get_samples(frame - done))
            done = frame
        if kind == "on":
            synth.noteon(0, pitch, velocity)
        else:
            synth.noteoff(0, pitch)
    if size > done:
        out.append(synth.get_samples(size - done))
    stereo = np.concatenate(out).astype(np.float32).reshape(-1, 2) / 32768.0
    return stereo.mean(axis=1)
