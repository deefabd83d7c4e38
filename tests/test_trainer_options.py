"""Typed trainer options: `studio train GEN --option KEY=VALUE` checked by the trainer's
`Options` before anything loads, listed by `--help`, recorded as JSON."""

import json
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw
from pydantic import ConfigDict, Field

from studio.cli import cli
from studio.errors import UserError
from studio.testing import make_host
from studio.training import Trainer, TrainerOptions
from studio.training.options import describe_options, parse_options

# every built-in trainer's options and their defaults, as the trainers read them before
# the options were typed (`self.config.options.get(key, default)`): the same command
# must keep making the same weights
OLD_DEFAULTS = {
    "image.diffusion": {"size": 16, "channels": 1, "vae_steps": 1000, "vocab_size": 2000, "max_tokens": 32,
                        "text_width": 128, "weights_precision": "fp16", "lora_rank": 0, "base": "default"},
    "image.gan": {"size": 16, "channels": 1, "z_dim": 64},
    "music.transformer": {"layers": 4, "width": 192, "heads": 6},
    "text.gpt": {"block": 256, "vocab_size": 2048, "width": 192, "layers": 4, "heads": 6},
    "style.cyclegan": {"size": 64, "ngf": 16, "ndf": 16, "blocks": 6},
    "audio.vae": {"sample_rate": 16000, "window": 8192, "kl_weight": 1e-4, "linear_magnitude": 1.0,
                  "clip_s": 2.0, "clips": 1200, "channel_multiples": (1, 2, 4, 4),
                  "downsampling_ratios": (4, 4, 4, 4), "encoder_hidden_size": 32, "decoder_channels": 24},
    "eval.metrics": {"label_smoothing": 0.1},  # typed from the start
}


@pytest.fixture(scope="module")
def trainers():
    return make_host().registry.trainers


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Two classes of 16x16 drawings, as tests/test_image_training.py makes them."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (root / name).mkdir()
        for i in range(12):
            im = Image.new("L", (16, 16), 255)
            r = int(rng.integers(3, 7))
            x, y = (int(v) for v in rng.integers(r, 16 - r, size=2))
            shape = ImageDraw.Draw(im).ellipse if name == "circle" else ImageDraw.Draw(im).rectangle
            shape((x - r, y - r, x + r, y + r), fill=0)
            im.save(root / name / f"{i}.png")
    return root


def studio_train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


# --- every trainer declares its options ---------------------------------------------------


def test_every_registered_trainer_has_documented_bounded_options(trainers):
    assert set(trainers) == set(OLD_DEFAULTS)
    for name, trainer in trainers.items():
        options = trainer.Options
        assert issubclass(options, TrainerOptions) and options is not TrainerOptions, name
        assert options.model_config.get("extra") == "forbid" and options.model_config.get("frozen"), name
        assert options.model_fields, name
        for key, field in options.model_fields.items():
            where = f"{name} --option {key}"
            assert field.annotation is not typing.Any, where
            assert not field.is_required(), f"{where}: no default"
            assert field.description and len(field.description) > 10, f"{where}: no description"
        for doc in describe_options(options):  # a bound for every field, as --help shows it
            assert "," in doc.allowed or "(each" in doc.allowed, f"{name} --option {doc.name}: no bounds"


@pytest.mark.parametrize("generator", sorted(OLD_DEFAULTS))
def test_the_defaults_are_the_ones_trainers_used_before(trainers, generator):
    assert trainers[generator].Options().model_dump() == OLD_DEFAULTS[generator]


def test_text_values_are_converted_like_typed_ones(trainers):
    vae = trainers["audio.vae"]
    given = parse_options(vae, {"sample_rate": "8000", "window": "2048", "kl_weight": "1e-3",
                                "channel_multiples": "1, 2", "downsampling_ratios": "2,4"})
    typed = parse_options(vae, {"sample_rate": 8000, "window": 2048, "kl_weight": 0.001,
                                "channel_multiples": [1, 2], "downsampling_ratios": (2, 4)})
    assert given == typed
    assert given.channel_multiples == (1, 2) and isinstance(given.kl_weight, float)
    assert given.model_fields_set == {"sample_rate", "window", "kl_weight", "channel_multiples",
                                      "downsampling_ratios"}


