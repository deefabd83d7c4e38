import textwrap
from pathlib import Path

import pytest

from studio.testing import FakeImage, FakePlugin, make_host


@pytest.fixture
def host():
    """The built-in utilities plus the fake generators from studio.testing (the model
    families stay out, so pinned messages do not change as families land)."""
    return make_host([("fake", FakePlugin())], env={"STUDIO_LOAD_PLUGINS": "utils,fake"})


@pytest.fixture
def write_yaml(tmp_path):
    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _reset_fake_calls():
    FakeImage.calls.clear()
    yield
