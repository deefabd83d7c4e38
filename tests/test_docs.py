"""Meta-tests: every hook is documented with its exact signature and has a test."""

import inspect
import re
from pathlib import Path

from studio import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "studio_spec"))


def test_the_hooks_are_the_documented_ones():
    assert HOOKS == ["artifact_saved", "register_artifact_writers", "register_commands",
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
