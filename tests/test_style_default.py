"""The embedded style.cyclegan default: small, documented, in the reference layout, and
it turns a photograph lighter and whiter, as clip art on white is."""

from pathlib import Path

import numpy as np
from PIL import Image

from studio.testing import make_context

WEIGHTS = Path(__file__).resolve().parent.parent / "plugins" / "studio_style" / "weights" / "cyclegan"


def test_default_is_small_safetensors_with_a_model_card():
    files = [p for p in WEIGHTS.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Command", "## Training", "## Quality", "studio train style.cyclegan"):
        assert section in card


def test_default_restyles_a_photo_towards_white_clip_art(tmp_path):
    from sklearn.datasets import load_sample_image

    from studio.generator import Artifact
    from studio_style.cyclegan import StyleCycleGAN

    path = tmp_path / "china.png"
    Image.fromarray(load_sample_image("china.jpg")).resize((160, 107)).save(path)
    params = StyleCycleGAN.Params(image=Artifact(path=path, media_type="image/png", sha256="", size=0))
    out = np.asarray(StyleCycleGAN().generate(params, make_context())["image"], dtype=float)
    photo = np.asarray(Image.open(path), dtype=float)
    assert out.shape == photo.shape
    assert whiteness(out) > whiteness(photo) + 0.2


def whiteness(pixels):
    """Share of near-white pixels."""
    return float((pixels.min(axis=2) > 230).mean())
