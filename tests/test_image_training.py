"""`studio train` for the image family on a folder of images made here."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from studio.errors import PipelineError, UserError
from studio.testing import make_host, run_yaml
from studio.training import TrainConfig, train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Two classes of 16x16 drawings: circles and squares, at varied sizes and places."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (root / name).mkdir()
        for i in range(12):
            im = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent: composited on white
            r = int(rng.integers(3, 7))
            x, y = (int(v) for v in rng.integers(r, 16 - r, size=2))
            shape = ImageDraw.Draw(im).ellipse if name == "circle" else ImageDraw.Draw(im).rectangle
            shape((x - r, y - r, x + r, y + r), fill=(0, 0, 0, 255))
            im.save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def host():
    return make_host()


def config(shapes, out, **kwargs):
    base = dict(data=str(shapes), out=out, batch_size=8, log_every=5, options={"size": "8"})
    return TrainConfig(**{**base, **kwargs})


def log(out):
    return [json.loads(line) for line in (out / "training" / "log.jsonl").read_text().splitlines()]


def test_diffusion_training_lowers_the_loss_and_its_weights_load(shapes, tmp_path, host):
    out = tmp_path / "diffusion"
    result = train(host.registry.trainer("image.diffusion"), config(shapes, out, steps=40), show_progress=False)
    entries = log(out)
    assert [e["step"] for e in entries] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert entries[-1]["loss"] < 0.6 * entries[0]["loss"]
    assert result.metrics["held_out_noise_mse"] < 1.0
    info = json.loads((out / "studio.json").read_text())
    assert info["classes"] == ["circle", "square"] and info["null_class"] == 2

    text = json.dumps({"name": "mine", "device": "cpu", "steps": [
        {"id": "img", "uses": "image.diffusion", "with": {"model": str(out), "steps": 3, "class_label": "square"}}]})
    ran = run_yaml(text, tmp_path / "run")
    assert ran.status == "done", ran.failed
    image = Image.open(ran.artifacts()[0].path)
    assert image.size == (8, 8) and image.mode == "L"
    with pytest.raises(PipelineError) as refused:  # validate reads the classes from the model's studio.json
        run_yaml(text.replace('"square"', '"triangle"'), tmp_path / "bad")
    assert "steps[0].with.class_label (step 'img'): class_label 'triangle' is not a class of model" in str(refused.value)
    assert "classes: circle, square" in str(refused.value)


class Interrupt(Exception):
    pass


def test_resuming_gives_the_same_weights_as_training_straight(shapes, tmp_path, host, monkeypatch):
    straight = tmp_path / "straight"
    train(host.registry.trainer("image.diffusion"), config(shapes, straight, steps=12), show_progress=False)

    from studio_image.diffusion_train import DiffusionTrainer

    resumed = tmp_path / "resumed"
    original = DiffusionTrainer.train_step

    def dies_at_step_8(self, step):
        if step == 8:
            raise Interrupt
        return original(self, step)

    monkeypatch.setattr(DiffusionTrainer, "train_step", dies_at_step_8)
    with pytest.raises(Interrupt):
        train(host.registry.trainer("image.diffusion"), config(shapes, resumed, steps=12, checkpoint_every=3),
              show_progress=False)
    monkeypatch.setattr(DiffusionTrainer, "train_step", original)
    with pytest.raises(UserError, match="already holds a training run; pass --resume"):
        train(host.registry.trainer("image.diffusion"), config(shapes, resumed, steps=12), show_progress=False)
    train(host.registry.trainer("image.diffusion"), config(shapes, resumed, steps=12, resume=True),
          show_progress=False)

    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)


def test_gan_training_runs_the_adversarial_loop_and_its_weights_load(shapes, tmp_path, host):
    out = tmp_path / "gan"
    result = train(host.registry.trainer("image.gan"), config(shapes, out, steps=60, lr=1e-3), show_progress=False)
    entries = log(out)
    assert entries[0]["d_loss"] > entries[-1]["d_loss"]  # the discriminator learns to tell them apart
    assert set(entries[-1]) >= {"d_loss", "g_loss", "step", "lr"}
    assert 0 < result.metrics["diversity"]

    text = json.dumps({"name": "g", "device": "cpu", "steps": [
        {"id": "one", "uses": "image.gan", "with": {"model": str(out)}, "sweep": {"seed": [1, 2, 3]}},
        {"id": "walk", "uses": "image.gan", "with": {"model": str(out), "seed": 1, "interpolate_to": 3, "frames": 5}},
    ]})
    ran = run_yaml(text, tmp_path / "run")
    assert ran.status == "done", ran.failed
    singles = [np.asarray(Image.open(a.path)) for a in ran.artifacts("one")]
    strip = np.asarray(Image.open(ran.artifacts("walk")[0].path))
    assert strip.shape == (8, 40)
    assert np.abs(strip[:, :8].astype(int) - singles[0].astype(int)).max() <= 1  # starts at seed 1
    assert np.abs(strip[:, 32:].astype(int) - singles[2].astype(int)).max() <= 1  # ends at seed 3


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), "no images found"),
    (lambda p: (p.mkdir(), (p / "x.png").write_text("not a png")), "is not a readable image"),
])
def test_bad_training_data_is_a_clear_error(tmp_path, host, make, message):
    data = tmp_path / "data"
    make(data)
    with pytest.raises(UserError, match=message):
        train(host.registry.trainer("image.diffusion"), TrainConfig(data=str(data), out=tmp_path / "o", steps=1),
              show_progress=False)


def test_unknown_source_and_generator(tmp_path, host):
    with pytest.raises(UserError, match="unknown source. Give a folder of images, or one of: sklearn:digits"):
        train(host.registry.trainer("image.gan"), TrainConfig(data="kaggle:cats", out=tmp_path / "o", steps=1),
              show_progress=False)
    with pytest.raises(UserError, match="no trainer for 'image.difusion'. Did you mean 'image.diffusion'?"):
        host.registry.trainer("image.difusion")  # the lookup `studio train` makes
