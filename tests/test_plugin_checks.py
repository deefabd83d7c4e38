"""What the built-in generators refuse, and when: resource caps, parameters checked
against the model and the inputs by `studio validate`, the same rules again at run time
(a user error, exit 2), and weights that would run code or are damaged."""

import json
import os
import pickle
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from PIL import Image
from pydantic import Field

from studio import Generator, Params, UserError, hookimpl, media
from studio.cli import cli
from studio.errors import PipelineError
from studio.generator import Artifact
from studio.pipeline.validate import load_spec
from studio.testing import make_context, make_host, run_yaml

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
GPT = PLUGINS / "studio_text" / "weights" / "gpt"
GAN = PLUGINS / "studio_image" / "weights" / "gan"


@pytest.fixture(scope="module")
def host():
    return make_host()


def issues(path, host):
    """The validate-time problems of a pipeline file: [(YAML path, message)]."""
    with pytest.raises(PipelineError) as caught:
        load_spec(path, host.registry)
    return [(i.path, i.message) for i in caught.value.issues]


def pipeline(tmp_path, *steps, device="cpu"):
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps({"name": "checks", "device": device, "steps": list(steps)}))  # JSON is YAML
    return path


def midi_file(path, *, note_at=0.0, ticks_per_beat=480, notes=True, last_tick=None):
    """A MIDI file with one note starting `note_at` seconds in (at 120 bpm), or none."""
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    if notes:
        start = last_tick if last_tick is not None else round(note_at * 2 * ticks_per_beat)
        track.append(mido.Message("note_on", note=60, velocity=100, time=start))
        track.append(mido.Message("note_off", note=60, velocity=0, time=ticks_per_beat))
    else:
        track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    midi.save(path)
    return path


class Exploit:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- a generator that writes whatever MIDI a test needs, upstream of audio.render --------


class OddMidi(Generator):
    name = "test.midi"
    description = "A MIDI with one note at `at` seconds, or none (for tests)."
    outputs = {"midi": media.MIDI}
    uses_device = False

    class Params(Params):
        at: float = Field(0.0, ge=0, le=1e7, description="When the note starts.")
        notes: bool = Field(True, description="Write the note.")

    def generate(self, params, ctx):
        import pretty_midi

        midi = pretty_midi.PrettyMIDI(resolution=1)  # few ticks per second: a long file stays small
        instrument = pretty_midi.Instrument(program=0)
        if params.notes:
            instrument.notes.append(pretty_midi.Note(100, 60, params.at, params.at + 1))
        midi.instruments.append(instrument)
        return {"midi": midi}


class OddMidiPlugin:
    @hookimpl
    def register_generators(self, register):
        register(OddMidi)


def run(tmp_path, *steps, device="cpu"):
    text = json.dumps({"name": "checks", "device": device, "steps": list(steps)})
    return run_yaml(text, tmp_path, plugins=[("oddmidi", OddMidiPlugin())], use_cache=False)


def failed(result, step_id):
    """The one failed item of a step, which must be the user's mistake."""
    (item,) = [i for i in result.failed if i.step_id == step_id]
    assert item.error_kind == "user", item.error
    return item.error


# -- audio.render: rendered length, notes ------------------------------------------------


def test_a_tiny_midi_asking_for_days_of_audio_is_refused_by_validate(tmp_path):
    midi_file(tmp_path / "long.mid", note_at=100_000, ticks_per_beat=1)
    assert (tmp_path / "long.mid").stat().st_size < 64
    path = pipeline(tmp_path, {"id": "r", "uses": "audio.render", "with": {"midi": "long.mid"}})
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert "steps[0].with.midi (step 'r'): long.mid: it lasts 100,00" in result.output
    assert "audio.render takes MIDI files of at most 1,200 s (20 minutes)" in result.output


def test_a_midi_past_the_tick_limit_is_refused_before_pretty_midi_reads_it(tmp_path, host):
    midi_file(tmp_path / "ticks.mid", ticks_per_beat=1, last_tick=20_000_000)  # 8 bytes a tick in pretty_midi
    path = pipeline(tmp_path, {"id": "r", "uses": "audio.render", "with": {"midi": "ticks.mid"}})
    ((where, message),) = issues(path, host)
    assert where == "steps[0].with.midi"
    assert "its last event is at tick 20,000,001; MIDI files are limited to 10,000,000 ticks" in message


