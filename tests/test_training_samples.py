"""Samples during training: what the model makes at each checkpoint, written under
OUT/training/samples/ with an index.html, without changing what is trained."""

from __future__ import annotations

import numpy as np
from PIL import Image

from studio.testing import make_host
from studio.training import TrainConfig, train


def gan(out, **kwargs):
    trainer = make_host().registry.trainer("image.gan")
    config = TrainConfig(data="sklearn:digits", out=out, steps=4, batch_size=8, device="cpu", checkpoint_every=2,
                         options={"size": 16, "channels": 1}, **kwargs)
    return trainer, config


def test_a_gan_writes_samples_at_each_checkpoint_and_trains_the_same(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    trainer, config = gan(tmp_path / "with")
    train(trainer, config, show_progress=False)
    samples = tmp_path / "with" / "training" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["index.html", "step-0000002", "step-0000004"]
    sheet = Image.open(samples / "step-0000004" / "fixed-noise.png")
    assert sheet.size == (256, 256) and sheet.mode == "L"
    page = (samples / "index.html").read_text()
    assert page.index("step-0000004") < page.index("step-0000002")  # newest first
    assert '<img src="step-0000002/fixed-noise.png"' in page

    monkeypatch.setattr(trainer, "samples", lambda self: {})  # the same training, no samples
    train(*gan(tmp_path / "without"), show_progress=False)
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("with", "without"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # sampling took nothing from training


def test_a_gpt_writes_its_continuation(tmp_path):
    words = "the moon and the sea and the wind over the hills; " * 200
    (tmp_path / "data.txt").write_text(words)
    trainer = make_host().registry.trainer("text.gpt")
    config = TrainConfig(data=str(tmp_path / "data.txt"), out=tmp_path / "gpt", steps=2, batch_size=2, device="cpu",
                         checkpoint_every=1000, options={"block": 32, "width": 32, "layers": 1, "heads": 2,
                                                         "vocab_size": 300})
    train(trainer, config, show_progress=False)
    (text,) = (tmp_path / "gpt" / "training" / "samples" / "step-0000002").glob("*.txt")
    assert len(text.read_text()) > 16
    assert "<pre>" in (tmp_path / "gpt" / "training" / "samples" / "index.html").read_text()


def test_the_diffusion_trainers_write_samples_without_changing_what_is_trained(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from studio_image.diffusion_train import DiffusionTrainer

    def run(out):
        config = TrainConfig(data="sklearn:digits", out=out, steps=2, batch_size=4, device="cpu", checkpoint_every=1,
                             options={"size": 8, "channels": 1})
        train(DiffusionTrainer, config, show_progress=False)
        return load_file(next((out / "unet").glob("*.safetensors")))

    made = run(tmp_path / "with")
    classes = Image.open(tmp_path / "with" / "training" / "samples" / "step-0000001" / "classes.png")
    assert classes.size == (240, 96)  # ten digits of 8 pixels, five across, six times larger
    monkeypatch.setattr(DiffusionTrainer, "samples", lambda self: {})
    plain = run(tmp_path / "without")
    assert all(np.array_equal(made[k].numpy(), plain[k].numpy()) for k in made)
