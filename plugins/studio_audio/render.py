"""audio.render: MIDI -> WAV. FluidSynth with a General MIDI soundfont when the system
has it; otherwise a small additive synthesizer built in, so a pipeline still sounds.

A MIDI file is a few bytes that can ask for days of audio (one note at 100,000 s), so
its length is measured before anything is rendered: by `studio validate` for a file,
and again at run time before pretty_midi reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from studio import Artifact, Generator, Params, UserError, media, media_input, model_input

SYSTEM_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian/Ubuntu fluid-soundfont-gm
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
MAX_SECONDS = 20 * 60  # of MIDI rendered: 20 minutes at 96 kHz is 0.9 GB of samples in float64
# The built-in synthesizer renders each note on its own: a note's sound decays to
# e^-25 of its level (below 16-bit resolution) within NOTE_S, and all notes together
# may add up to this many seconds of sound (64 voices through 20 minutes)
NOTE_S = 10.0
MAX_VOICE_SECONDS = 64 * MAX_SECONDS
# FluidSynth renders each instrument (a program on a channel of a track, as pretty_midi
# groups notes) from its first note to its last, and a second more: at most this many
# seconds in all (64 instruments through 20 minutes; about 5 s of work each)
MAX_INSTRUMENT_SECONDS = 64 * MAX_SECONDS
NO_FLUIDSYNTH = ("synthesizer 'fluidsynth' needs the FluidSynth library: on Debian/Ubuntu "
                 "`apt-get install fluidsynth fluid-soundfont-gm`, or use synthesizer: builtin")


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


def soundfont_problem(path: Path) -> str | None:
    """Why a file is not a SoundFont 2 (a RIFF file of form 'sfbk'), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        return f"is not a SoundFont 2 file (it starts with {head[:12]!r}); give a .sf2 file"
    return None


class AudioRender(Generator):
    name = "audio.render"
    description = ("Render MIDI to a WAV: FluidSynth with a General MIDI soundfont when installed "
                   "(Debian: fluidsynth, fluid-soundfont-gm), else a built-in additive synthesizer. "
                   "The result is peak-normalised to gain_db, never clipped. MIDI of up to 20 minutes.")
    outputs = {"audio": media.AUDIO}
    uses_device = False

    class Params(Params):
        midi: Artifact = media_input("audio/midi", description=(
            "The MIDI to play: an upstream MIDI or a .mid file, at most 20 minutes long."))
        sample_rate: int = Field(44100, ge=8000, le=96000, description="Samples per second of the WAV.")
        soundfont: str | None = model_input(None, suffixes=(".sf2",), description=(
            "A .sf2 file for FluidSynth, relative to the pipeline file; default: the system's General MIDI font."))
        synthesizer: Literal["auto", "fluidsynth", "builtin"] = Field(
            "auto", description="auto: FluidSynth when installed, else the built-in synthesizer.")
        gain_db: float = Field(-1.0, ge=-60.0, le=0.0, description="Peak level of the output in dBFS.")
        tail_s: float = Field(1.0, ge=0.0, le=10.0, description="Seconds of release kept after the last note.")

        @field_validator("midi")
        @classmethod
        def midi_is_playable(cls, value: Artifact) -> Artifact:
            from studio_midi.reading import check_midi_input

            check_midi_input(value, MAX_SECONDS, "audio.render")
            return value

        @field_validator("soundfont")
        @classmethod
        def soundfont_is_a_soundfont(cls, value: str | None) -> str | None:
            if value in (None, "default"):  # the system's font (model_input's word for it, too)
                return None
            path = Path(value).expanduser()
            problem = soundfont_problem(path) if path.is_file() else None
            if problem:
                raise ValueError(f"soundfont {value!r} {problem}")
            return value

        @model_validator(mode="after")
        def synthesizer_is_there(self):
            if self.soundfont and self.synthesizer == "builtin":
                raise ValueError("soundfont is for FluidSynth, and synthesizer is 'builtin'; remove one of them")
            if self.synthesizer == "fluidsynth" and not fluidsynth_available():
                raise ValueError(NO_FLUIDSYNTH)
            builtin = self.synthesizer == "builtin" or (self.synthesizer == "auto" and not fluidsynth_available())
            if self.midi.pending or self.midi.path is None:
                return self  # an upstream MIDI: the run checks the same rules once it exists
            path = Path(self.midi.path)
            if builtin and only_drums(path):
                raise ValueError("the MIDI's notes are all drums (channel 10), and the built-in synthesizer plays no "
                                 "drums: the audio would be silent. Use synthesizer: fluidsynth with a General MIDI "
                                 "soundfont, or a MIDI with pitched notes")
            problem = render_cost_problem(path, builtin)
            if problem:
                raise ValueError(problem)
            return self

    def generate(self, params: Params, ctx) -> dict:
        import numpy as np

        from studio_midi.reading import load_midi

        # measured before pretty_midi reads it: length, notes and last tick
        midi = load_midi(params.midi.path, max_seconds=MAX_SECONDS, what="audio.render")
        use_fluid = params.synthesizer == "fluidsynth" or (params.synthesizer == "auto" and fluidsynth_available())
        if use_fluid:
            if not fluidsynth_available():
                raise UserError(NO_FLUIDSYNTH)
            soundfont = find_soundfont(params.soundfont)
            audio = fluid(midi, params.sample_rate, soundfont)
            ctx.record(synthesizer="fluidsynth", soundfont=soundfont)
        else:
            audio = additive(midi, params.sample_rate)
            ctx.record(synthesizer="builtin additive")
        end = int((midi.get_end_time() + params.tail_s) * params.sample_rate)
        audio = np.asarray(audio, dtype=np.float64)[:end]
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak == 0:
            raise UserError("the rendered audio is silent; check the MIDI's notes (their programs and velocities) "
                            "and the soundfont")
        audio = audio / peak * 10 ** (params.gain_db / 20)
        return {"audio": media.Audio(audio.astype(np.float32), params.sample_rate)}