@pytest.mark.parametrize("generator,given,message", [
    ("image.diffusion", {"sise": "32"}, "--option 'sise': the image.diffusion trainer has no such option. "
                                        "Did you mean 'size'? Its options: size, channels"),
    ("image.diffusion", {"size": "abc"}, "--option size='abc' for the image.diffusion trainer: Input should be a "
                                         "valid integer"),
    ("image.diffusion", {"size": "10"}, "Input should be a multiple of 4. Allowed: integer, 4 to 1024, "
                                        "a multiple of 4; default: 16"),
    ("image.gan", {"channels": "2"}, "--option channels='2' for the image.gan trainer: should be one of 1, 3"),
    ("image.gan", {"size": "12"}, "should be one of 8, 16, 32, 64, 128, 256, 512, 1024"),
    ("text.gpt", {"width": "100"}, "options of the text.gpt trainer: width 100 is not a multiple of heads 6"),
    ("music.transformer", {"layers": "0"}, "--option layers='0' for the music.transformer trainer: Input should "
                                           "be greater than or equal to 1"),
    ("audio.vae", {"channel_multiples": "1,x,4,4"}, "--option channel_multiples='1,x,4,4' for the audio.vae "
                                                    "trainer: entry 2: Input should be a valid integer"),
    ("audio.vae", {"channel_multiples": "1,2"}, "channel_multiples has 2 entries and downsampling_ratios 4"),
    ("audio.vae", {"window": "3000"}, "window 3000 is not a multiple of 256"),
    ("audio.vae", {"kl_weight": "nan"}, "--option kl_weight='nan' for the audio.vae trainer: Input should be a "
                                        "finite number"),
    ("style.cyclegan", {"blocks": "1e3"}, "Allowed: integer, 1 to 32; default: 6"),
])
def test_a_bad_option_is_a_user_error_that_says_what_is_allowed(trainers, generator, given, message):
    with pytest.raises(UserError) as refused:
        parse_options(trainers[generator], given)
    assert message in str(refused.value)


def test_a_trainer_without_options_takes_none():
    class Plain(Trainer):
        generator = "plain.thing"

    assert Plain.Options is TrainerOptions
    with pytest.raises(UserError, match="the plain.thing trainer takes no --option"):
        parse_options(Plain, {"size": "8"})


def test_options_that_are_not_trainer_options_are_refused_when_the_plugin_loads():
    with pytest.raises(TypeError, match="Options must be a subclass of studio.training.TrainerOptions"):
        class NotPydantic(Trainer):
            class Options:
                size = 8

    with pytest.raises(TypeError, match="must keep extra='forbid'"):
        class Lenient(Trainer):
            class Options(TrainerOptions):
                model_config = ConfigDict(extra="allow")
                size: int = Field(8, ge=1, description="a size")


def test_options_are_checked_before_torch_loads_or_out_is_made(tmp_path):
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from studio.errors import UserError\n"
            "from studio.training import TrainConfig, train\n"
            "from studio_image.gan_train import GANTrainer\n"
            "try:\n"
            "    train(GANTrainer, TrainConfig(data='sklearn:digits', out=Path(sys.argv[1]), options={'sise': '8'}))\n"
            "except UserError as exc:\n"
            "    print('refused:', exc)\n"
            "print('torch loaded:', 'torch' in sys.modules)\n")
    out = tmp_path / "weights"
    ran = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "refused: --option 'sise'" in ran.stdout and "Did you mean 'size'?" in ran.stdout
    assert ran.stdout.strip().endswith("torch loaded: False")
    assert not out.exists()


# --- the command line ------------------------------------------------------------------------


def test_a_misspelt_option_exits_2_with_a_did_you_mean(tmp_path):
    result = studio_train("image.diffusion", "--data", tmp_path, "--out", tmp_path / "w", "--option", "sise=32")
    assert result.exit_code == 2, result.output
    assert "Error: --option 'sise': the image.diffusion trainer has no such option. Did you mean 'size'? " \
           "Its options: size, channels" in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert not (tmp_path / "w").exists()


def test_a_bad_value_exits_2_naming_the_option(tmp_path):
    result = studio_train("image.gan", "--data", tmp_path, "--out", tmp_path / "w", "--option", "size=abc")
    assert result.exit_code == 2, result.output
    assert "Error: --option size='abc' for the image.gan trainer: Input should be a valid integer" in result.output
    assert "Allowed: integer, one of 8, 16, 32, 64, 128, 256, 512, 1024; default: 16" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "w").exists()


def test_an_option_without_a_value_exits_2(tmp_path):
    result = studio_train("image.gan", "--data", tmp_path, "--out", tmp_path / "w", "--option", "size")
    assert result.exit_code == 2, result.output
    assert "--option 'size': expected KEY=VALUE" in result.output


