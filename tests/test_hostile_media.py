"""Hostile media inputs through the real command line: MIDI files that validate and the
run must read alike, input-file checks bounded in time, and a full disk while a WAV is
written.

- A MIDI that `studio validate` accepts renders; one it cannot render is refused, by
  validate where validate can know, and the run says the same (exit 2, never a
  traceback, never a generator failure). studio.sniff reads a MIDI as mido and
  pretty_midi (which the renderers and music models use) read it: the tracks the header
  declares, the notes pretty_midi plays (a note-on ended by a note-off on a later tick),
  its clock.
- Validation reads input files in full for a bounded time; later files get a cheap
  check (header, size), and the run checks them in full with the same words.
- A full disk while a WAV is written is the disk's problem ("disk full at PATH",
  exit 2), as for a PNG.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from mido.midifiles.meta import encode_variable_int
from click.testing import CliRunner

from forked_cli import run_forked

import studio.execute.artifacts
import studio.host.plugins
import studio.pipeline.spec
from studio.sniff import check_budget, checks_deferred, midi_clock, midi_facts, midi_notes, sniff
from studio.testing import make_host

REPO = Path(__file__).resolve().parents[1]
ODE = REPO / "pipelines/assets/ode-to-joy.mid"


# --- MIDI bytes by hand (no library: each file is exactly as odd as meant) ---------------


def vlq(n: int) -> bytes:
    """A MIDI variable-length number (mido's own encoder)."""
    return bytes(encode_variable_int(n))


def track(*events: bytes, end: bool = True) -> bytes:
    """An MTrk chunk of (delta + event) byte strings, closed by end-of-track."""
    body = b"".join(events) + (b"\x00\xff\x2f\x00" if end else b"")
    return b"MTrk" + struct.pack(">I", len(body)) + body


def smf(*tracks: bytes, declared: int | None = None, ppq: int = 96, fmt: int | None = None) -> bytes:
    fmt = (0 if len(tracks) == 1 else 1) if fmt is None else fmt
    count = len(tracks) if declared is None else declared
    return b"MThd" + struct.pack(">IHHH", 6, fmt, count, ppq) + b"".join(tracks)


def on(delta: int, pitch: int = 60, channel: int = 0, velocity: int = 64) -> bytes:
    return vlq(delta) + bytes([0x90 | channel, pitch, velocity])


def off(delta: int, pitch: int = 60, channel: int = 0) -> bytes:
    return vlq(delta) + bytes([0x80 | channel, pitch, 0])


ZERO_LENGTH = smf(track(on(0), off(0)))  # the audit's 34-byte file: note-on and note-off on tick 0
UNENDED = smf(track(on(0)))  # a note-on that never ends
GOOD = smf(track(on(0), off(96)))
MANY_TRACKS = smf(track(on(0), off(10)), declared=65_535, fmt=1)  # the header lies: 1 track is there


def dense(notes: int, length: int, ppq: int = 960) -> bytes:
    """`notes` notes in one track by running status; each `length` ticks long (0: they
    end on the tick they start, like the audit's 1.6 MB file)."""
    pair = b"\x00\x3c\x40" + vlq(length) + b"\x3c\x00"
    return smf(track(b"\x00\x90\x3c\x40" + vlq(length) + b"\x3c\x00" + pair * (notes - 1)), ppq=ppq)


# --- the command line -------------------------------------------------------------------


def studio_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`studio ARGS` as a process of its own, forked off a server that imported the CLI
    once (tests/forked_cli.py); stdout and stderr together, in .stdout."""
    code, output, _, _, timed_out = run_forked(list(args), cwd, timeout=timeout, as_limit=resource.RLIM_INFINITY)
    if timed_out:
        raise subprocess.TimeoutExpired(["studio", *args], timeout, output)
    return subprocess.CompletedProcess(["studio", *args], code, output, "")


def pipe(*steps: str) -> str:
    """`name: t` on line 1, `steps:` on line 2, step i on line 3 + i (flow style)."""
    return "name: t\nsteps:\n" + "".join(f"  - {s}\n" for s in steps)


def render(midi: str, **more: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in more.items())
    return pipe(f"{{id: r, uses: audio.render, with: {{midi: {midi}{extra}}}}}")


def no_traceback(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "Error: internal" not in output, output
    return output


def validate_and_run(tmp_path: Path, yaml: str, files: dict[str, bytes], *, run: bool = True):
    """(validate's result, run's result or None) for a pipeline in a fresh folder."""
    (tmp_path / "p.yaml").write_text(yaml)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    checked = studio_cli("validate", "p.yaml", cwd=tmp_path)
    ran = studio_cli("run", "p.yaml", "--out", "runs", "-q", cwd=tmp_path) if run else None
    return checked, ran


# --- F6: a MIDI without a playable note is refused, by validate and the run alike ---------


@pytest.mark.parametrize("data, why", [
    (ZERO_LENGTH, "1 note ends on the tick it starts; give each note a length of at least one tick"),
    (UNENDED, "1 note-on is never ended; end each note with a note-off"),
    (dense(50_000, 0), "50,000 notes end on the tick they start"),  # the audit's dense.mid, smaller
], ids=["zero-length", "never-ended", "dense-zero-length"])
@pytest.mark.parametrize("synthesizer", ["auto", "builtin"])
def test_a_midi_without_a_playable_note_is_refused_by_validate_and_run(tmp_path, data, why, synthesizer):
    checked, ran = validate_and_run(tmp_path, render("m.mid", synthesizer=synthesizer), {"m.mid": data})
    for result in (checked, ran):
        output = no_traceback(result)
        assert result.returncode == 2, output
        assert "p.yaml:3: steps[0].with.midi (step 'r'): input file 'm.mid' (audio/midi) has no notes to play: " \
               "a note is a note-on ended by a note-off on a later tick, and here " in output
        assert why in output
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_the_same_files_are_refused_as_a_music_primer(tmp_path):
    files = {"zero.mid": ZERO_LENGTH, "open.mid": UNENDED, "lies.mid": MANY_TRACKS}
    yaml = pipe(*[f"{{id: s{i}, uses: music.transformer, with: {{primer: {name}, duration_s: 1}}}}"
                  for i, name in enumerate(files)])
    checked, _ = validate_and_run(tmp_path, yaml, files, run=False)
    output = no_traceback(checked)
    assert checked.returncode == 2
    assert "p.yaml:3: steps[0].with.primer (step 's0'): input file 'zero.mid' (audio/midi) has no notes to play" \
        in output
    assert "p.yaml:4: steps[1].with.primer (step 's1'): input file 'open.mid' (audio/midi) has no notes to play" \
        in output
    assert "p.yaml:5: steps[2].with.primer (step 's2'): input file 'lies.mid' (audio/midi) is a damaged MIDI " \
           "file: the header declares 65,535 tracks, 1 is there" in output


def test_a_midi_is_not_audio_for_the_vae(tmp_path):
    yaml = pipe("{id: m, uses: music.transformer, with: {duration_s: 1}}",
                "{id: v, uses: audio.vae, with: {audio: a.mid, mode: reconstruct}}",
                "{id: w, uses: audio.vae, with: {audio: '${steps.m.outputs.midi}', mode: reconstruct}}")
    checked, _ = validate_and_run(tmp_path, yaml, {"a.mid": GOOD}, run=False)
    output = no_traceback(checked)
    assert checked.returncode == 2
    assert "p.yaml:4: steps[1].with.audio (step 'v'): a.mid is a MIDI file: audio.vae encodes sound, not notes; " \
           "render it to a WAV first (uses: audio.render)" in output
    assert "p.yaml:5: steps[2].with.audio (step 'w'): an upstream MIDI output: audio.vae encodes sound" in output


def test_notes_are_paired_as_pretty_midi_pairs_them_and_render(tmp_path):
    """A note struck again before its note-off (the off on that tick ends the earlier one
    only), two open notes of one pitch ended by one note-off, a note-on of velocity 0 as
    a note-off, a zero-length note beside real ones, a note-off of no note: validate
    counts what the synthesizer plays, and it renders."""
    data = smf(track(
        on(0, 60), on(96, 60), off(0, 60), off(96, 60),  # 0-96, then 96-192
        on(0, 62), on(10, 62), off(10, 62),  # 192-212 and 202-212
        on(0, 64), on(0, 64, velocity=0),  # zero length: dropped
        on(0, 67), on(48, 67, velocity=0),  # velocity 0 ends it
        off(0, 70),  # ends nothing
    ))
    facts = midi_facts(data)
    assert (facts["notes"], facts["zero_length"], facts["unended"]) == (5, 1, 0)
    notes, _ = _pretty_midi_notes(data)
    assert notes == 5
    checked, ran = validate_and_run(tmp_path, render("m.mid", synthesizer="builtin", sample_rate=8000),
                                    {"m.mid": data})
    assert checked.returncode == 0, no_traceback(checked)
    assert ran.returncode == 0, no_traceback(ran)
    assert list((tmp_path / "runs").rglob("audio.wav"))


def test_audio_shorter_than_a_sample_is_a_user_error_not_a_crash(tmp_path):
    # one tick of a microsecond-per-beat tempo at 32,767 ticks per beat: 30 picoseconds
    data = smf(track(vlq(0) + b"\xff\x51\x03\x00\x00\x01", on(0), off(1)), ppq=32_767)
    checked, ran = validate_and_run(tmp_path, render("m.mid", synthesizer="builtin", tail_s=0), {"m.mid": data})
    assert checked.returncode == 0, no_traceback(checked)
    output = no_traceback(ran)
    assert ran.returncode == 2, output
    assert "the rendered audio is silent" in output and "raised" not in output


def heavy_voices(tempo_change: bool = False) -> bytes:
    """8,000 notes of 10 s each, one every 0.1 s (at 960 ticks per beat, 120 bpm; 100
    pitches in turn, so that notes of one pitch never overlap): 80,000 s of sound for the
    built-in synthesizer, which renders at most 76,800."""
    events, now = [], 0
    pending: list[int] = []  # end ticks of open notes, in order
    for k in range(8000):
        start = k * 192  # 0.1 s
        while pending and pending[0] <= start:  # note-offs due first
            end = pending.pop(0)
            events.append(off(end - now, 20 + (end // 192 - 100) % 100))
            now = end
        events.append(on(start - now, 20 + k % 100))
        now = start
        pending.append(start + 19_200)  # 10 s
    for end in pending:
        events.append(off(end - now, 20 + (end // 192 - 100) % 100))
        now = end
    tempo = [vlq(0) + b"\xff\x51\x03" + (500_000).to_bytes(3, "big")]
    if tempo_change:  # the clock changes, and the notes' lengths in seconds are counted one by one
        tempo.append(vlq(1) + b"\xff\x51\x03" + (499_000).to_bytes(3, "big"))
    return smf(track(*tempo, *events), ppq=960)


def heavy_instruments() -> bytes:
    """100 tracks, each a note at the start and one at 15 minutes: FluidSynth renders each
    track's instrument for 901 s, 90,100 s in all (it renders at most 76,800)."""
    tracks = [track(on(0), off(96), on(15 * 60 * 2 * 96 - 192), off(96)) for _ in range(100)]  # ends at 900 s
    return smf(*tracks)


@pytest.mark.parametrize("data, synthesizer, message", [
    (heavy_voices(), "builtin", "the MIDI's notes add up to 80,000 s of sound, more than the built-in synthesizer "
                                "renders (76,800 s: 64 voices through 20 minutes); use synthesizer: fluidsynth"),
    (heavy_voices(tempo_change=True), "builtin", "the MIDI's notes add up to 80,000 s of sound"),
    (heavy_instruments(), "fluidsynth", "the MIDI's 100 instruments (a program on a channel of a track) play "
                                        "through 90,100 s in all, more than FluidSynth renders (76,800 s"),
], ids=["voices", "voices-tempo-changes", "instruments"])
def test_the_synthesizers_caps_are_checked_by_validate_as_the_run_counts_them(tmp_path, data, synthesizer, message):
    from studio_audio.render import fluidsynth_available, instrument_seconds_problem, render_cost_problem, \
        voice_seconds_problem
    from studio_midi.reading import load_midi

    if synthesizer == "fluidsynth" and not fluidsynth_available():
        pytest.skip("no FluidSynth here")
    checked, _ = validate_and_run(tmp_path, render("m.mid", synthesizer=synthesizer), {"m.mid": data}, run=False)
    output = no_traceback(checked)
    assert checked.returncode == 2, output
    assert "p.yaml:3: steps[0].with (step 'r'): " + message in output
    # what the run counts from pretty_midi's notes, before it renders, is the same
    midi = load_midi(tmp_path / "m.mid")
    if synthesizer == "builtin":
        run_says = voice_seconds_problem([(n.start, n.end) for i in midi.instruments if not i.is_drum for n in i.notes])
    else:
        run_says = instrument_seconds_problem([[(n.start, n.end) for n in i.notes] for i in midi.instruments])
    assert run_says == render_cost_problem(tmp_path / "m.mid", synthesizer == "builtin")
    assert message in run_says


# --- F10: a header that declares tracks the file does not hold ----------------------------


@pytest.mark.parametrize("data, problem", [
    (MANY_TRACKS, "is a damaged MIDI file: the header declares 65,535 tracks, 1 is there"),
    (smf(track(on(0), off(10)), declared=3, fmt=1), "is a damaged MIDI file: the header declares 3 tracks, 1 is there"),
    (smf(track(on(0), off(10)), b"XFIH\x00\x00\x00\x01x", track(on(0), off(10)), fmt=1, declared=2),
     "is a damaged MIDI file: track 2 of 2 should start at byte 34, and a 'XFIH' chunk is there"),
    (smf(track(on(0), off(10)), b"MTrk\x00\x00\x00\x00", fmt=1), "track 2 holds no events"),
    (smf(track(on(0), off(10), vlq(0) + b"\xff\x51\x02\x07\xa1")), "a tempo event of 2 bytes (it needs 3)"),
    (smf(track(on(0), off(10), vlq(0) + b"\xff\x51\x03\x00\x00\x00")), "a tempo of 0 microseconds per beat"),
    (smf(track(on(0), off(10), vlq(0) + b"\xff\x59\x02\x09\x00")), "which names no key"),
    (smf(track(on(0), vlq(10) + b"\x80\x3c\xc0")), "a data byte above 127"),
    (smf(track(on(0), off(10), vlq(0) + b"\xf0\x02\x90\xf7")), "a system-exclusive event with a byte above 127"),
    (smf(track(on(0), off(10) + b"\x00\xff\x01\x20abc")), "runs past the end"),
], ids=["65535-declared", "3-declared", "alien-chunk", "empty-track", "short-tempo", "zero-tempo", "no-key",
        "data-byte", "sysex-byte", "overrun"])
def test_what_mido_or_pretty_midi_cannot_read_is_refused_by_validate(tmp_path, data, problem):
    checked, ran = validate_and_run(tmp_path, render("m.mid"), {"m.mid": data})
    for result in (checked, ran):
        output = no_traceback(result)
        assert result.returncode == 2, output
        assert "p.yaml:3: steps[0].with.midi (step 'r'): input file 'm.mid' (audio/midi) " in output
        assert problem in output
    with pytest.raises(Exception):  # and the run's readers would indeed refuse it
        _pretty_midi_notes(data)


def test_a_header_that_declares_fewer_tracks_than_the_file_holds_reads_the_declared_ones():
    data = smf(track(on(0), off(96)), track(on(0, 62), off(960, 62)), declared=1, fmt=1)
    facts = midi_facts(data)
    assert (facts["notes"], facts["tracks"]) == (1, 1)
    assert _pretty_midi_notes(data)[0] == 1  # mido reads the declared track only, too


def _pretty_midi_notes(data: bytes) -> tuple[int, float]:
    import mido
    import pretty_midi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = pretty_midi.PrettyMIDI(mido_object=mido.MidiFile(file=io.BytesIO(data)))
    return sum(len(i.notes) for i in pm.instruments), pm.get_end_time()


# --- the class: whatever sniff accepts, the run's readers read, with the same notes -------


def _random_track(r: random.Random) -> bytes:
    events = []
    for _ in range(r.randint(0, 40)):
        delta = r.choice([0, 0, 1, 7, 200, 20_000])
        channel = r.choice([0, 1, 9])
        pick = r.random()
        if pick < 0.35:
            events.append(on(delta, r.choice([60, 61]), channel, r.choice([0, 64])))
        elif pick < 0.6:
            events.append(off(delta, r.choice([60, 61]), channel))
        elif pick < 0.7:
            events.append(vlq(delta) + bytes([0xC0 | channel, r.randrange(128)]))
        elif pick < 0.75:
            events.append(vlq(delta) + b"\xff\x51\x03" + r.randint(1, 0xFFFFFF).to_bytes(3, "big"))
        elif pick < 0.8:
            events.append(vlq(delta) + bytes([0xFF, r.choice([0x01, 0x08, 0x4B, 0x7F]), 1, 0x41]))  # known/unknown kinds
        elif pick < 0.85:
            events.append(vlq(delta) + b"\xf0\x02\x7e\xf7")
        elif pick < 0.9:
            events.append(vlq(delta) + b"\xff\x58\x04" + bytes([r.choice([0, 4]), 2, 24, 8]))
        else:
            events.append(vlq(delta) + bytes([0xE0 | channel, 0, 64]))
    return track(*events)


def _mutate(r: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(r.randint(1, 3)):
        i = r.randrange(len(out))
        pick = r.random()
        if pick < 0.6:
            out[i] = r.randrange(256)
        elif pick < 0.8:
            del out[i]
        else:
            out.insert(i, r.randrange(256))
    return bytes(out)


def test_sniff_reads_midi_as_the_renderers_do():
    """A seeded corpus of odd and damaged files: each one sniff accepts, mido and
    pretty_midi read without error, with the notes sniff counted (the drum notes too),
    ending no later than sniff's length, and studio.sniff.midi_notes lists those notes."""
    import mido
    import pretty_midi
    from studio_midi.reading import MAX_TICKS

    r = random.Random(20261124)
    accepted = 0
    for _ in range(600):
        data = smf(*[_random_track(r) for _ in range(r.choice([1, 1, 2, 3]))], ppq=r.choice([1, 96, 480]))
        if r.random() < 0.5:
            data = _mutate(r, data)
        facts = midi_facts(data)
        if isinstance(facts, str) or facts["last_tick"] >= MAX_TICKS:
            continue
        accepted += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = pretty_midi.PrettyMIDI(mido_object=mido.MidiFile(file=io.BytesIO(data)))  # must not raise
        played = [n for i in pm.instruments for n in i.notes]
        assert len(played) == facts["notes"], data.hex()
        assert sum(len(i.notes) for i in pm.instruments if i.is_drum) == facts["drum_notes"], data.hex()
        assert pm.get_end_time() <= facts["seconds"] + 1e-6, data.hex()
        listed = [t for s, e, *_ in sorted(midi_notes(data)) for t in (s, e)]
        wanted = [float(t) for n in sorted(played, key=lambda n: (n.start, n.end)) for t in (n.start, n.end)]
        assert listed == pytest.approx(wanted, abs=1e-6), data.hex()
        groups = {(p, c, t) for _, _, c, p, t in midi_notes(data)}
        instruments = [i for i in pm.instruments if i.notes]
        assert len(groups) == len(instruments) == len(facts["instruments"]), data.hex()
        clock = midi_clock(facts)  # each instrument's first and last moment, as FluidSynth renders it
        spans = [t for *_, first, last in sorted(facts["instruments"], key=lambda g: (g[3], g[4]))
                 for t in (clock(first), clock(last))]
        wanted = [t for i in sorted(instruments, key=lambda i: (min(n.start for n in i.notes), max(n.end for n in i.notes)))
                  for t in (min(n.start for n in i.notes), max(n.end for n in i.notes))]
        assert sorted(spans) == pytest.approx(sorted(float(t) for t in wanted), abs=1e-6), data.hex()
        pitched = sorted(round(n.end - n.start, 6) for i in pm.instruments if not i.is_drum for n in i.notes)
        assert sum(facts["note_lengths"].values()) == len(pitched), data.hex()
    assert accepted > 100


def test_an_unknown_meta_event_loses_its_delta_time_in_mido_and_in_sniff():
    # mido (1.3) reads a meta event of a kind it does not know with time 0: pretty_midi
    # then plays the later events that much earlier, and sniff's clock follows it
    data = smf(track(on(0), vlq(960) + b"\xff\x08\x01x", off(96)))
    notes, end = _pretty_midi_notes(data)
    facts = midi_facts(data)
    assert notes == facts["notes"] == 1
    assert end == pytest.approx(0.5) and facts["seconds"] == pytest.approx(0.5)


# --- F2: reading input files at validate is bounded in time -------------------------------


def test_validate_with_many_large_midi_inputs_answers_in_time(tmp_path):
    big = tmp_path / "dense.mid"
    big.write_bytes(dense(250_000, 1))  # 1.5 MB of real notes: a fifth of a second to read in full
    names = []
    for i in range(200):
        os.link(big, tmp_path / f"d{i}.mid")  # as the audit did: each link is its own input file
        names.append(f"d{i}.mid")
    (tmp_path / "lies.mid").write_bytes(MANY_TRACKS)
    sweep = ", ".join(names + ["lies.mid"])
    (tmp_path / "p.yaml").write_text(pipe(f"{{id: r, uses: audio.render, with: {{synthesizer: builtin}}, "
                                          f"sweep: {{midi: [{sweep}]}}}}"))
    (tmp_path / "bad.yaml").write_text(pipe(f"{{id: r, uses: audio.render, with: {{synthesizer: builtin, "
                                            f"gain_db: 5}}, sweep: {{midi: [{sweep}]}}}}"))
    for name in ("p.yaml", "bad.yaml"):
        started = time.monotonic()
        result = studio_cli("validate", name, cwd=tmp_path)
        took = time.monotonic() - started
        output = no_traceback(result)
        assert took < 3.0, f"validate took {took:.1f} s"  # 2 s, and slack for a shared machine
        assert result.returncode == 2, output
        # past the time budget a file still gets the cheap check: its chunk list is read
        assert "steps[0].sweep.midi[200] (step 'r'): input file 'lies.mid' (audio/midi) is a damaged MIDI file: " \
               "the header declares 65,535 tracks, 1 is there" in output
    assert "got 5" in no_traceback(studio_cli("validate", "bad.yaml", cwd=tmp_path))
    (tmp_path / "ok.yaml").write_text(pipe("{id: r, uses: audio.render, with: {synthesizer: builtin}, "
                                           f"sweep: {{midi: [{', '.join(names)}]}}}}"))
    started = time.monotonic()
    result = studio_cli("validate", "ok.yaml", cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 0, no_traceback(result)
    assert took < 3.0, f"validate took {took:.1f} s"


def test_a_file_validate_had_no_time_for_is_refused_by_the_run_in_the_same_words(tmp_path, monkeypatch):
    (tmp_path / "early.yaml").write_text(render("early.mid", synthesizer="builtin"))
    (tmp_path / "late.yaml").write_text(render("late.mid", synthesizer="builtin"))
    (tmp_path / "early.mid").write_bytes(ZERO_LENGTH)
    (tmp_path / "late.mid").write_bytes(ZERO_LENGTH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(studio.host.plugins, "_default", make_host())
    problem = "has no notes to play: a note is a note-on ended by a note-off on a later tick, and here 1 note ends " \
              "on the tick it starts; give each note a length of at least one tick"
    full = CliRunner().invoke(_cli(), ["validate", "early.yaml"])
    assert full.exit_code == 2 and f"input file 'early.mid' (audio/midi) {problem}" in full.output
    monkeypatch.setattr(studio.pipeline.spec, "INPUT_CHECK_BUDGET_S", 0.0)  # no time for full checks at all
    with check_budget(0.0):
        time.sleep(0.001)
        cheap = sniff(tmp_path / "late.mid")
        assert checks_deferred() and cheap.ok and cheap.deferred and cheap.info == {}  # its header is fine
    ran = CliRunner().invoke(_cli(), ["run", "late.yaml", "-q"])
    assert "Traceback" not in ran.output
    assert ran.exit_code == 2, ran.output
    assert f"input file 'late.mid' {problem}" in ran.output


def _cli():
    from studio.cli import cli

    return cli


def test_the_cheap_check_reads_headers_only_and_is_never_cached_as_full(tmp_path):
    path = tmp_path / "dense.mid"
    path.write_bytes(dense(200_000, 0))
    with check_budget(0.0):
        time.sleep(0.001)
        started = time.monotonic()
        for _ in range(50):
            found = sniff(path)
        assert time.monotonic() - started < 0.2
        assert found.ok and found.deferred and found.info == {}
    found = sniff(path)  # outside a budget (a run): the full check
    assert not found.ok and not found.deferred and "200,000 notes end on the tick they start" in found.problem
    with check_budget(0.0):
        assert sniff(path) is found  # a full result, once known, is used within a budget too


# --- F3: a full disk while a WAV is written is the disk's problem -------------------------


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """Every artifact of `suffix` written in the run is written to /dev/full (through a
    link in tmp_path, so that cleaning up removes only the link)."""
    link = tmp_path / "full"
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    link.symlink_to("/dev/full")
    original = studio.execute.artifacts.temp_path_for

    def arm(suffix: str):
        def temp_path_for(final: Path) -> Path:
            if final.suffix == suffix and not any("cache" in part for part in final.parts):
                if not link.is_symlink():
                    link.symlink_to("/dev/full")
                return link
            return original(final)

        monkeypatch.setattr(studio.execute.artifacts, "temp_path_for", temp_path_for)

    return arm


@pytest.mark.parametrize("yaml, suffix, artifact", [
    (render("ode.mid", synthesizer="builtin", sample_rate=8000), ".wav", "r/audio.wav"),
    (pipe("{id: t, uses: image.title, with: {text: hi, width: 32, height: 32}}"), ".png", "t/image.png"),
], ids=["wav", "png"])
def test_a_full_disk_while_writing_media_says_disk_full(tmp_path, monkeypatch, full_disk, yaml, suffix, artifact):
    (tmp_path / "p.yaml").write_text(yaml)
    shutil.copy(ODE, tmp_path / "ode.mid")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(studio.host.plugins, "_default", make_host())
    full_disk(suffix)
    result = CliRunner().invoke(_cli(), ["run", "p.yaml", "--out", "runs", "-q"])
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    assert "Error: disk full at " in result.output and f"/{artifact}: free space or use --out on another disk" \
        in result.output
    assert "LibsndfileError" not in result.output and "System error" not in result.output
    (manifest,) = (tmp_path / "runs").rglob("manifest.json")
    (item,) = [i for s in json.loads(manifest.read_text())["steps"].values() for i in s["items"]]
    assert item["status"] == "failed" and item["error_kind"] == "environment"


def test_a_full_disk_while_writing_a_midi_is_an_os_error_the_run_puts_in_words(tmp_path):
    import pretty_midi

    from studio.execute.artifacts import is_storage_problem, write_midi

    midi = pretty_midi.PrettyMIDI()
    midi.instruments.append(pretty_midi.Instrument(0))
    midi.instruments[0].notes.append(pretty_midi.Note(64, 60, 0.0, 0.5))
    (tmp_path / "full.mid").symlink_to("/dev/full")
    with pytest.raises(OSError) as caught:
        write_midi(midi, tmp_path / "full.mid", {"step": "x" * 10_000})
    assert caught.value.errno == errno.ENOSPC and is_storage_problem(caught.value)


@pytest.fixture
def tmpfs(tmp_path):
    """A 600 KB tmpfs, unmounted after the test; skips where this process may not mount."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting needs root")
    path = tmp_path / "small"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount is not permitted here")
    yield path
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_really_full_disk_while_writing_a_wav(tmp_path, tmpfs):
    (tmp_path / "p.yaml").write_text(render("ode.mid", synthesizer="builtin", sample_rate=96000))
    shutil.copy(ODE, tmp_path / "ode.mid")
    result = studio_cli("run", "p.yaml", "--out", str(tmpfs / "r"), "-q", cwd=tmp_path)
    output = no_traceback(result)
    assert result.returncode == 2, output
    assert "Error: disk full at " in output and "/r/audio.wav: free space or use --out on another disk" in output
    assert "LibsndfileError" not in output


def test_a_damaged_file_among_training_midi_is_left_out_with_a_warning(tmp_path):
    from studio.errors import UserError
    from studio_music.transformer_data import load_pieces

    tune = Path(__file__).resolve().parent.parent / "samples" / "showcase-tune.mid"
    (tmp_path / "a.mid").write_bytes(tune.read_bytes())
    (tmp_path / "b.mid").write_bytes(tune.read_bytes()[:30])  # truncated inside its first track
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pieces = load_pieces(str(tmp_path))
    assert len(pieces) == 1
    assert [str(w.message) for w in caught if "left out 1 of 2 MIDI files" in str(w.message)]
    (tmp_path / "a.mid").write_bytes(tune.read_bytes()[:30])
    with pytest.raises(UserError, match="none of the 2 MIDI files can be read"):
        load_pieces(str(tmp_path))