def _seed_c_rand() -> None:
    import ctypes

    try:
        ctypes.CDLL(None).srand(1)
    except (OSError, AttributeError):  # no C library to reach: FluidSynth keeps its own state
        pass


def fluid(midi, sample_rate: int, soundfont: str) -> Any:
    """PrettyMIDI.fluidsynth, one instrument at a time: its sum is the same, and only one
    instrument's samples exist beside the mix (pretty_midi holds them all at once)."""
    import fluidsynth
    import numpy as np

    problem = soundfont_problem(Path(soundfont))
    if problem:
        raise UserError(f"soundfont {soundfont!r} {problem}")
    problem = instrument_seconds_problem([[(n.start, n.end) for n in instrument.notes]
                                          for instrument in midi.instruments])
    if problem:
        raise UserError(problem)
    # FluidSynth dithers its 16-bit output with a table drawn from the C library's rand():
    # seeded as a fresh process leaves it (glibc starts as srand(1)), the same MIDI gives
    # the same bytes in any process, a Ray worker's included (something there draws first)
    _seed_c_rand()
    synth = fluidsynth.Synth(samplerate=sample_rate)
    try:
        sfid = synth.sfload(soundfont)
        if sfid == -1:
            raise UserError(f"soundfont {soundfont!r}: FluidSynth could not load it; give a SoundFont 2 (.sf2) file")
        out = np.zeros(0)
        for instrument in midi.instruments:
            if not instrument.notes:
                continue
            wave = instrument.fluidsynth(synthesizer=synth, sfid=sfid)
            if len(wave) > len(out):
                out = np.concatenate([out, np.zeros(len(wave) - len(out))])
            out[: len(wave)] += wave
            del wave
    finally:
        synth.delete()
    return out


def additive(midi, sample_rate: int) -> Any:
    """Each note: four harmonics with falling weights, a 10 ms attack and an exponential
    decay, released over 80 ms at the note's end. Enough to hear a piece, not a piano."""
    import numpy as np

    notes = [note for inst in midi.instruments if not inst.is_drum for note in inst.notes]
    problem = voice_seconds_problem([(n.start, n.end) for n in notes])
    if problem:
        raise UserError(problem)
    length = int((midi.get_end_time() + 1.0) * sample_rate) + 1
    out = np.zeros(length)
    for note in notes:
        start = int(note.start * sample_rate)
        dur = max(note.end - note.start, 0.02)
        # past NOTE_S the decay is below what a 16-bit WAV resolves: not computed
        n = min(int((dur + 0.08) * sample_rate), int(NOTE_S * sample_rate))
        t = np.arange(n) / sample_rate
        freq = 440.0 * 2 ** ((note.pitch - 69) / 12)
        wave = sum(np.sin(2 * np.pi * freq * k * t) / k ** 1.5 for k in range(1, 5) if freq * k < sample_rate / 2)
        envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t * 2.5)
        envelope *= np.clip((dur + 0.08 - t) / 0.08, 0.0, 1.0)
        segment = wave * envelope * (note.velocity / 127)
        stop = min(length, start + n)
        out[start:stop] += segment[: stop - start]
    return out


