"""image.outpaint: the canvas and mask geometry on each side, each fill, sizes rounded up
to a multiple of 8, both outputs chaining into later steps, and refusals before the run."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

import studio_control
from studio.testing import assert_generator_contract, make_artifact, make_context, run_yaml
from studio_control.outpaint import ImageOutpaint

WIDTH, HEIGHT = 24, 16  # multiples of 8, so margins of 8 need no rounding


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("picture")
    pixels = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "picture.png")
    return make_artifact(folder / "picture.png"), pixels


def outpainted(artifact, seed=0, **fields):
    out = ImageOutpaint().generate(ImageOutpaint.Params(image=artifact, **fields), make_context(seed=seed))
    assert out["image"].mode == "RGB" and out["mask"].mode == "L"
    return np.asarray(out["image"]), np.asarray(out["mask"])


def test_the_generator_keeps_the_contract():
    assert_generator_contract(ImageOutpaint)
    assert set(ImageOutpaint.outputs) == {"image", "mask"}


@pytest.mark.parametrize("side, origin, size", [
    ("left", (0, 8), (WIDTH + 8, HEIGHT)), ("right", (0, 0), (WIDTH + 8, HEIGHT)),
    ("top", (8, 0), (WIDTH, HEIGHT + 8)), ("bottom", (0, 0), (WIDTH, HEIGHT + 8)),
    ("expand", (8, 8), (WIDTH + 16, HEIGHT + 16)),
])
@pytest.mark.parametrize("fill", ["edge", "blur", "noise"])
def test_each_side_and_fill_keeps_the_original_in_place_and_masks_only_the_new(picture, side, origin, size, fill):
    artifact, rgb = picture
    image, mask = outpainted(artifact, fill=fill, mask_overlap=2, **{side: 8})
    (top, left), (width, height) = origin, size
    assert image.shape == (height, width, 3) and mask.shape == (height, width)
    assert np.array_equal(image[top:top + HEIGHT, left:left + WIDTH], rgb)  # pixel for pixel
    new = np.ones((height, width), bool)
    new[top:top + HEIGHT, left:left + WIDTH] = False
    assert (mask[new] == 255).all()
    kept = mask[top:top + HEIGHT, left:left + WIDTH]
    assert set(np.unique(kept)) == {0, 255} and (kept == 255).sum() > 0  # the overlap reaches into the original
    inner = kept[2:-2, 2:-2]
    assert (inner == 0).all()


def test_edge_fill_is_replication_and_blur_and_noise_differ_from_it(picture):
    artifact, rgb = picture
    edge, _ = outpainted(artifact, fill="edge", expand=8)
    assert np.array_equal(edge, cv2.copyMakeBorder(rgb, 8, 8, 8, 8, cv2.BORDER_REPLICATE))
    blurred, _ = outpainted(artifact, fill="blur", expand=8)
    assert not np.array_equal(blurred, edge) and blurred[:8].std() < edge[:8].std()
    noise, _ = outpainted(artifact, seed=1, fill="noise", expand=8)
    assert np.array_equal(noise, outpainted(artifact, seed=1, fill="noise", expand=8)[0])
    assert not np.array_equal(noise, outpainted(artifact, seed=2, fill="noise", expand=8)[0])


def test_sizes_round_up_to_a_multiple_of_8_on_an_extended_side(tmp_path):
    Image.new("RGB", (30, 21), "red").save(tmp_path / "odd.png")
    image, mask = outpainted(make_artifact(tmp_path / "odd.png"), left=5, mask_overlap=0)
    assert image.shape[:2] == (24, 40)  # 30 + 5 -> 40 (all to the left); 21 -> 24 (3 rows at the bottom)
    assert (mask[:, :10] == 255).all() and (mask[21:] == 255).all() and (mask[:21, 10:] == 0).all()


def test_both_outputs_chain_into_later_steps(picture, tmp_path):
    artifact, _ = picture
    result = run_yaml(f"""
        name: chain
        steps:
          - id: extend
            uses: image.outpaint
            with: {{image: "{artifact.path}", right: 8}}
          - id: inverse
            uses: image.preprocess
            with: {{image: "${{steps.extend.outputs.mask}}", preprocessor: invert}}
    """, tmp_path, plugins=[("control", studio_control)])
    assert result.status == "done", [item.error for item in result.failed]
    inverse = np.asarray(Image.open(result.artifacts("inverse")[0].path))
    assert inverse.shape == (HEIGHT, WIDTH + 8) and inverse[:, -8:].max() == 0 and inverse[4, 4] == 255


def test_the_canvas_and_its_mask_feed_image_diffusion_inpainting(picture, tmp_path, studio_main):
    artifact, _ = picture
    (tmp_path / "p.yaml").write_text(f"""name: p
