"""music.transformer and audio.render: the event encoding on real pieces, sampling on a
tiny model saved here, primers, rendering with and without FluidSynth, bad MIDI."""

import json

import numpy as np
import pretty_midi
import pytest
import soundfile

from studio.testing import run_yaml
from studio_music.events import BIN_WIDTH, BOS, VOCAB_SIZE, decode, describe, duration_of, encode, notes_of


@pytest.fixture(scope="module")
def chorales(tmp_path_factory):
    """Three Bach chorales from music21's corpus, written as MIDI files."""
    from music21 import corpus

    root = tmp_path_factory.mktemp("chorales")
    paths = []
    for name in ("bwv10.7", "bwv101.7", "bwv102.7"):
        path = root / f"{name}.mid"
        corpus.parse(f"bach/{name}").write("midi", fp=str(path))
        paths.append(path)
    return paths


def test_round_trip_on_real_pieces(chorales):
    for path in chorales:
        original = pretty_midi.PrettyMIDI(str(path))
        tokens = encode(original)
        assert all(0 <= t < BOS for t in tokens)
        back = notes_of(decode(tokens))
        # voices striking one pitch together merge into one note, as long as the longest
        expected = {}
        for n in notes_of(original):
            key = (n.pitch, round(n.start / 0.01))
            if key not in expected or n.end > expected[key].end:
                expected[key] = n
        assert len(back) == len(expected)
        for n in back:
            source = expected[(n.pitch, round(n.start / 0.01))]
            assert abs(n.start - source.start) <= 0.01
            # a pitch struck again by another voice ends the note early; else the end is kept
            assert abs(n.end - source.end) <= 0.01 or n.end < source.end
            assert abs(n.velocity - source.velocity) < BIN_WIDTH
        assert abs(duration_of(tokens) - original.get_end_time()) <= 0.01


