"""The registry keeps what each plugin registered with its owner, and the executor's unit
of work (run_batch) runs one batch without touching run-wide state."""

from __future__ import annotations

import types

import pytest

from studio import Generator, Params, UserError, Writer, batch_groups, media
from studio.execute.batch import BatchOutOfMemory, run_batch
from studio.execute.records import ItemRun, StepRun
from studio.hookspecs import hookimpl
from studio.host.plugins import PluginWarning
from studio.testing import FakePlugin, FakeText, make_context, make_host
from studio.training import Trainer


def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


class LateTrainer(Trainer):
    generator = "fake.late"


class Late(FakeText):
    name = "fake.late"


def test_a_plugin_failing_in_a_later_hook_loses_its_writers_and_trainers_too():
    """Writers register first, then generators, then trainers: a plugin whose trainer
    hook raises is dropped whole, its writer replaced by the host's again."""

    @hookimpl
    def register_artifact_writers(register):
        register(Writer(media.TEXT, "md", lambda value, path, provenance: path.write_text(value)))

    @hookimpl
    def register_generators(register):
        register(Late)

    @hookimpl
    def register_trainers(register):
        register(LateTrainer)
        raise RuntimeError("second trainer broken")

    plugin = module("late", register_artifact_writers=register_artifact_writers,
                    register_generators=register_generators, register_trainers=register_trainers)
    with pytest.warns(PluginWarning, match="hook register_trainers raised RuntimeError"):
        host = make_host([("late", plugin)], entry_points=False)
    registry = host.registry
    assert not registry.plugins["late"].ok
    assert "fake.late" not in registry.generators
    assert "fake.late" not in registry.trainers
    assert registry.writer(media.TEXT).plugin == "studio" and registry.writer(media.TEXT).extension == "txt"


def test_a_working_plugins_writer_replaces_the_hosts():
    @hookimpl
    def register_artifact_writers(register):
        register(Writer(media.TEXT, "md", lambda value, path, provenance: path.write_text(value)))

    host = make_host([("md", module("md", register_artifact_writers=register_artifact_writers))],
                     entry_points=False)
    assert host.registry.writer(media.TEXT).plugin == "md"
    assert host.registry.writer(media.TEXT).extension == "md"


def test_unknown_names_suggest_the_closest():
    registry = make_host([("fake", FakePlugin())], entry_points=False).registry
    with pytest.raises(UserError, match=r"unknown generator 'fake.txt'\. Did you mean 'fake.text'\?"):
        registry.generator("fake.txt")


def test_batch_groups_keep_first_seen_order():
    assert batch_groups(["a", "b", "a", "c", "b"]) == [[0, 2], [1, 4], [3]]
    assert batch_groups([]) == []


# --- run_batch: the unit of work ---------------------------------------------------------


class Echo(Generator):
    name = "test.echo"
    description = "Echoes its prompt; 'bad' is a user error, 'oom' runs out of memory in a batch."
    outputs = {"text": media.TEXT}
    batchable = True

    class Params(Params):
        prompt: str = "x"

    def generate_batch(self, params, ctxs):
        prompts = [p.prompt for p in params]
        if "oom" in prompts and len(prompts) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if "bad" in prompts:
            raise UserError("prompt 'bad' is not allowed")
        return [{"text": p.upper()} for p in prompts]


def step_run(prompts: list[str]) -> StepRun:
    gen = Echo()
    items = [ItemRun(item=None, params=Echo.Params(prompt=p), ctx=make_context(i), dir=None, cache_key=str(i))
             for i, p in enumerate(prompts)]
    return StepRun("s", gen.name, "test", gen, make_context().runtime, "fp32", items)


def call_generator(step):
    return step.generator.generate_batch([i.params for i in step.items], [i.ctx for i in step.items])


def test_run_batch_returns_outputs_in_memory_in_order():
    results = run_batch(step_run(["a", "b", "c"]), call_generator)
    assert len(results) == 1 and results[0].ok
    assert results[0].outputs == [{"text": "A"}, {"text": "B"}, {"text": "C"}]
    assert results[0].seconds >= 0


def test_a_user_error_in_a_batch_reruns_each_item_alone():
    results = run_batch(step_run(["a", "bad", "c"]), call_generator)
    assert [r.ok for r in results] == [True, False, True]
    assert [r.outputs for r in results if r.ok] == [[{"text": "A"}], [{"text": "C"}]]
    assert isinstance(results[1].error, UserError) and [i.cache_key for i in results[1].items] == ["1"]


def test_out_of_memory_in_a_batch_is_for_the_driver_to_halve():
    with pytest.raises(BatchOutOfMemory) as caught:
        run_batch(step_run(["a", "oom"]), call_generator)
    assert "out of memory" in str(caught.value.__cause__)


def test_a_wrong_number_of_results_fails_the_batch():
    results = run_batch(step_run(["a", "b"]), lambda step: [{"text": "only one"}])
    assert len(results) == 1 and not results[0].ok and "returned 1 results for 2 items" in str(results[0].error)


def test_generate_defaults_to_a_batch_of_one():
    assert Echo().generate(Echo.Params(prompt="hi"), make_context()) == {"text": "HI"}

    class Neither(Generator):
        name = "test.neither"
        outputs = {"text": media.TEXT}

    with pytest.raises(NotImplementedError, match="neither generate nor generate_batch"):
        Neither().generate(Params(), make_context())