def test_an_upstream_midi_too_long_to_render_fails_at_run_time_before_any_allocation(tmp_path):
    result = run(tmp_path, {"id": "m", "uses": "test.midi", "with": {"at": 100_000}},
                 {"id": "r", "uses": "audio.render", "with": {"midi": "${steps.m.outputs.midi}"}})
    assert "midi.mid: it lasts 100,00" in failed(result, "r")
    assert "audio.render takes MIDI files of at most 1,200 s" in failed(result, "r")


def test_a_midi_without_notes_is_a_clear_error(tmp_path, host):
    midi_file(tmp_path / "silent.mid", notes=False)
    path = pipeline(tmp_path, {"id": "r", "uses": "audio.render", "with": {"midi": "silent.mid"}})
    ((_, message),) = issues(path, host)
    assert "has no notes" in message
    result = run(tmp_path / "run", {"id": "m", "uses": "test.midi", "with": {"notes": False}},
                 {"id": "r", "uses": "audio.render", "with": {"midi": "${steps.m.outputs.midi}"}})
    assert "the MIDI file has no notes to play" in failed(result, "r")


def test_render_guards_its_own_input_when_called_directly(tmp_path):
    from studio_audio.render import AudioRender

    path = midi_file(tmp_path / "long.mid", note_at=100_000, ticks_per_beat=1)
    artifact = Artifact(path=path, media_type=media.MIDI, sha256="", size=path.stat().st_size)
    params = AudioRender.Params.model_construct(midi=artifact, sample_rate=44100, soundfont=None,
                                                synthesizer="builtin", gain_db=-1.0, tail_s=1.0, seed=0)
    with pytest.raises(UserError, match="at most 1,200 s"):
        AudioRender().generate(params, make_context())


def test_soundfont_is_a_path_relative_to_the_pipeline_and_must_be_a_soundfont(tmp_path, host):
    import pretty_midi

    midi_file(tmp_path / "a.mid")
    shutil.copy(Path(pretty_midi.__file__).parent / "TimGM6mb.sf2", tmp_path / "font.sf2")
    (tmp_path / "fake.sf2").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot a font")
    good = pipeline(tmp_path, {"id": "r", "uses": "audio.render",
                               "with": {"midi": "a.mid", "soundfont": "font.sf2", "synthesizer": "fluidsynth"}})
    step = load_spec(good, host.registry).steps[0]
    assert step.with_["soundfont"] == str(tmp_path / "font.sf2")
    bad = pipeline(tmp_path, {"id": "r", "uses": "audio.render", "with": {"midi": "a.mid", "soundfont": "fake.sf2"}},
                   {"id": "s", "uses": "audio.render",
                    "with": {"midi": "a.mid", "soundfont": "font.sf2", "synthesizer": "builtin"}})
    found = dict(issues(bad, host))
    assert "is not a SoundFont 2 file" in found["steps[0].with.soundfont"]
    assert "soundfont is for FluidSynth, and synthesizer is 'builtin'" in found["steps[1].with"]


def test_the_builtin_synthesizer_bounds_each_note(tmp_path):
    """A note held for ten minutes is rendered for NOTE_S seconds: its sound has decayed
    below 16-bit resolution by then."""
    import pretty_midi

    from studio_audio.render import NOTE_S, additive

    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=0)
    instrument.notes.append(pretty_midi.Note(100, 69, 0.0, 600.0))
    midi.instruments.append(instrument)
    audio = additive(midi, 8000)
    assert np.abs(audio[: int(NOTE_S * 8000) - 1]).max() > 0.5
    assert not audio[int(NOTE_S * 8000):].any()


# -- image.grid, image.resize, image.title: sizes and colours ----------------------------


def test_a_contact_sheet_too_large_is_refused_by_validate(tmp_path):
    path = pipeline(tmp_path,
                    {"id": "t", "uses": "image.title", "with": {"text": "hi", "width": 16, "height": 16},
                     "sweep": {"seed": list(range(1000))}},
                    {"id": "g", "uses": "image.grid",
                     "with": {"images": "${steps.t.outputs.image}", "cell_size": 2048}})
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert ("steps[1].with (step 'g'): 1,000 images in cells of 2048 px make a sheet of at least 65,024 x 65,024 "
            "pixels; a sheet is limited to 100 megapixels") in result.output


