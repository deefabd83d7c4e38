"""The embedded image defaults: small, documented, loadable offline, deterministic."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.testing import run_yaml

WEIGHTS = Path(__file__).resolve().parent.parent / "plugins" / "studio_image" / "weights"


@pytest.mark.parametrize("name", ["diffusion", "gan"])
def test_defaults_are_small_safetensors_with_a_model_card(name):
    files = [p for p in (WEIGHTS / name).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    assert any(p.suffix == ".safetensors" for p in files)
    assert not any(p.suffix in (".pt", ".pth", ".bin", ".ckpt") for p in files)
    card = (WEIGHTS / name / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Command", "## Training", "## Quality"):
        assert section in card, section
    assert "studio train image." in card


def test_default_diffusion_draws_the_class_asked_for(tmp_path):
    text = json.dumps({"name": "d", "device": "cpu", "steps": [
        {"id": "d", "uses": "image.diffusion", "with": {"steps": 10}, "sweep": {"class_label": [0, "7"], "seed": [4]}},
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
