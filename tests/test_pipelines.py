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


def test_showcase_makes_an_xy_sheet(tmp_path):
    result = api.run(PIPELINES[0].parent / "showcase.yaml", out=tmp_path, host=make_host())
    (sheet,) = result.artifacts("sheet")
    image = Image.open(sheet.path)
    assert image.width > 2 * 192 and image.height > 3 * 192  # 2 seeds across, 3 subjects down
    assert len(result.step("card")) == 6