def test_an_xy_sheet_of_zipped_values_is_measured_before_it_is_allocated(tmp_path):
    """Zipped values make an X/Y plot as many rows as columns, mostly empty: its size is
    known only from the labels, at run time."""
    n = 130
    result = run(tmp_path,
                 {"id": "t", "uses": "image.title", "with": {"text": "x", "width": 16, "height": 16},
                  "zip": {"seed": list(range(n)), "font_size": list(range(1, n + 1))}},
                 {"id": "g", "uses": "image.grid", "with": {"images": "${steps.t.outputs.image}"}})
    assert "130 images in cells of 256 px make a sheet of" in failed(result, "g")
    assert not list((tmp_path / "runs").rglob("g/image.png"))


def test_resize_bounds_a_side_taken_from_the_aspect_ratio(tmp_path, host):
    Image.new("RGB", (1, 8192)).save(tmp_path / "tall.png")
    path = pipeline(tmp_path, {"id": "r", "uses": "image.resize", "with": {"image": "tall.png", "width": 8192}})
    ((where, message),) = issues(path, host)
    assert where == "steps[0].with"
    assert "the resized image would be 8,192 x 67,108,864" in message and "give both width and height" in message
    # from an upstream image: known at run time, refused before resizing
    result = run(tmp_path / "run",
                 {"id": "t", "uses": "image.title", "with": {"text": "x", "width": 16, "height": 4096}},
                 {"id": "r", "uses": "image.resize", "with": {"image": "${steps.t.outputs.image}", "width": 8192}})
    assert "the resized image would be 8,192 x 2,097,152" in failed(result, "r")


def test_colours_are_checked_by_validate(tmp_path, host):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = pipeline(tmp_path,
                    {"id": "t", "uses": "image.title", "with": {"text": "hi", "background": "bleu", "color": "#12"}},
                    {"id": "u", "uses": "image.title", "with": {"text": "hi", "background": "navy", "color": "auto"}},
                    {"id": "g", "uses": "image.grid", "with": {"images": ["a.png"], "background": "rgb(1,2)"}},
                    {"id": "r", "uses": "image.resize", "with": {"image": "a.png", "width": 4, "background": "x"}})
    found = dict(issues(path, host))
    assert set(found) == {"steps[0].with.background", "steps[0].with.color", "steps[2].with.background",
                          "steps[3].with.background"}
    assert found["steps[0].with.background"] == ("'bleu' is not a colour; give a name ('navy'), '#rrggbb' "
                                                 "('#203040') or 'rgb(r, g, b)', or 'seed'")


# -- text.template -----------------------------------------------------------------------


@pytest.mark.parametrize("template,mood,message", [
    ("A {mood} {sky}", "calm", "placeholders ['sky'] have no value in `vars`"),
    ("A {mood", "calm", "bad placeholder syntax"),
    ("A mood}", "calm", "bad placeholder syntax"),
    ("{mood.__class__}", "calm", "placeholder '{mood.__class__}' is not a plain name"),
    ("{mood:>999999999}", "calm", "placeholder '{mood:>999999999}' is not a plain name"),
    ("{mood!r}", "calm", "placeholder '{mood!r}' is not a plain name"),
    ("{mood}" * 2000, "x" * 10_000, "the text would be 20,012,000 characters"),
])
def test_template_placeholders_are_checked_by_validate(tmp_path, host, template, mood, message):
    path = pipeline(tmp_path, {"id": "t", "uses": "text.template",
                               "with": {"template": template, "vars": {"mood": mood}}})
    ((where, found),) = issues(path, host)
    assert where == "steps[0].with" and message in found, found


# -- image.diffusion ---------------------------------------------------------------------


def test_diffusion_class_labels_and_sizes_are_checked_against_the_model(tmp_path, host):
    digits = str(diffusion_copy(tmp_path, "digits"))
    path = pipeline(tmp_path, {"id": "d", "uses": "image.diffusion", "with": {"steps": 2, "model": digits},
                               "sweep": {"class_label": [3, "7", "cat", 10]}},
                    {"id": "e", "uses": "image.diffusion", "with": {"prompt": "a cat", "model": digits}},
                    {"id": "f", "uses": "image.diffusion", "with": {"width": 18, "model": digits}},
                    {"id": "g", "uses": "image.diffusion", "with": {"width": 4096, "height": 4096, "model": digits}})
    found = issues(path, host)
    assert found[0] == ("steps[0].sweep.class_label[2]", f"class_label 'cat' is not a class of model '{digits}'; "
                        "classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 (or their index, 0 to 9) (item d@class_label=cat)")
    assert found[1][0] == "steps[0].sweep.class_label[3]"
    assert found[2][0] == "steps[1].with.prompt" and "is a class-conditional" in found[2][1]
    assert found[3] == ("steps[2].with.width", "width 18 is not a multiple of 4, as this model needs; try 16")
    assert found[4][0] == "steps[3].with" and "4096 x 4096 is 16.8 megapixels" in found[4][1]


