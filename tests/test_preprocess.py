"""image.preprocess: each preprocessor equals the OpenCV calls it stands for, keeps the
input's size (or the asked resolution), is seeded, and refuses bad input before the run."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

import studio_control
from studio.testing import assert_generator_contract, make_artifact, make_context, run_yaml
from studio_control.filters import PREPROCESSORS
from studio_control.preprocess import ImagePreprocess


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 48 x 40 RGB picture with shapes and a gradient: edges, strokes and colour."""
    folder = tmp_path_factory.mktemp("picture")
    rng = np.random.default_rng(0)
    pixels = np.full((40, 48, 3), 255, np.uint8)
    pixels[:, :, 0] = np.linspace(80, 255, 48, dtype=np.uint8)
    cv2.circle(pixels, (16, 20), 10, (200, 30, 30), -1)
    cv2.line(pixels, (28, 4), (44, 36), (0, 0, 0), 2)
    pixels[30:36, 2:10] = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "picture.png")
    return make_artifact(folder / "picture.png"), pixels


def made(artifact, seed=0, **fields):
    out = ImagePreprocess().generate(ImagePreprocess.Params(image=artifact, **fields), make_context(seed=seed))
    return np.asarray(out["image"])


def test_the_generator_keeps_the_contract():
    assert_generator_contract(ImagePreprocess)


def test_each_preprocessor_is_the_library_call_it_names(picture):
    artifact, rgb = picture
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(made(artifact, preprocessor="canny", low=50, high=150), cv2.Canny(rgb, 50, 150))
    assert np.array_equal(made(artifact, preprocessor="grayscale"), grey)
    assert np.array_equal(made(artifact, preprocessor="invert"), 255 - grey)
    assert np.array_equal(made(artifact, preprocessor="threshold", threshold=100),
                          cv2.threshold(grey, 100, 255, cv2.THRESH_BINARY_INV)[1])
    otsu = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)[1]
    assert np.array_equal(made(artifact, preprocessor="threshold"), otsu)
    small = cv2.resize(rgb, (12, 10), interpolation=cv2.INTER_AREA)
    assert np.array_equal(made(artifact, preprocessor="tile", tile_factor=4),
                          cv2.resize(small, (48, 40), interpolation=cv2.INTER_CUBIC))
    sobel = cv2.magnitude(cv2.Sobel(grey.astype(np.float32), cv2.CV_32F, 1, 0), cv2.Sobel(grey.astype(np.float32), cv2.CV_32F, 0, 1))
    soft = cv2.GaussianBlur(sobel, (0, 0), 2.0)
    assert np.abs(made(artifact, preprocessor="softedge").astype(int) - (soft * 255 / soft.max()).astype(int)).max() <= 1


def test_scribble_is_a1111s_xdog(picture):
    artifact, rgb = picture
    pixels = rgb.astype(np.float32)
    dog = (255 - np.min(cv2.GaussianBlur(pixels, (0, 0), 5.0) - cv2.GaussianBlur(pixels, (0, 0), 0.5), axis=2))
    expected = np.where(2 * (255 - dog.clip(0, 255).astype(np.uint8).astype(int)) > 32, 255, 0)
    out = made(artifact, preprocessor="scribble")
    assert np.array_equal(out, expected) and set(np.unique(out)) == {0, 255}


def test_shuffle_keeps_the_colours_moves_the_layout_and_is_seeded(picture):
    artifact, rgb = picture
    first = made(artifact, seed=1, preprocessor="shuffle", shuffle_size=16)
    assert first.shape == rgb.shape and np.array_equal(first, made(artifact, seed=1, preprocessor="shuffle", shuffle_size=16))
    assert not np.array_equal(first, made(artifact, seed=2, preprocessor="shuffle", shuffle_size=16))
    assert not np.array_equal(first, rgb)
    assert np.abs(first.reshape(-1, 3).mean(axis=0) - rgb.reshape(-1, 3).mean(axis=0)).max() < 60


def test_every_preprocessor_keeps_the_size_or_takes_the_resolution(picture):
    artifact, _ = picture
    for name in PREPROCESSORS:
        assert made(artifact, preprocessor=name).shape[:2] == (40, 48), name
        assert made(artifact, preprocessor=name, resolution=80).shape[:2] == (80, 96), name


def test_transparency_is_paper_white(tmp_path):
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[4:12, 7:9] = (0, 0, 0, 255)  # a black stroke on a transparent sheet
    Image.fromarray(pixels).save(tmp_path / "stroke.png")
    out = made(make_artifact(tmp_path / "stroke.png"), preprocessor="invert")
    assert out[0, 0] == 0 and out[8, 8] == 255


def test_a_sweep_over_preprocessors_in_a_pipeline(picture, tmp_path):
    artifact, _ = picture
    result = run_yaml(f"""
        name: control
        steps:
          - id: control
            uses: image.preprocess
            with: {{image: "{artifact.path}", low: 20}}
            sweep: {{preprocessor: [canny, softedge, shuffle, tile]}}
    """, tmp_path, plugins=[("control", studio_control)])
    assert result.status == "done", [item.error for item in result.failed]
    assert len({a.sha256 for a in result.artifacts("control")}) == 4


@pytest.mark.parametrize("fields, words", [
    ("preprocessor: canny\n      low: 200\n      high: 100", "low (200) is above high (100)"),
    ("preprocessor: canny\n      high: 300", "high"),
    ("preprocessor: scribble\n      threshold: -1", "threshold"),
    ("preprocessor: sobel", "preprocessor"),
    ("resolution: 8192", "resolution"),
])
def test_bad_fields_are_refused_before_the_run_located(picture, tmp_path, studio_main, fields, words):
    artifact, _ = picture
    (tmp_path / "p.yaml").write_text(
        f"name: p\nsteps:\n  - id: control\n    uses: image.preprocess\n    with:\n      image: {artifact.path}\n"
        f"      {fields}\n")
    done = studio_main("validate", "p.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stdout + done.stderr
    assert "p.yaml:" in message and "control" in message and words in message and "Traceback" not in message


def test_not_an_image_and_a_decompression_bomb_are_refused(tmp_path, studio_main):
    (tmp_path / "notes.png").write_text("not a picture")
    bomb = Image.new("1", (9000, 9000))  # 81 megapixels, a few kilobytes as PNG
    bomb.save(tmp_path / "bomb.png")
    for name, words in (("notes.png", "notes.png"), ("bomb.png", "declares 9,000 x 9,000 pixels")):
        (tmp_path / "p.yaml").write_text(
            f"name: p\nsteps:\n  - id: control\n    uses: image.preprocess\n    with:\n      image: {name}\n")
        done = studio_main("validate", "p.yaml", cwd=tmp_path)
        message = done.stdout + done.stderr
        assert done.returncode == 2 and words in message and "p.yaml:" in message and "Traceback" not in message, message
