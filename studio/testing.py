"""Helpers and pytest fixtures for testing generators and plugins.

Installed as a pytest plugin (entry point `pytest11`), so a plugin author's tests get:

    def test_my_generator(studio_context, tmp_path):
        out = MyGenerator().generate(MyGenerator.Params(prompt="x"), studio_context(seed=1))

    def test_in_a_pipeline(studio_run):
        result = studio_run('''
            name: t
            steps:
              - {id: a, uses: my.generator, with: {prompt: hi}}
        ''', plugins=[("mine", my_plugin_module)])
        assert result.status == "done"

    def test_contract():
        assert_generator_contract(MyGenerator)

Nothing heavy is imported here: the plugin loads in every pytest session.
"""

from __future__ import annotations

import textwrap
import typing
from pathlib import Path
from typing import Any, Iterable

import pytest
from pydantic import Field

from studio import media
from studio.generator import Generator, Params, StepContext, media_input
from studio.generator import Artifact
from studio.hookspecs import hookimpl


# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["ClusterFakes", "FakeCaption", "FakeCrashOnce", "FakeFail", "FakeImage", "FakePlugin", "FakeSleep",
           "FakeText", "assert_generator_contract",
           "make_artifact", "make_context", "make_host", "run_yaml"]


# --- fake generators -----------------------------------------------------------------


class FakeImage(Generator):
    """A solid-colour image whose colour comes from the seed. Batchable; counts calls."""

    name = "fake.image"
    description = "Solid colour from the seed (for tests)."
    outputs = {"image": media.IMAGE}
    batchable = True
    max_batch_size = 4
    calls: list[int] = []  # batch sizes of each call, across instances

    class Params(Params):
        size: int = Field(8, ge=1, le=256, description="Width and height in pixels.")
        prompt: str = Field("", max_length=1000, description="Ignored; here to take text references.")

    def generate_batch(self, params, ctxs):
        FakeImage.calls.append(len(params))
        return [self._one(p, c) for p, c in zip(params, ctxs)]

    def generate(self, params, ctx):
        FakeImage.calls.append(1)
        return self._one(params, ctx)

    def _one(self, params, ctx):
        from PIL import Image

        seed = ctx.seed
        return {"image": Image.new("RGB", (params.size, params.size), (seed % 256, (seed >> 8) % 256, 7))}


class FakeText(Generator):
    """Echoes its prompt, optionally shouting."""

    name = "fake.text"
    description = "Echo the prompt (for tests)."
    outputs = {"text": media.TEXT}

    class Params(Params):
        prompt: str = Field(..., max_length=10_000, description="Text to echo.")
        upper: bool = Field(False, description="Upper-case it.")

    def generate(self, params, ctx):
        return {"text": params.prompt.upper() if params.upper else params.prompt}


class FakeFail(Generator):
    """Raises, to test failure handling."""

    name = "fake.fail"
    description = "Always raises (for tests)."
    outputs = {"text": media.TEXT}

    class Params(Params):
        message: str = Field("boom", max_length=200, description="The error message.")

    def generate(self, params, ctx):
        raise ValueError(params.message)


class FakeCaption(Generator):
    """Takes an image and writes its size: a media input for tests."""

    name = "fake.caption"
    description = "Describe an image (for tests)."
    outputs = {"text": media.TEXT}

    class Params(Params):
        image: Artifact = media_input("image/*", description="The image.")

    def generate(self, params, ctx):
        image = params.image.open_image()
        return {"text": f"{image.width}x{image.height} {params.image.labels}"}


class FakeSleep(Generator):
    """Takes a fixed time per item and counts its model loads: for measuring how a
    cluster schedules work, independent of any model's speed."""

    name = "fake.sleep"
    description = "Sleep a fixed time per item, then write the item's seed (for tests and benchmarks)."
    outputs = {"text": media.TEXT}
    batchable = True
    max_batch_size = 8

    class Params(Params):
        seconds: float = Field(0.1, ge=0.0, le=60.0, description="Time each item takes.")
        busy: bool = Field(False, description="Spin the CPU instead of sleeping (CPU-bound work).")

    def load(self, params, ctx):
        import os
        import time

        # one load per worker process (the model cache keeps it), stamped with its moment
        return {"pid": os.getpid(), "at": time.time()}

    def generate_batch(self, params, ctxs):
        import time

        loaded = ctxs[0].model(self, params[0])
        out = []
        for p, c in zip(params, ctxs):
            end = time.perf_counter() + p.seconds
            if p.busy:
                while time.perf_counter() < end:
                    pass
            else:
                time.sleep(p.seconds)
            c.record(loaded_in=loaded["pid"], loaded_at=loaded["at"])
            out.append({"text": str(c.seed)})
        return out