def test_diffusion_on_a_cpu_refuses_days_of_work(tmp_path, host):
    from studio_image.diffusion import ImageDiffusion

    digits = str(PLUGINS / "studio_image" / "weights" / "digits")
    step = {"id": "d", "uses": "image.diffusion",
            "with": {"steps": 1000, "width": 2048, "height": 2048, "model": digits}}
    ((where, message),) = issues(pipeline(tmp_path, step, device="cpu"), host)
    assert where == "steps[0].with"
    assert message.startswith("2048 x 2048 pixels at 1000 steps is too much work for a CPU (width x height x steps "
                              "= 4,194,304,000; the limit on a CPU is 52,428,800")
    # on a GPU the work is allowed; this 16 px model is not sampled at 2048 px anywhere
    ((_, message),) = issues(pipeline(tmp_path, step, device="cuda"), host)
    assert "trained size" in message
    # at run time the device is sure: refused before any noise is drawn
    params = ImageDiffusion.Params(steps=1000, model=digits).model_copy(update={"width": 2048, "height": 2048})
    with pytest.raises(UserError, match="too much work for a CPU"):
        ImageDiffusion().generate(params, make_context())


# -- image.gan ---------------------------------------------------------------------------


def test_gan_configs_are_bounded_and_weights_must_match(tmp_path, host):
    huge = shutil.copytree(GAN, tmp_path / "huge")
    config = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**config, "image_size": 2**20}))
    path = pipeline(tmp_path, {"id": "g", "uses": "image.gan", "with": {"model": "huge"}})
    ((where, message),) = issues(path, host)
    assert where == "steps[0].with.model"
    assert message.endswith("config.json: image_size 1048576 is not a power of two from 8 to 1024")

    other = shutil.copytree(GAN, tmp_path / "other")
    (other / "config.json").write_text(json.dumps({**config, "ngf": 8}))  # the weights are ngf 64
    result = run(tmp_path / "run", {"id": "g", "uses": "image.gan", "with": {"model": str(other)}})
    assert "model.safetensors does not match its config.json" in failed(result, "g")


# -- style.cyclegan ----------------------------------------------------------------------


def test_a_pth_with_pickled_code_is_refused_by_validate_and_never_run(tmp_path, host, monkeypatch):
    from studio_style.cyclegan import load_generator

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "exploited"
    torch.save({"model.1.weight": Exploit(marker)}, tmp_path / "evil.pth")
    with open(tmp_path / "legacy.pth", "wb") as f:
        pickle.dump({"model.1.weight": Exploit(marker)}, f)
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    path = pipeline(tmp_path, {"id": "s", "uses": "style.cyclegan", "with": {"model": "evil.pth", "image": "in.png"}},
                    {"id": "t", "uses": "style.cyclegan", "with": {"model": "legacy.pth", "image": "in.png"}})
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.count("contains pickled code (loading it would call posix.system)") == 2
    for name in ("evil.pth", "legacy.pth"):
        with pytest.raises(UserError, match=r"contains pickled code .*Studio loads only weights: convert it to "
                                            "safetensors"):
            load_generator(str(tmp_path / name), "AtoB")
    assert not marker.exists()


def test_damaged_weights_are_named_by_validate_and_refused_at_load(tmp_path, host):
    from safetensors.torch import save_file

    from studio_style.cyclegan import load_generator

    save_file({"model.1.weight": torch.zeros(8, 3, 7, 7)}, tmp_path / "G_A.safetensors")
    data = (tmp_path / "G_A.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    path = pipeline(tmp_path, {"id": "s", "uses": "style.cyclegan", "with": {"model": "cut.safetensors",
                                                                           "image": "in.png"}})
    ((_, message),) = issues(path, host)
    assert "cut.safetensors is not a complete safetensors file: tensor 'model.1.weight' lies outside" in message
    with pytest.raises(UserError, match="cut.safetensors: not a readable safetensors file"):
        load_generator(str(tmp_path / "cut.safetensors"), "AtoB")
    with pytest.raises(UserError, match="junk.pth: not a plain state_dict of tensors, refused without running it; "
                                        "the file is damaged or not a PyTorch checkpoint"):
        load_generator(str(tmp_path / "junk.pth"), "AtoB")