steps:
  - id: extend
    uses: image.outpaint
    with: {{image: "{artifact.path}", left: 8, fill: noise}}
  - id: repaint
    uses: image.diffusion
    with: {{image: "${{steps.extend.outputs.image}}", mask: "${{steps.extend.outputs.mask}}", prompt: red apple}}
""")
    done = studio_main("validate", "p.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def _validate(tmp_path, studio_main, image, fields):
    (tmp_path / "p.yaml").write_text(
        f"name: p\nsteps:\n  - id: extend\n    uses: image.outpaint\n    with:\n      image: {image}\n      {fields}\n")
    done = studio_main("validate", "p.yaml", cwd=tmp_path)
    message = done.stdout + done.stderr
    assert done.returncode == 2 and "p.yaml:" in message and "extend" in message and "Traceback" not in message, message
    return message


@pytest.mark.parametrize("fields, words", [
    ("top: 0", "nothing to extend"),
    ("left: -8", "greater than or equal to 0"),
    ("expand: 600", "would be 2,224 x 2,224 pixels"),
    ("right: 8\n      fill: smear", "fill"),
])
def test_bad_margins_are_refused_before_the_run_located(tmp_path, studio_main, fields, words):
    Image.new("RGB", (1024, 1024), "white").save(tmp_path / "big.png")
    assert words in _validate(tmp_path, studio_main, "big.png", fields)


def test_not_an_image_is_refused(tmp_path, studio_main):
    (tmp_path / "notes.png").write_text("not a picture")
    assert "notes.png" in _validate(tmp_path, studio_main, "notes.png", "right: 8")


def test_the_example_pipeline_repaints_the_margins_and_keeps_the_apple(example_run):
    from pathlib import Path

    result = example_run(Path(__file__).resolve().parent.parent / "pipelines" / "outpaint.yaml")
    assert result.status == "done", [r.error for r in result.failed]
    (apple,) = result.artifacts("apple")
    canvas = result.step("extend")[0].artifacts["image"]
    apple = np.asarray(Image.open(apple.path).convert("RGB"), dtype=np.int16)
    canvas = np.asarray(Image.open(canvas.path).convert("RGB"), dtype=np.int16)
    for item in result.step("repaint"):
        out = np.asarray(Image.open(item.artifacts["image"].path).convert("RGB"), dtype=np.int16)
        assert out.shape == (32, 48, 3)
        # the mask (2 pixels of overlap, blurred by 2) leaves the apple's middle untouched
        assert np.array_equal(out[:, 8 + 8:8 + 24], apple[:, 8:24])
        assert np.abs(out[:, :8] - canvas[:, :8]).max() > 30  # the margins were redrawn


def test_an_upstream_image_too_large_for_its_margins_fails_its_item_with_the_reason(tmp_path):
    import studio_utils

    Image.new("RGB", (8, 8), "white").save(tmp_path / "small.png")
    result = run_yaml(f"""
        name: big
        steps:
          - id: big
            uses: image.resize
            with: {{image: "{tmp_path / 'small.png'}", width: 2048, height: 2048, resample: nearest}}
          - id: extend
            uses: image.outpaint
            with: {{image: "${{steps.big.outputs.image}}", right: 8}}
    """, tmp_path, plugins=[("control", studio_control), ("utils", studio_utils)])
    (failed,) = result.failed
    assert failed.step_id == "extend" and "would be 2,056 x 2,048 pixels" in str(failed.error)