def _voice_seconds(length_s: float) -> float:
    """Seconds of sound additive() computes for a note of this length."""
    return min(max(length_s, 0.02) + 0.08, NOTE_S)


def _voice_problem(voice_seconds: float) -> str | None:
    if voice_seconds > MAX_VOICE_SECONDS:
        return (f"the MIDI's notes add up to {voice_seconds:,.0f} s of sound, more than the built-in synthesizer "
                f"renders ({MAX_VOICE_SECONDS:,.0f} s: 64 voices through 20 minutes); use synthesizer: fluidsynth, "
                "or fewer or shorter notes")
    return None


def voice_seconds_problem(notes: list[tuple[float, float]]) -> str | None:
    """Why the built-in synthesizer does not render these pitched notes (start s, end s):
    their sound adds up to more than MAX_VOICE_SECONDS. Counted as additive() renders."""
    return _voice_problem(sum(_voice_seconds(end - start) for start, end in notes))


def _instrument_problem(spans: list[float]) -> str | None:
    total = sum(spans)
    if total > MAX_INSTRUMENT_SECONDS:
        return (f"the MIDI's {len(spans):,} instruments (a program on a channel of a track) play through "
                f"{total:,.0f} s in all, more than FluidSynth renders ({MAX_INSTRUMENT_SECONDS:,.0f} s: 64 instruments "
                "through 20 minutes); merge its tracks or channels, or cut the piece")
    return None


def instrument_seconds_problem(instruments: list[list[tuple[float, float]]]) -> str | None:
    """Why FluidSynth does not render these instruments (each a list of its notes as
    (start s, end s)): rendered one at a time from first note to last and a second more,
    they add up to more than MAX_INSTRUMENT_SECONDS."""
    return _instrument_problem([max(end for _, end in notes) - min(start for start, _ in notes) + 1.0
                                for notes in instruments if notes])


def render_cost_problem(path: Path, builtin: bool) -> str | None:
    """The synthesizer's cap (voice_seconds_problem or instrument_seconds_problem) for the
    MIDI file at `path`, from the facts studio.sniff read (its notes as pretty_midi will
    see them), before anything renders; the run counts again from pretty_midi's notes."""
    from studio.sniff import checks_deferred, midi_clock, midi_notes

    facts = Artifact(path=path, media_type=media.MIDI, sha256="", size=0).info
    if "note_lengths" not in facts:
        return None  # not read yet (validation's time budget is spent): the run checks
    seconds = midi_clock(facts)
    if not builtin:
        return _instrument_problem([seconds(last) - seconds(first) + 1.0
                                    for _, _, _, first, last in facts["instruments"]])
    # a note's length in seconds is its length in ticks at the tempo it plays in: exact
    # with one tempo, else bounded by the slowest and the fastest one
    division, tempos = facts["ticks_per_beat"], facts["tempos"]
    at_zero = [tempo for tick, tempo in tempos if not tick]  # pretty_midi starts with the last of them
    per_beat = {at_zero[-1] if at_zero else 500_000} | {tempo for tick, tempo in tempos if tick}
    low, high = (sum(count * _voice_seconds(length * tempo / division / 1e6)
                     for length, count in facts["note_lengths"].items())
                 for tempo in (min(per_beat), max(per_beat)))
    if high <= MAX_VOICE_SECONDS:
        return None
    if len(per_beat) == 1:
        return _voice_problem(low)
    if checks_deferred():
        return None
    try:
        notes = midi_notes(path.read_bytes())  # tempo changes: each note at its own tempo
    except OSError:
        return None  # the run reads it again and says why
    if isinstance(notes, str):
        return None  # studio.sniff reported it already
    return voice_seconds_problem([(start, end) for start, end, channel, _, _ in notes if channel != 9])


def only_drums(path: Path) -> bool:
    """True when every sounding note of the MIDI at `path` is on the drum channel (10),
    which the built-in synthesizer skips (counted in studio.sniff's one pass over the
    file, cached by its version)."""
    facts = Artifact(path=path, media_type=media.MIDI, sha256="", size=0).info
    return bool(facts.get("notes")) and facts.get("drum_notes") == facts.get("notes")
