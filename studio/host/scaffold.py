"""`studio plugins new NAME`: a ready plugin package to start from.

It writes studio-NAME/ with a pyproject.toml declaring the entry point (group "studio"),
one generator with a media input (`image.NAME`, a seeded glitch effect: something that
works, to be replaced), tests that use `studio.testing` and pass as written, and a
README saying how to install, test and publish it. NAME may have - between words, as pip
names do: `acme-grain` is the package studio-acme-grain, its module studio_acme_grain, its
generator image.acme_grain.
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.errors import UserError

# what `studio plugins new NAME` takes: lower-case words of letters and digits, the first
# starting with a letter, joined by - or _ (pip's names usually have a -, modules a _)
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_PLUGIN_NAME = 40
DISTRIBUTION = "studio-media"  # Studio's own distribution (the name `studio` is another project's)

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "studio-{dash}"
version = "0.1.0"
description = "A Studio plugin: the image.{name} generator"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["{distribution}", "numpy", "pillow"]

[project.optional-dependencies]
test = ["pytest>=8"]

# how Studio finds the plugin: the group "studio", any name, the module with the hooks
[project.entry-points.studio]
{name} = "studio_{name}"

[tool.setuptools]
packages = ["studio_{name}"]
'''

MODULE = '''"""image.{name}: shifts each row of an image sideways by a seeded random amount.

A Studio plugin: one generator and the hook that registers it. Studio finds the plugin
through the entry point in pyproject.toml (group "studio"). Replace the effect with
yours; docs/plugins.md in Studio documents every name imported here.
"""

from __future__ import annotations

from pydantic import Field

from studio import Artifact, Generator, Params, hookimpl, media, media_input


class {cls}(Generator):
    name = "image.{name}"
    description = "Shifts each row of an image sideways by a random amount (seeded): a glitch effect."
    outputs = {{"image": media.IMAGE}}
    version = "1"  # part of the cache key: bump it when the same inputs give other outputs

    class Params(Params):
        image: Artifact = media_input("image/*", description="The image: an upstream image or a file.")
        amount: float = Field(0.1, ge=0.0, le=1.0, description="The largest shift, as a share of the width.")

    def generate(self, params: Params, ctx) -> dict:
        # heavy imports inside generate(): `studio --help` and `studio validate` stay fast
        import numpy as np
        from PIL import Image

        pixels = np.asarray(params.image.open_image().convert("RGB"))
        limit = int(params.amount * pixels.shape[1])
        shifts = ctx.numpy_rng().integers(-limit, limit + 1, size=pixels.shape[0])
        shifted = np.stack([np.roll(row, int(shift), axis=0) for row, shift in zip(pixels, shifts)])
        ctx.progress(1, 1)
        return {{"image": Image.fromarray(shifted)}}


@hookimpl
def register_generators(register):
    register({cls})
'''

TESTS = '''"""Tests of image.{name}, with Studio's pytest helpers (studio.testing)."""

import numpy as np
from PIL import Image

import studio_{name}
from studio.testing import assert_generator_contract, make_artifact, make_context
from studio_{name} import {cls}


def test_the_generator_keeps_the_contract():
    assert_generator_contract({cls})


def test_the_seed_decides_the_shifts_and_amount_zero_keeps_the_image(tmp_path):
    Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)).save(tmp_path / "in.png")
    image = make_artifact(tmp_path / "in.png")

    def made(seed, amount):
        out = {cls}().generate({cls}.Params(image=image, amount=amount), make_context(seed=seed))
        return np.asarray(out["image"])

    assert np.array_equal(made(1, 0.5), made(1, 0.5))
    assert not np.array_equal(made(1, 0.5), made(2, 0.5))
    assert np.array_equal(made(1, 0.0), np.asarray(Image.open(tmp_path / "in.png")))


def test_it_runs_in_a_pipeline_with_a_sweep(studio_run, tmp_path):
    Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)).save(tmp_path / "in.png")
    result = studio_run(f"""
        name: glitches
        steps:
          - id: g
            uses: image.{name}
            with: {{{{image: "{{tmp_path / 'in.png'}}", amount: 0.3}}}}
            sweep: {{{{seed: [1, 2, 3]}}}}
    """, plugins=[("{name}", studio_{name})])
    assert result.status == "done", [item.error for item in result.failed]
    assert len(result.artifacts("g")) == 3
'''

README = '''# studio-{dash}

A [Studio](https://pypi.org/project/{distribution}/) plugin with one generator, `image.{name}`:
it shifts each row of an image sideways by a seeded random amount.

```bash
pip install -e '.[test]'          # Studio finds it through the entry point in pyproject.toml
studio plugins list               # shows {name} and image.{name}
studio plugins show image.{name}  # its parameters
pytest                            # the tests in tests/, with Studio's fixtures (studio.testing)
```

In a pipeline:

```yaml
steps:
  - id: glitch
    uses: image.{name}
    with: {{image: photo.png, amount: 0.2}}
    sweep: {{seed: [1, 2, 3]}}
```

Make it yours: change the generator in `studio_{name}/__init__.py` (Studio's
docs/plugins.md documents the contract), bump `version` in the class when the same
inputs give other outputs (it is part of Studio's cache key), and the version in
pyproject.toml when you publish (`python -m build`, then upload the wheel).
'''


def plugin_names(given: str) -> dict[str, str]:
    """The names a plugin called `given` goes by: "acme-grain" (or "acme_grain", or
    "studio-acme-grain") is the distribution studio-acme-grain, the module
    studio_acme_grain, the entry point and plugin acme_grain, and the generator
    image.acme_grain. A UserError saying what is allowed when `given` cannot be made into
    a module name."""
    from studio.errors import echo

    name = given[len("studio-"):] if given.startswith(("studio-", "studio_")) and len(given) > 7 else given
    if len(name) > MAX_PLUGIN_NAME or not PLUGIN_NAME.fullmatch(name):
        raise UserError(f"plugin name {echo(given, 80)}: use lower-case letters, digits and _ or - between words, "
                        f"starting with a letter, at most {MAX_PLUGIN_NAME} characters (e.g. glitch or acme-grain: "
                        "the package studio-acme-grain, the module studio_acme_grain, the generator image.acme_grain)")
    module_name = name.replace("-", "_")
    return {"name": module_name, "dash": module_name.replace("_", "-"), "module": f"studio_{module_name}",
            "generator": f"image.{module_name}", "cls": "".join(part.capitalize() for part in module_name.split("_"))}


def new_plugin(name: str, where: Path) -> Path:
    """Write the package for plugin `name` in where/studio-<name>/ and return its path
    (`plugin_names` says what each part is called)."""
    names = plugin_names(name)
    name, dash, cls = names["name"], names["dash"], names["cls"]
    root = Path(where) / f"studio-{dash}"
    if root.is_symlink():
        raise UserError(f"{root} is a link; choose another folder (--dir)")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root} exists and is not empty; choose another name or folder (--dir)")
    values = {"name": name, "dash": dash, "cls": cls, "distribution": DISTRIBUTION}
    files = {
        "pyproject.toml": PYPROJECT, f"studio_{name}/__init__.py": MODULE, f"tests/test_{name}.py": TESTS,
        "README.md": README,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return root
