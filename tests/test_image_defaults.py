"""The embedded image defaults: small, documented, loadable offline, deterministic."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.testing import run_yaml

WEIGHTS = Path(__file__).resolve().parent.parent / "plugins" / "studio_image" / "weights"


@pytest.mark.parametrize("name", ["diffusion", "digits", "gan"])
def test_defaults_are_small_safetensors_with_a_model_card(name):
    files = [p for p in (WEIGHTS / name).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 16 * 2**20
    assert any(p.suffix == ".safetensors" for p in files)
    assert not any(p.suffix in (".pt", ".pth", ".bin", ".ckpt") for p in files)
    card = (WEIGHTS / name / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Command", "## Training", "## Quality"):
        assert section in card, section
    assert "studio train image." in card


def test_the_digit_model_draws_the_class_asked_for(tmp_path):
    text = json.dumps({"name": "d", "device": "cpu", "steps": [
        {"id": "d", "uses": "image.diffusion", "with": {"steps": 10, "model": str(WEIGHTS / "digits")},
         "sweep": {"class_label": [0, "7"], "seed": [4]}},
    ]})
    result = run_yaml(text, tmp_path)
    assert result.status == "done", result.failed
    images = [np.asarray(Image.open(a.path)) for a in result.artifacts()]
    assert images[0].shape == (16, 16)
    # ink on paper: a light background with darker strokes
    for image in images:
        assert np.median(image) > 150 and image.min() < 100
    assert not np.array_equal(images[0], images[1])


def test_default_gan_samples_and_walks(tmp_path):
    text = json.dumps({"name": "g", "device": "cpu", "steps": [
        {"id": "g", "uses": "image.gan", "sweep": {"seed": [1, 2]}},
        {"id": "w", "uses": "image.gan", "with": {"seed": 1, "interpolate_to": 2, "frames": 4}},
    ]})
    result = run_yaml(text, tmp_path)
    assert result.status == "done", result.failed
    a, b = [np.asarray(Image.open(x.path)) for x in result.artifacts("g")]
    walk = np.asarray(Image.open(result.artifacts("w")[0].path))
    assert a.shape == (16, 16) and walk.shape == (16, 64)
    assert np.abs(walk[:, :16].astype(int) - a.astype(int)).max() <= 1
    assert np.abs(walk[:, 48:].astype(int) - b.astype(int)).max() <= 1


def test_the_default_draws_what_the_prompt_says(tmp_path):
    """The embedded text-to-image model: emoji on white, and the colour word decides the
    colour of what is drawn."""
    import torch

    from model_cards.image_diffusion import hue_of_ink, nearest_colour

    words = ["red", "blue", "green"]
    text = json.dumps({"name": "t", "device": "cpu", "steps": [
        {"id": "t", "uses": "image.diffusion", "with": {"seed": 1},
         "sweep": {"prompt": [f"{w} heart" for w in words]}}]})
    result = run_yaml(text, tmp_path)
    assert result.status == "done", result.failed
    for word, artifact in zip(words, result.artifacts("t")):
        image = np.asarray(Image.open(artifact.path).convert("RGB"))
        assert image.shape == (32, 32, 3)
        corners = np.concatenate([image[:3, :3], image[:3, -3:], image[-3:, :3], image[-3:, -3:]])
        assert corners.mean() > 200  # drawn on white, as the emoji were
        hue = hue_of_ink(torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
        assert nearest_colour(hue) == word, (word, hue)