def test_a_trainers_help_lists_its_options_and_defaults():
    for args in (["image.gan", "--help"], ["--help", "image.gan"], ["image.gan", "-h"]):
        result = studio_train(*args)
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())  # click wraps the lines
        assert "Options of the image.gan trainer (--option KEY=VALUE, repeatable)" in text
        assert "Its defaults: --steps 3000, --batch-size 64, --lr 0.0002." in text
        assert "z_dim Size of the random vector each image is made from. [integer, 1 to 4096; default: 64]" in text
        assert "size Side of the square images" in text and "default: 16]" in text
    vae = " ".join(studio_train("audio.vae", "--help").output.split())
    assert "integers (each 1 to 64), 1 to 8 entries; default: 1,2,4,4]" in vae  # (click may break "comma-separated")
    assert "A list is written comma separated" in vae


def test_help_without_a_generator_names_the_trainable_ones():
    result = studio_train("--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "train [OPTIONS] GENERATOR" in text
    assert "`studio train GENERATOR --help` lists them. Trainable generators: audio.vae, eval.metrics, " \
           "image.diffusion, image.gan, music.transformer, style.cyclegan, text.gpt" in text
    misspelt = studio_train("image.gann", "--help")
    assert misspelt.exit_code == 0 and "no trainer for 'image.gann'. Did you mean 'image.gan'?" in misspelt.output


def test_help_of_a_trainer_without_options(monkeypatch):
    import studio.host.plugins
    from studio import hookimpl

    class Plain(Trainer):
        generator = "fake.text"
        description = "Nothing to set."

    class Plugin:
        @hookimpl
        def register_trainers(self, register):
            register(Plain)

    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("plain", Plugin())], entry_points=False))
    result = studio_train("fake.text", "--help")
    assert result.exit_code == 0, result.output
    assert "Nothing to set. Its defaults: --steps 1000, --batch-size 32, --lr 0.001." in " ".join(result.output.split())
    assert "It takes no --option." in result.output


# --- summary.json and the weights ------------------------------------------------------------


def test_summary_json_holds_json_values_and_the_options(shapes, tmp_path):
    out = tmp_path / "gan"
    result = studio_train("image.gan", "--data", shapes, "--out", out, "--steps", 2, "--batch-size", 8,
                          "--device", "cpu", "-q", "--option", "size=8", "--option", "z_dim=16")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["options"] == {"size": 8, "channels": 1, "z_dim": 16}
    assert (summary["steps"], summary["batch_size"], summary["lr"]) == (2, 8, 0.0002)
    config = summary["config"]
    assert config["options"] == {"size": 8, "z_dim": 16}  # what was given, converted
    assert (config["steps"], config["batch_size"], config["lr"]) == (2, 8, None)
    assert config["resume"] is False and config["seed"] == 0 and config["checkpoint_every"] == 250
    assert config["out"] == str(out) and config["data"] == str(shapes)
    assert json.loads((out / "config.json").read_text())["image_size"] == 8


def test_defaults_given_as_text_make_the_same_weights_as_no_options(shapes, tmp_path):
    common = ["--data", shapes, "--steps", 2, "--batch-size", 8, "--device", "cpu", "-q"]
    assert studio_train("image.gan", "--out", tmp_path / "a", *common).exit_code == 0
    spelled = ["--option", "size=16", "--option", "channels=1", "--option", "z_dim=64"]
    assert studio_train("image.gan", "--out", tmp_path / "b", *common, *spelled).exit_code == 0
    a, b = ((tmp_path / d / "model.safetensors").read_bytes() for d in "ab")
    assert a == b


@pytest.mark.parametrize("where, expect", [
    ("/", "a system directory"),
    ("/usr/local", "a system directory"),
    ("file", "is a file, not a folder"),
    ("someone-elses", "already holds files (config.json, notes.txt) and no training run"),
])
def test_train_never_writes_into_a_system_directory_a_file_or_a_folder_of_other_files(tmp_path, where, expect):
    from click.testing import CliRunner

    from studio.cli import cli

    (tmp_path / "file").write_text("mine")
    (tmp_path / "someone-elses").mkdir()
    (tmp_path / "someone-elses" / "config.json").write_text('{"mine": true}')
    (tmp_path / "someone-elses" / "notes.txt").write_text("mine")
    out = where if where.startswith("/") else str(tmp_path / where)
    before = sorted(str(p) for p in Path("/").iterdir())
    result = CliRunner().invoke(cli, ["train", "image.gan", "--data", "sklearn:digits", "--out", out, "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert expect in result.output and "Traceback" not in result.output
    assert sorted(str(p) for p in Path("/").iterdir()) == before  # nothing new in /
    assert (tmp_path / "file").read_text() == "mine"
    assert (tmp_path / "someone-elses" / "config.json").read_text() == '{"mine": true}'