class FakeCrashOnce(Generator):
    """Kills the process it runs in the first time (when `marker` does not exist yet,
    it is created), then works: a worker dying mid-batch, for cluster tests."""

    name = "fake.crash_once"
    description = "Kill the worker process once, then echo the seed (for tests)."
    outputs = {"text": media.TEXT}

    class Params(Params):
        marker: str = Field(..., max_length=1000, description="A file path; absent means crash.")

    def generate(self, params, ctx):
        import os

        if not os.path.exists(params.marker):
            open(params.marker, "w").close()
            os._exit(1)  # a hard death: no exception, no cleanup
        return {"text": str(ctx.seed)}


class ClusterFakes:
    """Registers FakeSleep and FakeCrashOnce."""

    @hookimpl
    def register_generators(self, register):
        register(FakeSleep)
        register(FakeCrashOnce)


class FakePlugin:
    """A plugin object registering the fake generators."""

    generators = (FakeImage, FakeText, FakeFail, FakeCaption)

    @hookimpl
    def register_generators(self, register):
        for generator in self.generators:
            register(generator)


# --- host, context and runs -----------------------------------------------------------


def make_host(plugins: Iterable[tuple[str, Any]] = (), *, entry_points: bool = True, env: dict | None = None):
    """A plugin host with the installed plugins (unless entry_points=False) plus these
    (name, plugin) pairs, registered as if they came from entry points."""
    from studio.host.plugins import Host

    return Host.load(entry_points_group="studio" if entry_points else None, extra=plugins,
                     env=env if env is not None else {})


def make_context(seed: int = 0, *, device: str = "cpu", precision: str = "fp32", step_id: str = "test") -> StepContext:
    """A StepContext on a CPU runtime, to call `generate()` directly."""
    from studio.execute.runtime import Runtime

    return StepContext(step_id=step_id, item_name=step_id, seed=seed,
                       runtime=Runtime(device, precision), precision=precision)


def make_artifact(path: str | Path) -> Artifact:
    """A file as a generator's media input receives it (media type read from its
    content, sha256, size), to call `generate()` directly on a real image, WAV or MIDI:

        image = make_artifact(tmp_path / "in.png")
        out = MyFilter().generate(MyFilter.Params(image=image), make_context(seed=1))
    """
    from studio.execute.artifacts import sha256_file
    from studio.sniff import sniff

    path = Path(path).absolute()
    found = sniff(path, full=True)
    if not found.ok:
        raise ValueError(f"{path}: {found.problem or 'not a file type Studio reads'}")
    return Artifact(path=path, media_type=found.media_type, sha256=sha256_file(path), size=path.stat().st_size)


def run_yaml(text: str, tmp_path: Path, *, plugins=(), use_cache: bool = True, events=None, **kwargs):
    """Write `text` as tmp_path/pipeline.yaml and run it with the fake generators and any
    `plugins` added; outputs go under tmp_path/runs."""
    from studio import api

    path = tmp_path / "pipeline.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    host = make_host([("fake", FakePlugin()), *plugins])
    return api.run(path, out=tmp_path / "runs", host=host, use_cache=use_cache, events=events, **kwargs)


@pytest.fixture
def studio_context():
    """Factory: studio_context(seed=1) -> StepContext on CPU/fp32."""
    return make_context


@pytest.fixture
def studio_run(tmp_path):
    """Factory: studio_run(yaml_text, plugins=[(name, plugin)]) -> RunResult."""

    def run(text: str, **kwargs):
        return run_yaml(text, tmp_path, **kwargs)

    return run


# --- contract ------------------------------------------------------------------------


def assert_generator_contract(gen_cls: type[Generator]) -> None:
    """What every generator owes its users: a name, a description, ports, and
    parameters that each have a description, a default or are required, and bounds."""
    from studio import params as P
    from studio.host.registry import check_generator_class

    check_generator_class(gen_cls)
    assert gen_cls.description, f"{gen_cls.name}: no description"
    for key, field in gen_cls.Params.model_fields.items():
        where = f"{gen_cls.name}.{key}"
        assert field.description, f"{where}: no description"
        ann = P._strip_optional(field.annotation)
        b = P.bounds(field)
        if ann in (int, float):
            assert ("ge" in b or "gt" in b) and ("le" in b or "lt" in b), f"{where}: numbers need both bounds"
        elif ann is str:
            assert "max_length" in b or "pattern" in b, f"{where}: strings need max_length"
        elif typing.get_origin(ann) in (list, dict):
            assert "max_length" in b, f"{where}: lists and mappings need max_length"
    for port in gen_cls.outputs:
        assert port.isidentifier() and port.islower(), f"{gen_cls.name}: port {port!r} must be lower_case"
