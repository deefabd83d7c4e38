"""Every example pipeline validates and runs on the embedded defaults."""

from pathlib import Path

import pytest
from PIL import Image

from studio import api
from studio.testing import make_host

PIPELINES = sorted((Path(__file__).resolve().parent.parent / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_example_pipeline_runs(path, tmp_path):
    result = api.run(path, out=tmp_path, host=make_host())
    assert result.status == "done", [r.error for r in result.failed]
    assert result.artifacts()


def test_showcase_turns_the_gpts_lines_into_images_and_a_prompt_x_seed_sheet(tmp_path):
    result = api.run(PIPELINES[0].parent / "showcase.yaml", out=tmp_path, host=make_host())
    lines = [a.path.read_text() for a in result.artifacts("line")]
    drawn = result.step("drawn")
    assert len(drawn) == 6  # 3 lines x 2 seeds
    assert {item.params["prompt"] for item in drawn} == set(lines)  # each line became a prompt
    (sheet,) = result.artifacts("sheet")
    image = Image.open(sheet.path)
    assert image.width > 2 * 96 and image.height > 6 * 96  # 2 seeds across, 6 prompts down
