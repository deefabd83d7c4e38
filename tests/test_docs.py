"""Meta-tests: every hook is documented with its exact signature and has a test."""

import inspect
import re
from pathlib import Path

from studio import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "studio_spec"))


def test_the_hooks_are_the_documented_ones():
    assert HOOKS == ["artifact_saved", "identify_model", "register_artifact_writers", "register_commands",
                     "register_generators", "register_trainers", "run_step"]


def test_every_hook_is_documented_with_its_exact_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    documented = dict(re.findall(r"^### `(\w+)(\(.*\).*)`$", doc, re.M))
    assert sorted(documented) == HOOKS
    for name in HOOKS:
        signature = str(inspect.signature(getattr(hookspecs, name))).replace("'", "")
        assert documented[name] == signature, name


def test_every_hook_has_a_test():
    tests = (ROOT / "tests" / "test_hooks.py").read_text()
    for name in HOOKS:
        assert f"def test_hook_{name}(" in tests, name


def documented_files(page: str) -> dict[str, str]:
    """The code blocks of a page that begin with a comment naming their file
    (`# studio_posterize/__init__.py`), by that name."""
    blocks = re.findall(r"^```(?:python|toml|yaml)\n# ([\w./-]+\.(?:py|toml|yaml))\n(.*?)^```$", page, re.M | re.S)
    return {name: body for name, body in blocks}


def test_the_plugin_tutorials_files_work_as_written(tmp_path):
    """docs/plugins.md's tutorial plugin and its tests, written out as a reader would,
    pass their own tests; the model example runs through the host's model cache."""
    import os
    import subprocess
    import sys

    files = documented_files((ROOT / "docs" / "plugins.md").read_text())
    assert {"studio_posterize/__init__.py", "tests/test_posterize.py", "studio_emboss/__init__.py",
            "posters.yaml"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "5 passed" in done.stdout


def test_the_tutorials_pipeline_validates_with_its_plugin(tmp_path, monkeypatch):
    """posters.yaml, as the tutorial runs it: image.diffusion's default, then posterize."""
    import importlib
    import sys

    import numpy as np
    from PIL import Image

    from studio import api
    from studio.testing import make_artifact, make_context, make_host

    files = documented_files((ROOT / "docs" / "plugins.md").read_text())
    for name in ("studio_posterize/__init__.py", "studio_emboss/__init__.py", "posters.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(files[name])
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("studio_posterize", "studio_emboss"):
        sys.modules.pop(module, None)
    posterize, emboss = (importlib.import_module(m) for m in ("studio_posterize", "studio_emboss"))
    host = make_host([("posterize", posterize), ("emboss", emboss)])
    plan = api.plan(tmp_path / "posters.yaml", host=host)  # every rule checked, nothing run
    assert [(step.id, len(step.items)) for step in plan.steps] == [("draw", 1), ("poster", 3)]

    flat = np.full((8, 8, 3), 100, np.uint8)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    Emboss = emboss.Emboss
    made = Emboss().generate(Emboss.Params(image=make_artifact(tmp_path / "flat.png")), make_context())["image"]
    assert np.array_equal(np.asarray(made), flat)  # the kernel sums to 1: a flat image has no relief