def test_cyclegan_on_a_cpu_refuses_an_image_too_large_to_process(tmp_path, host):
    Image.new("RGB", (4096, 4096), "gray").save(tmp_path / "big.png")
    step = {"id": "s", "uses": "style.cyclegan", "with": {"image": "big.png", "max_size": 4096}}
    ((_, message),) = issues(pipeline(tmp_path, step), host)
    assert "is processed at 4096 x 4096 pixels; on a CPU style.cyclegan processes at most 4.2 megapixels" in message
    load_spec(pipeline(tmp_path, step, device="cuda"), host.registry)
    # an upstream image is measured at run time, before any tensor exists
    result = run(tmp_path / "run", {"id": "t", "uses": "image.title", "with": {"text": "x", "width": 4096,
                                                                               "height": 4096}},
                 {"id": "s", "uses": "style.cyclegan", "with": {"image": "${steps.t.outputs.image}", "max_size": 4096}})
    assert "on a CPU style.cyclegan processes at most 4.2 megapixels" in failed(result, "s")


# -- text.gpt, music.transformer, audio.vae: configs, context, code ----------------------


def copy_gpt(tmp_path, name, **config_changes):
    path = shutil.copytree(GPT, tmp_path / name)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **config_changes}))
    return path


def test_weights_that_would_run_code_or_are_pickles_are_refused_by_validate(tmp_path, host):
    copy_gpt(tmp_path, "remote", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilLM"})
    pickles = copy_gpt(tmp_path, "pickles")
    torch.save({"x": torch.zeros(1)}, pickles / "pytorch_model.bin")
    (pickles / "model.safetensors").unlink()
    pipe = shutil.copytree(PLUGINS / "studio_image" / "weights" / "digits", tmp_path / "pipe")
    index = json.loads((pipe / "model_index.json").read_text())
    (pipe / "model_index.json").write_text(json.dumps({**index, "unet": ["my_module", "MyUNet"]}))
    vae = shutil.copytree(PLUGINS / "studio_audio" / "weights" / "vae", tmp_path / "vae")
    (vae / "config.json").write_text(json.dumps({**json.loads((vae / "config.json").read_text()),
                                                 "auto_map": {"AutoModel": "x.Y"}}))
    path = pipeline(tmp_path, {"id": "a", "uses": "text.gpt", "with": {"model": "remote"}},
                    {"id": "b", "uses": "text.gpt", "with": {"model": "pickles"}},
                    {"id": "c", "uses": "music.transformer", "with": {"model": "remote"}},
                    {"id": "d", "uses": "image.diffusion", "with": {"model": "pipe"}},
                    {"id": "e", "uses": "audio.vae", "with": {"model": "vae"}})
    found = dict(issues(path, host))
    assert "config.json has an `auto_map`: the model needs code of its own" in found["steps[0].with.model"]
    assert "holds PyTorch pickle weights (pytorch_model.bin) and no .safetensors" in found["steps[1].with.model"]
    assert "config.json has an `auto_map`" in found["steps[2].with.model"]
    assert "model_index.json takes its 'unet' from 'my_module', code shipped with the model" in \
        found["steps[3].with.model"]
    assert "config.json has an `auto_map`" in found["steps[4].with.model"]


def test_a_stable_diffusion_layout_with_diffusers_own_modules_is_fine(tmp_path, host, tiny_sd_dir):
    """SD 1.x names its safety checker's module "stable_diffusion": a diffusers module."""
    sd = shutil.copytree(tiny_sd_dir, tmp_path / "sd")
    index = json.loads((sd / "model_index.json").read_text())
    (sd / "model_index.json").write_text(json.dumps(
        {**index, "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]}))
    load_spec(pipeline(tmp_path, {"id": "d", "uses": "image.diffusion", "with": {"model": "sd", "prompt": "a"}}),
              host.registry)


def test_the_loaders_refuse_code_too_when_called_directly(tmp_path):
    from studio_audio.vae import load_vae
    from studio_text.gpt import load_model

    remote = copy_gpt(tmp_path, "remote", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilLM"})
    with pytest.raises(UserError, match="auto_map"):
        load_model(str(remote))
    with pytest.raises(UserError, match="auto_map"):
        load_vae(str(remote))


def test_text_gpt_max_new_tokens_must_fit_the_context_from_config_json(tmp_path, host):
    path = pipeline(tmp_path, {"id": "t", "uses": "text.gpt", "with": {"max_new_tokens": 256}},
                    {"id": "u", "uses": "text.gpt", "with": {"max_new_tokens": 255, "stop": [""]}})
    found = issues(path, host)
    assert found[0] == ("steps[0].with.max_new_tokens",
                        "max_new_tokens 256 does not fit the model's context of 256 tokens; give at most 255")
    assert found[1] == ("steps[1].with.stop", "stop string '' has 0 characters; give 1 to 200")


def test_a_user_model_that_fails_to_load_is_a_user_error(tmp_path):
    mismatched = copy_gpt(tmp_path, "mismatched", n_embd=96)  # the weights are 192 wide
    result = run(tmp_path, {"id": "t", "uses": "text.gpt", "with": {"model": str(mismatched), "max_new_tokens": 4}})
    error = failed(result, "t")
    assert error.startswith(f"text.gpt: model {str(mismatched)!r} could not be loaded as a causal language model: ")
    assert "Give 'default', a directory with config.json, .safetensors weights and tokenizer files" in error


def test_the_embedded_default_failing_is_not_the_users_mistake():
    from studio.weights import loading

    with pytest.raises(RuntimeError, match="ours"):
        with loading("default", "a model", "Give another"):
            raise RuntimeError("ours")
    with pytest.raises(UserError, match=r"model 'mine' could not be loaded as a model: RuntimeError: theirs. Give"):
        with loading("mine", "a model", "Give another"):
            raise RuntimeError("theirs")


def test_damaged_safetensors_are_named_by_validate(tmp_path, host):
    cut = copy_gpt(tmp_path, "cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    junk = shutil.copytree(GAN, tmp_path / "junk")
    (junk / "model.safetensors").write_bytes(b"garbage")
    path = pipeline(tmp_path, {"id": "t", "uses": "text.gpt", "with": {"model": "cut"}},
                    {"id": "g", "uses": "image.gan", "with": {"model": "junk"}})
    found = dict(issues(path, host))
    assert "model.safetensors is not a complete safetensors file: tensor" in found["steps[0].with.model"]
    assert "(its header claims" in found["steps[1].with.model"]
    assert found["steps[1].with.model"].endswith("copy or save the weights again")


def test_music_models_must_speak_midi_events(tmp_path, host):
    path = pipeline(tmp_path, {"id": "m", "uses": "music.transformer", "with": {"model": str(GPT)}})
    ((where, message),) = issues(path, host)
    assert where == "steps[0].with.model"
    assert "config.json has a vocabulary of 2048 tokens, not the 390 MIDI performance events" in message


def test_a_primer_is_cut_to_its_tail_before_it_is_encoded():
    from studio_music.events import Note, encode_notes, tail_notes

    notes = [Note(60 + i % 12, 80, i * 0.5, i * 0.5 + 0.4) for i in range(20_000)]  # 10,000 s of notes
    tail = tail_notes(notes, 30.0)
    assert len(tail) == 60 and tail[0].start == 0.0 and tail[-1].pitch == notes[-1].pitch
    assert len(encode_notes(tail)) < 400
    assert tail_notes(notes[:10], 30.0) == notes[:10]  # shorter than asked: all of it, as it was


def tone(path, seconds, rate=8000):
    soundfile.write(path, 0.3 * np.sin(np.arange(int(seconds * rate)) * 0.3), rate)
    return path


def test_audio_vae_inputs_are_checked_by_validate(tmp_path, host):
    tone(tmp_path / "a.wav", 30.0)
    tone(tmp_path / "b.wav", 30.0)
    tone(tmp_path / "tiny.wav", 0.0005)
    path = pipeline(tmp_path, {"id": "i", "uses": "audio.vae",
                               "with": {"mode": "interpolate", "audio": "a.wav", "audio_b": "b.wav", "frames": 64}},
                    {"id": "r", "uses": "audio.vae", "with": {"mode": "reconstruct", "audio": "tiny.wav"}})
    found = dict(issues(path, host))
    assert found["steps[0].with"] == ("64 frames of 30.0 s make 1,920 s of audio; an interpolation is at most 20 "
                                      "minutes. Lower frames or max_input_s, or sweep position for one file per point")
    assert "tiny.wav: 0.5 ms of audio is too short; the model needs at least 4 ms" in found["steps[1].with"]


def test_audio_inputs_are_decoded_only_as_far_as_they_are_used(tmp_path):
    from studio_audio_io.reading import MAX_DECODED_SAMPLES, decode_problem, read_audio

    samples, rate = read_audio(tone(tmp_path / "long.wav", 10.0), max_seconds=2.0)
    assert rate == 8000 and len(samples) == 3 * 8000  # a second past the cut, for the resampler
    assert decode_problem(10**9, 8, 192_000, 600.0) is not None  # a few kB of FLAC can declare this
    assert decode_problem(600 * 48_000, 8, 48_000, 600.0) is None
    assert 600 * 48_000 * 8 <= MAX_DECODED_SAMPLES


# -- hostile inputs: deep JSON, huge config numbers, slow validators, FIFOs -----------------


def test_deeply_nested_json_is_a_damaged_file_not_a_crash(tmp_path, host):
    from studio.weights import safetensors_problem

    deep = copy_gpt(tmp_path, "deep")
    (deep / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    found = issues(pipeline(tmp_path, {"id": "g", "uses": "text.gpt", "with": {"prompt": "hi", "model": "deep"}}),
                   host)
    assert any("nested too deeply" in m for _, m in found), found
    header = b"[" * 100_000 + b"]" * 100_000
    (tmp_path / "deep.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    assert "nested too deeply" in safetensors_problem(tmp_path / "deep.safetensors")
    big = 20 * 2**20  # over the header cap: refused without being parsed
    with open(tmp_path / "big.safetensors", "wb") as f:
        f.write(big.to_bytes(8, "little"))
        f.truncate(big + 8)
    assert "header claims" in safetensors_problem(tmp_path / "big.safetensors")


def diffusion_copy(tmp_path, name):
    return shutil.copytree(PLUGINS / "studio_image" / "weights" / "digits", tmp_path / name)


def test_diffusion_config_numbers_are_bounded_before_arithmetic(tmp_path, host):
    blocks = diffusion_copy(tmp_path, "blocks")
    unet = json.loads((blocks / "unet" / "config.json").read_text())
    (blocks / "unet" / "config.json").write_text(json.dumps({**unet, "block_out_channels": [1] * 1100}))
    size = diffusion_copy(tmp_path, "size")
    (size / "unet" / "config.json").write_text(json.dumps({**unet, "sample_size": 10**300}))
    found = issues(pipeline(tmp_path, {"id": "a", "uses": "image.diffusion", "with": {"model": "blocks", "width": 64}},
                            {"id": "b", "uses": "image.diffusion", "with": {"model": "size"}}), host)
    assert found and all("out of range" in m and len(m) < 400 for _, m in found), found
    assert {w.split(".")[0] for w, _ in found} == {"steps[0]", "steps[1]"}


def test_validate_reads_a_model_folder_once_not_per_item(tmp_path, host):
    import time

    crowded = copy_gpt(tmp_path, "crowded")
    for i in range(5000):
        (crowded / f"f{i}.txt").write_bytes(b"")
    path = pipeline(tmp_path, {"id": "g", "uses": "text.gpt", "with": {"prompt": "hi", "model": "crowded",
                                                                       "max_new_tokens": 4},
                               "sweep": {"seed": list(range(1000))}})
    start = time.monotonic()
    load_spec(path, host.registry)
    assert time.monotonic() - start < 8


def test_diffusion_with_many_classes_is_checked_quickly_and_briefly(tmp_path, host):
    import time

    many = diffusion_copy(tmp_path, "many")
    (many / "studio.json").write_text(json.dumps({"classes": [f"c{i}" for i in range(200_000)], "null_class": 10}))
    path = pipeline(tmp_path, {"id": "d", "uses": "image.diffusion",
                               "with": {"model": "many", "class_label": "nope", "steps": 1},
                               "sweep": {"seed": list(range(1000))}})
    start = time.monotonic()
    found = issues(path, host)
    assert time.monotonic() - start < 8
    assert found and all(len(m) < 1000 for _, m in found)
    assert "199,980 more" in found[0][1]


def test_diffusion_refuses_sizes_far_past_the_unets_training_and_pipelines_get_a_lower_cpu_budget(tmp_path, host):
    from studio.limits import cpu_budget_problem
    from studio_image.diffusion import ImageDiffusion
    from studio_image.diffusion_pipeline import CPU_BUDGET

    digits = str(PLUGINS / "studio_image" / "weights" / "digits")
    step = {"id": "d", "uses": "image.diffusion", "with": {"steps": 5, "width": 256, "height": 256, "model": digits}}
    ((where, message),) = issues(pipeline(tmp_path, step, device="cuda"), host)
    assert "8x its trained size, 128 pixels a side" in message
    with pytest.raises(UserError, match="trained size"):
        params = ImageDiffusion.Params(steps=1, model=digits).model_copy(update={"width": 512, "height": 512})
        ImageDiffusion().generate(params, make_context())
    assert "512 x 512 at 50 steps" in cpu_budget_problem(1024, 1024, 50, **CPU_BUDGET)
    assert cpu_budget_problem(512, 512, 50, **CPU_BUDGET) is None


def test_grid_clips_long_labels_in_log_time():
    from PIL import ImageDraw, ImageFont
    from studio_utils.grid import _clip

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    font = ImageFont.load_default(size=12)
    calls = []
    measure = draw.textlength
    draw.textlength = lambda *a, **k: calls.append(1) or measure(*a, **k)
    for _ in range(50):
        text = _clip("x" * 2000, draw, font, 100)
        assert text.endswith("...") and measure(text, font=font) <= 100
    assert len(calls) < 50 * 20


@pytest.mark.parametrize("kw", [dict(text="W" * 300, width=16, height=16, font_size=1000),
                                dict(text="W" * 600, width=512, height=4096),
                                dict(text="W" * 270, width=512, height=512)])
def test_title_bounds_long_unbroken_text(kw):
    import warnings

    from studio_utils.title import ImageTitle

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ImageTitle().generate(ImageTitle.Params(**kw), make_context())
    assert out["image"].size == (kw["width"], kw["height"])


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite"), (1e30, "beyond")])
def test_audio_with_nan_or_huge_samples_is_a_user_error(tmp_path, value, word):
    from studio_audio_io.reading import read_audio

    samples = np.zeros(8000, dtype=np.float32)
    samples[960] = value
    soundfile.write(tmp_path / "bad.wav", samples, 8000, subtype="FLOAT")
    with pytest.raises(UserError, match=rf"bad.wav: holds .*{word}.* at 0.12 s"):
        read_audio(tmp_path / "bad.wav")


def test_output_size_caps_each_side():
    from studio.limits import output_size_problem

    assert "8,192 pixels a side" in output_size_problem(20, 163_840)
    assert output_size_problem(8192, 8192) is None


def test_a_drums_only_midi_is_refused_for_the_builtin_synthesizer(tmp_path, host):
    midi = mido.MidiFile()
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))
    track.append(mido.Message("note_off", channel=9, note=36, velocity=0, time=480))
    midi.save(tmp_path / "drums.mid")
    found = issues(pipeline(tmp_path, {"id": "r", "uses": "audio.render",
                                       "with": {"midi": "drums.mid", "synthesizer": "builtin"}}), host)
    assert len(found) == 1 and "all drums" in found[0][1]


def test_training_data_loaders_open_only_regular_files(tmp_path):
    from studio.limits import data_files, regular_file_problem
    from studio.weights import safetensors_problem
    from studio_imagedata.sources import load_images
    from studio_text.gpt_data import load_documents

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "f.png")
    assert data_files(tmp_path, {".png"}) == [tmp_path / "a.png"]
    assert len(load_images(str(tmp_path), 8, 3).images) == 1
    os.mkfifo(tmp_path / "checkpoint.safetensors")
    assert "not a regular file" in safetensors_problem(tmp_path / "checkpoint.safetensors")
    assert "not a regular file" in regular_file_problem(tmp_path / "checkpoint.safetensors")
    os.mkfifo(tmp_path / "t.txt")
    with pytest.raises(UserError, match="not a regular file"):
        load_documents(str(tmp_path / "t.txt"))
    bomb = tmp_path / "bombs"
    bomb.mkdir()
    Image.new("1", (12000, 12000)).save(bomb / "bomb.png")
    with pytest.raises(UserError, match="bomb.png is too large"):
        load_images(str(bomb), 8, 3)
