"""Every example pipeline validates and runs on the embedded defaults."""

from pathlib import Path

import pytest
from PIL import Image

from studio import api
from studio.testing import make_host

PIPELINES = sorted((Path(__file__).resolve().parent.parent / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_example_pipeline_runs(path, example_run):
    result = example_run(path)
    assert result.status == "done", [r.error for r in result.failed]
    assert result.artifacts()


def test_showcase_turns_the_gpts_lines_into_images_and_a_prompt_x_seed_sheet(example_run):
    result = example_run(PIPELINES[0].parent / "showcase.yaml")
    lines = [a.path.read_text() for a in result.artifacts("line")]
    drawn = result.step("drawn")
    assert len(drawn) == 6  # 3 lines x 2 seeds
    assert {item.params["prompt"] for item in drawn} == set(lines)  # each line became a prompt
    (sheet,) = result.artifacts("sheet")
    image = Image.open(sheet.path)
    assert image.width > 2 * 96 and image.height > 6 * 96  # 2 seeds across, 6 prompts down


def test_the_inpainting_example_repaints_only_the_top_half(example_run):
    import numpy as np

    result = example_run(PIPELINES[0].parent / "inpaint.yaml")
    assert result.status == "done", [r.error for r in result.failed]
    (apple,) = result.artifacts("apple")
    kept = np.asarray(Image.open(apple.path).convert("RGB"), dtype=np.int16)
    repainted = [np.asarray(Image.open(i.artifacts["image"].path).convert("RGB"), dtype=np.int16)
                 for i in result.step("repaint")]
    assert len(repainted) == 6
    for image in repainted:
        # the mask's lower half is black (mask_blur 1 reaches about 3 rows past its edge)
        assert np.array_equal(image[20:], kept[20:])
        assert np.abs(image[:14] - kept[:14]).mean() > 5


def test_the_lora_example_starts_from_the_base_model_and_moves_away_with_the_scale(tmp_path, example_run):
    import numpy as np

    result = example_run(PIPELINES[0].parent / "lora-sweep.yaml")
    assert result.status == "done", [r.error for r in result.failed]
    items = {(i.labels["lora_scale"], i.labels["prompt"]): i for i in result.step("outline")}
    plain = api.run(_single_step(tmp_path), out=tmp_path / "plain", host=make_host())
    base = np.asarray(Image.open(plain.artifacts("img")[0].path), dtype=np.int16)
    assert np.array_equal(np.asarray(Image.open(items[0, "red heart"].artifacts["image"].path), dtype=np.int16), base)
    distances = [np.abs(np.asarray(Image.open(items[s, "red heart"].artifacts["image"].path), dtype=np.int16)
                        - base).mean() for s in (0.5, 0.75, 1)]
    assert 0 < distances[0] < distances[2]


def _single_step(tmp_path):
    """The lora-sweep example's red heart at seed 3, without the LoRA."""
    path = tmp_path / "plain.yaml"
    path.write_text('name: plain\nsteps:\n  - {id: img, uses: image.diffusion, with: {prompt: "red heart", steps: 25, '
                    'seed: 3}}\n')
    return path
