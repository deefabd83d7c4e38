"""audio.render: MIDI -> WAV. FluidSynth with a General MIDI soundfont when the system
has it; otherwise a small additive synthesizer built in, so a pipeline still sounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from studio import Artifact, Generator, Params, media, media_input
from studio.errors import UserError

SYSTEM_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian/Ubuntu fluid-soundfont-gm
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)


def fluidsynth_available() -> bool:
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth: needs the system's libfluidsynth)
    except (ImportError, OSError):
        return False
    return True


def find_soundfont(requested: str | None) -> str:
    if requested:
        path = Path(requested).expanduser()
        if not path.is_file():
            raise UserError(f"soundfont {requested!r} not found; give the path of a .sf2 file")
        return str(path)
    for candidate in SYSTEM_SOUNDFONTS:
        if Path(candidate).is_file():
            return candidate
    import pretty_midi

    return str(Path(pretty_midi.__file__).parent / "TimGM6mb.sf2")  # small GM font pretty_midi ships


class AudioRender(Generator):
    name = "audio.render"
    description = ("Render MIDI to a WAV: FluidSynth with a General MIDI soundfont when installed "
                   "(Debian: fluidsynth, fluid-soundfont-gm), else a built-in additive synthesizer. "
                   "The result is peak-normalised to gain_db, never clipped.")
    outputs = {"audio": media.AUDIO}
    uses_device = False

    class Params(Params):
        midi: Artifact = media_input("audio/midi", description="The MIDI to play: an upstream MIDI or a .mid file.")
        sample_rate: int = Field(44100, ge=8000, le=96000, description="Samples per second of the WAV.")
        soundfont: str | None = Field(None, max_length=1000, description=(
            "A .sf2 file for FluidSynth; default: the system's General MIDI font."))
        synthesizer: Literal["auto", "fluidsynth", "builtin"] = Field(
            "auto", description="auto: FluidSynth when installed, else the built-in synthesizer.")
        gain_db: float = Field(-1.0, ge=-60.0, le=0.0, description="Peak level of the output in dBFS.")
        tail_s: float = Field(1.0, ge=0.0, le=10.0, description="Seconds of release kept after the last note.")

    def generate(self, params: Params, ctx) -> dict:
        import numpy as np

        from studio_music.data import load_midi

        midi = load_midi(params.midi.path)
        if not any(inst.notes for inst in midi.instruments):
            raise UserError(f"{params.midi.path.name}: the MIDI file has no notes to play")
        use_fluid = params.synthesizer == "fluidsynth" or (params.synthesizer == "auto" and fluidsynth_available())
        if use_fluid:
            if not fluidsynth_available():
                raise UserError("synthesizer 'fluidsynth' needs the FluidSynth library: on Debian/Ubuntu "
                                "`apt-get install fluidsynth fluid-soundfont-gm`, or use synthesizer: builtin")
            soundfont = find_soundfont(params.soundfont)
            audio = midi.fluidsynth(fs=params.sample_rate, synthesizer=soundfont)
            ctx.record(synthesizer="fluidsynth", soundfont=soundfont)
        else:
            audio = additive(midi, params.sample_rate)
            ctx.record(synthesizer="builtin additive")
        end = int((midi.get_end_time() + params.tail_s) * params.sample_rate)
        audio = np.asarray(audio, dtype=np.float64)[:end]
        peak = float(np.abs(audio).max())
        if peak == 0:
            raise UserError("the rendered audio is silent; check the MIDI's notes and the soundfont")
        audio = audio / peak * 10 ** (params.gain_db / 20)
        return {"audio": media.Audio(audio.astype(np.float32), params.sample_rate)}


def additive(midi, sample_rate: int) -> Any:
    """Each note: four harmonics with falling weights, a 10 ms attack and an exponential
    decay, released over 80 ms at the note's end. Enough to hear a piece, not a piano."""
    import numpy as np

    length = int((midi.get_end_time() + 1.0) * sample_rate) + 1
    out = np.zeros(length)
    for inst in midi.instruments:
        if inst.is_drum:
            continue
        for note in inst.notes:
            start = int(note.start * sample_rate)
            dur = max(note.end - note.start, 0.02)
            n = int((dur + 0.08) * sample_rate)
            t = np.arange(n) / sample_rate
            freq = 440.0 * 2 ** ((note.pitch - 69) / 12)
            wave = sum(np.sin(2 * np.pi * freq * k * t) / k ** 1.5 for k in range(1, 5) if freq * k < sample_rate / 2)
            envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t * 2.5)
            envelope *= np.clip((dur + 0.08 - t) / 0.08, 0.0, 1.0)
            segment = wave * envelope * (note.velocity / 127)
            stop = min(length, start + n)
            out[start:stop] += segment[: stop - start]
    return out