def test_event_names():
    assert [describe(t) for t in (60, 188, 256, 355, 356, 388, 389)] == [
        "NOTE_ON(60)", "NOTE_OFF(60)", "TIME_SHIFT(10ms)", "TIME_SHIFT(1000ms)", "VELOCITY(1)", "BOS", "EOS"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer GPT-2 over the event vocabulary, saved the way `studio train` does."""
    import torch
    from transformers import GPT2LMHeadModel

    from studio_music.transformer_network import gpt2_config

    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(n_layer=1, n_embd=32, n_head=2, n_positions=64))
    path = tmp_path_factory.mktemp("music") / "tiny"
    model.save_pretrained(path)
    return path


def run(tmp_path, steps):
    return run_yaml(json.dumps({"name": "m", "device": "cpu", "steps": steps}), tmp_path)


def notes(path):
    return [(n.pitch, round(n.start, 2)) for n in notes_of(pretty_midi.PrettyMIDI(str(path)))]


def test_sampling_is_deterministic_per_seed_and_lasts_as_asked(tiny_model, tmp_path):
    step = {"id": "m", "uses": "music.transformer", "with": {"model": str(tiny_model), "duration_s": 3},
            "sweep": {"seed": [1, 2]}}
    first, again = run(tmp_path / "a", [step]), run(tmp_path / "b", [step])
    assert first.status == "done", first.failed
    a1, a2 = [notes(a.path) for a in first.artifacts()]
    assert a1 == [notes(a.path) for a in again.artifacts()][0]
    assert a1 != a2
    for artifact in first.artifacts():
        midi = pretty_midi.PrettyMIDI(str(artifact.path))
        # sampling stops at the time shift that crosses duration_s (shifts are <= 1 s)
        assert 2.0 <= midi.get_end_time() <= 4.5
    manifest = json.loads(first.manifest_path.read_text())
    assert manifest["steps"]["m"]["items"][0]["notes"]["events"] > 0


def test_greedy_decoding_is_the_same_for_any_seed(tiny_model, tmp_path):
    step = {"id": "m", "uses": "music.transformer",
            "with": {"model": str(tiny_model), "duration_s": 2, "temperature": 0}, "sweep": {"seed": [1, 2]}}
    a, b = [notes(x.path) for x in run(tmp_path, [step]).artifacts()]
    assert a == b


def test_a_primer_is_continued(tiny_model, chorales, tmp_path):
    primer_notes = notes(chorales[0])
    steps = [{"id": "m", "uses": "music.transformer",
              "with": {"model": str(tiny_model), "duration_s": 2, "primer": str(chorales[0]), "primer_s": 600,
                       "program": 19}}]
    result = run(tmp_path, steps)
    assert result.status == "done", result.failed
    out = pretty_midi.PrettyMIDI(str(result.artifacts()[0].path))
    assert out.instruments[0].program == 19
    out_notes = notes(result.artifacts()[0].path)
    primer_end = pretty_midi.PrettyMIDI(str(chorales[0])).get_end_time()
    assert {p for p, _ in out_notes if _ < primer_end - 0.5} <= {p for p, _ in primer_notes}
    assert out.get_end_time() >= primer_end + 1.0  # and it went on

    steps[0]["with"]["include_primer"] = False
    alone = pretty_midi.PrettyMIDI(str(run(tmp_path / "x", steps).artifacts()[0].path))
    assert alone.get_end_time() <= 4.5


@pytest.mark.parametrize("content,message", [
    (b"", "input file 'bad.mid' is empty (0 bytes)"),
    (b"RIFF....WAVEfmt ", "input file 'bad.mid' (audio/wav) is a damaged WAV"),
    (None, "input file 'bad.mid' (audio/midi) is a damaged MIDI file"),
])
def test_bad_midi_gets_a_clear_error(tiny_model, chorales, tmp_path, content, message):
    """Input files are judged by their content before anything runs, at the field that names them."""
    from studio.errors import PipelineError

    bad = tmp_path / "bad.mid"
    bad.write_bytes(content if content is not None else chorales[0].read_bytes()[:60])
    with pytest.raises(PipelineError) as refused:
        run(tmp_path, [{"id": "r", "uses": "audio.render", "with": {"midi": "bad.mid"}},
                       {"id": "m", "uses": "music.transformer",
                        "with": {"model": str(tiny_model), "duration_s": 1, "primer": "bad.mid"}}])
    said = [issue.format() for issue in refused.value.issues]
    assert len(said) == 2
    assert "steps[0].with.midi (step 'r'): " + message in said[0]
    assert "steps[1].with.primer (step 'm'): " + message in said[1]


def render(tmp_path, midi_path, **with_):
    result = run(tmp_path, [{"id": "r", "uses": "audio.render", "with": {"midi": str(midi_path), **with_}}])
    assert result.status == "done", result.failed
    samples, rate = soundfile.read(result.artifacts()[0].path)
    notes = json.loads(result.manifest_path.read_text())["steps"]["r"]["items"][0]["notes"]
    return samples, rate, notes


def spectrum_peak_hz(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]


@pytest.fixture
def a440(tmp_path):
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes.append(pretty_midi.Note(100, 69, 0.0, 1.0))
    midi.instruments.append(inst)
    path = tmp_path / "a440.mid"
    midi.write(str(path))
    return path


def test_builtin_synthesizer_plays_the_right_pitch_at_the_asked_level(a440, tmp_path):
    samples, rate, notes = render(tmp_path, a440, synthesizer="builtin", sample_rate=16000, gain_db=-6)
    assert rate == 16000 and notes == {"synthesizer": "builtin additive"}
    assert abs(len(samples) / rate - 2.0) < 0.01  # the note plus the 1 s tail
    assert abs(np.abs(samples).max() - 10 ** (-6 / 20)) < 1e-3  # peak at -6 dBFS, 16-bit rounding
    assert abs(spectrum_peak_hz(samples[: rate], rate) - 440) < 3


def test_fluidsynth_renders_with_a_general_midi_soundfont(a440, tmp_path):
    from studio_audio.render import fluidsynth_available

    assert fluidsynth_available(), "libfluidsynth is installed by `make setup` (Debian: fluidsynth)"
    samples, rate, notes = render(tmp_path, a440, synthesizer="fluidsynth", sample_rate=22050)
    assert notes["synthesizer"] == "fluidsynth" and notes["soundfont"].endswith(".sf2")
    assert rate == 22050 and abs(np.abs(samples).max() - 10 ** (-1 / 20)) < 1e-3
    assert abs(spectrum_peak_hz(samples[: rate], rate) - 440) < 5


def test_a_missing_soundfont_is_a_clear_error(a440, tmp_path):
    from studio.errors import PipelineError

    with pytest.raises(PipelineError) as refused:
        run(tmp_path, [{"id": "r", "uses": "audio.render",
                        "with": {"midi": str(a440), "synthesizer": "fluidsynth", "soundfont": "/nope.sf2"}}])
    assert "steps[0].with.soundfont (step 'r'): soundfont '/nope.sf2' not found (looked in /nope.sf2)" in str(refused.value)


def test_vocabulary_size():
    assert VOCAB_SIZE == 390


def test_training_lowers_the_loss_and_resumes_with_tied_weights(chorales, tmp_path):
    """GPT-2 ties its embedding and output weights: checkpoints must survive that."""
    from studio.errors import UserError
    from studio.testing import make_host
    from studio.training import TrainConfig, train

    data = chorales[0].parent
    options = {"layers": "1", "width": "32", "heads": "2"}
    host = make_host()

    def config(out, **kwargs):
        return TrainConfig(data=str(data), out=out, batch_size=4, log_every=5, checkpoint_every=10,
                           options=options, **kwargs)

    result = train(host.registry.trainer("music.transformer"), config(tmp_path / "m", steps=30), show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "m" / "training" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 0.5
    assert result.metrics["held_out_nll_per_event"] < np.log(VOCAB_SIZE)  # better than uniform
    samples = tmp_path / "m" / "training" / "samples"
    continued = samples / "step-0000030" / "continuation.mid"
    assert pretty_midi.PrettyMIDI(str(continued)).get_end_time() > 8.0  # the opening and 8 s more
    heard, rate = soundfile.read(samples / "step-0000030" / "continuation-sine.wav")
    assert rate == 16_000 and abs(len(heard) / rate - pretty_midi.PrettyMIDI(str(continued)).get_end_time()) < 1.5
    assert 0.4 < np.abs(heard).max() < 0.6
    page = (samples / "index.html").read_text()
    assert 'alt="piano roll of step-0000030/continuation.mid"' in page and "<audio controls" in page
    with pytest.raises(UserError, match="is at step 30, and --steps is 30"):
        train(host.registry.trainer("music.transformer"), config(tmp_path / "m", steps=30, resume=True),
              show_progress=False)
    longer = train(host.registry.trainer("music.transformer"), config(tmp_path / "m", steps=35, resume=True),
                   show_progress=False)
    assert longer.steps == 35

    piece = run(tmp_path / "run", [{"id": "m", "uses": "music.transformer",
                                    "with": {"model": str(tmp_path / "m"), "duration_s": 2}}])
    assert piece.status == "done", piece.failed
