"""Every validation error, with its whole message pinned: users read these."""

import pytest

from studio.errors import PipelineError
from studio.pipeline.validate import load_spec

FAKES = "fake.caption, fake.fail, fake.image, fake.text, image.grid, image.resize, image.title, text.template"

CASES = {
    "empty": ("", ["F: the pipeline is empty; it needs at least `name:` and `steps:`"]),
    "not_a_mapping": ("- a\n- b\n", ["F:1: a pipeline is a mapping with `name:` and `steps:`, got a list"]),
    "syntax": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.text\n   with: {prompt: hi}\n",
        ["F:5: YAML syntax error: expected <block end>, but found '<block mapping start>' "
         "(while parsing a block collection at line 3)\n         with: {prompt: hi}\n         ^"],
    ),
    "unknown_top_level_key": (
        "name: x\nstepz: []\nsteps:\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n",
        ["F:2: stepz: unknown key 'stepz'. Did you mean 'steps'? Allowed: name, description, seed, device, precision, compile, format, quality, executor, steps"],
    ),
    "unknown_generator": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.txt\n",
        [f"F:4: steps[0].uses (step 'a'): unknown generator 'fake.txt'. Did you mean 'fake.text'? "
         f"Registered: {FAKES} (see `studio plugins list`)."],
    ),
    "unknown_parameter": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.text\n    with: {prompt: hi, uper: true}\n",
        ["F:5: steps[0].with.uper (step 'a'): unknown parameter 'uper' for fake.text. Did you mean 'upper'? "
         "Parameters: seed, prompt, upper (see `studio plugins show fake.text`)"],
    ),
    "wrong_type": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.image\n    with: {size: big}\n",
        ["F:5: steps[0].with.size (step 'a'): got 'big': Input should be a valid integer. Allowed: integer, 1 <= value <= 256"],
    ),
    "out_of_range": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.image\n    with: {size: 500}\n",
        ["F:5: steps[0].with.size (step 'a'): got 500: Input should be less than or equal to 256. "
         "Allowed: integer, 1 <= value <= 256"],
    ),
    "misspelled_reference": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.text\n    with: {prompt: '${steps.wrods.outputs.text}'}\n"
        "  - id: words\n    uses: fake.text\n    with: {prompt: hi}\n",
        ["F:5: steps[0].with.prompt (step 'a'): ${steps.words.outputs.text} refers to step 'wrods', which "
         "does not exist. Did you mean 'words'? Steps: a, words".replace("steps.words", "steps.wrods")],
    ),
    "bad_reference_syntax": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.text\n    with: {prompt: '${steps.b.text}'}\n",
        ["F:5: steps[0].with.prompt (step 'a'): '${steps.b.text}' is not a reference; write "
         "${steps.<step-id>.outputs.<port>} (or $${ for a literal '${')"],
    ),
    "missing_port": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.text\n    with: {prompt: hi}\n"
        "  - id: b\n    uses: fake.text\n    with: {prompt: '${steps.a.outputs.txt}'}\n",
        ["F:8: steps[1].with.prompt (step 'b'): ${steps.a.outputs.txt}: step 'a' (fake.text) has no output "
         "'txt'. Did you mean 'text'? Its outputs: text"],
    ),
    "media_type_mismatch": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.image\n  - id: b\n    uses: fake.text\n"
        "    with: {prompt: '${steps.a.outputs.image}'}\n",
        ["F:7: steps[1].with.prompt (step 'b'): media type mismatch: 'prompt' accepts text/*, but "
         "${steps.a.outputs.image} is image/png"],
    ),
    "cycle": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.text\n    with: {prompt: '${steps.b.outputs.text}'}\n"
        "  - id: b\n    uses: fake.text\n    with: {prompt: '${steps.a.outputs.text}'}\n",
        ["F:3: steps[0] (step 'a'): steps form a cycle: a -> b -> a; a step can only use outputs of steps "
         "that do not need it"],
    ),
    "duplicate_id": (
        "name: x\nsteps:\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n",
        ["F:4: steps[1].id (step 'a'): duplicate step id 'a' (first defined at line 3, steps[0]); ids must be unique"],
    ),
    "unsafe_id": (
        "name: x\nsteps:\n  - {id: ../etc, uses: fake.text, with: {prompt: hi}}\n",
        ["F:3: steps[0].id: step id '../etc' is not allowed: use 1-64 lower-case letters, digits, '_' and '-' "
         "(it names a directory)"],
    ),
    "unequal_zip": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.image\n    zip: {seed: [1, 2], size: [8]}\n",
        ["F:5: steps[0].zip (step 'a'): `zip:` lists must have equal lengths, got seed: 2, size: 1"],
    ),
    "sweep_too_big": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.image\n    sweep: {seed: [%s], size: [%s]}\n"
        % (",".join(map(str, range(100))), ",".join(map(str, range(1, 21)))),
        ["F:5: steps[0].sweep (step 'a'): expands to 2,000 items; the limit is 1,000 per step. "
         "Shorten the sweep lists or split the step"],
    ),
    "missing_required": (
        "name: x\nsteps:\n  - id: a\n    uses: fake.text\n",
        ["F:3: steps[0].with (step 'a'): missing required parameter 'prompt' for fake.text "
         "(string, at most 10000 characters): Text to echo."],
    ),
    "missing_name": (
        "steps:\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n",
        ["F:1: name: missing `name:` (it names the run directory, e.g. name: cover-art)"],
    ),
    "bad_device_and_precision": (
        "name: x\ndevice: gpu\nprecision: fp8\nsteps:\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n",
        ["F:2: device: got 'gpu'; allowed: auto | cpu | cuda | cuda:N",
         "F:3: precision: got 'fp8'; allowed: auto | fp32 | bf16 | fp16"],
    ),
    "duplicate_key": (
        "name: x\nname: y\nsteps:\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n",
        ["F:2: name: duplicate key 'name' (first at line 1)"],
    ),
    "with_not_a_mapping": (
        "name: x\nsteps:\n  - {id: a, uses: fake.text, with: [prompt]}\n",
        ["F:3: steps[0].with (step 'a'): `with:` must be a mapping of parameter: value, got a list (['prompt'])"],
    ),
    "reference_into_a_number": (
        "name: x\nsteps:\n  - {id: a, uses: fake.text, with: {prompt: '8'}}\n"
        "  - {id: b, uses: fake.image, with: {size: '${steps.a.outputs.text}'}}\n",
        ["F:4: steps[1].with.size (step 'b'): 'size' (integer, 1 <= value <= 256) cannot take a reference; "
         "only text and media parameters can"],
    ),
    "python_tag": (
        "name: !!python/object/apply:os.system ['echo hi']\nsteps: []\n",
        ["F:1: YAML tag not allowed: could not determine a constructor for the tag "
         "'tag:yaml.org,2002:python/object/apply:os.system'. Pipelines are plain YAML (mappings, lists, "
         "strings, numbers); remove the '!!' tag"],
    ),
    "sweep_repeats_a_value": (
        "name: x\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 1]}}\n",
        ["F:3: steps[0].sweep.seed (step 'a'): the sweep over 'seed' repeats a value: [1, 1]"],
    ),
    "reference_in_sweep": (
        "name: x\nsteps:\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n"
        "  - {id: b, uses: fake.text, sweep: {prompt: ['${steps.a.outputs.text}']}}\n",
        ["F:4: steps[1].sweep.prompt[0] (step 'b'): references are not allowed in `sweep:`; put the "
         "reference in `with:`"],
    ),
    "collects_every_problem": (
        "name: x\nseed: -1\nsteps:\n  - id: a\n    uses: fake.image\n    with: {size: 0, colour: red}\n"
        "  - id: b\n    uses: fake.nope\n",
        ["F:2: seed: got -1; a seed is an integer from 0 to 9223372036854775807",
         "F:6: steps[0].with.size (step 'a'): got 0: Input should be greater than or equal to 1. "
         "Allowed: integer, 1 <= value <= 256",
         "F:6: steps[0].with.colour (step 'a'): unknown parameter 'colour' for fake.image. "
         "Parameters: seed, size, prompt (see `studio plugins show fake.image`)",
         f"F:8: steps[1].uses (step 'b'): unknown generator 'fake.nope'. Did you mean 'fake.text'? "
         f"Registered: {FAKES} (see `studio plugins list`)."],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_message(case, host, write_yaml):
    text, expected = CASES[case]
    path = write_yaml(text)
    with pytest.raises(PipelineError) as info:
        load_spec(path, host.registry)
    got = [issue.format().replace(str(path), "F") for issue in info.value.issues]
    assert got == expected
    n = len(expected)
    assert str(info.value).startswith(f"pipeline is invalid ({n} problem{'s' if n > 1 else ''}):\n  ")


def test_alias_bomb_is_refused_quickly(host, write_yaml):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = write_yaml("\n".join(levels) + "\n")  # 10**9 values if expanded
    with pytest.raises(PipelineError) as info:
        load_spec(path, host.registry)
    assert info.value.issues[0].message.startswith("YAML expands to more than 100,000 values")


def test_merge_keys_are_plain_yaml(host, write_yaml):
    path = write_yaml("""
        name: merged
        steps:
          - id: a
            uses: fake.image
            with: &base {size: 4}
          - id: b
            uses: fake.image
            with: {<<: *base, prompt: hi}
    """)
    spec = load_spec(path, host.registry)
    assert spec.step("b").with_ == {"size": 4, "prompt": "hi"}


def test_input_file_must_exist_and_match(host, write_yaml, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    path = write_yaml("""
        name: x
        steps:
          - {id: a, uses: fake.caption, with: {image: nope.png}}
          - {id: b, uses: fake.caption, with: {image: notes.txt}}
    """)
    with pytest.raises(PipelineError) as info:
        load_spec(path, host.registry)
    messages = [i.message for i in info.value.issues]
    assert messages[0].startswith("input file 'nope.png' not found (looked in ")
    assert messages[1] == "input file 'notes.txt' is text/plain (by its content); 'image' accepts image/*"


def test_overrides_are_validated_with_their_origin(host, write_yaml):
    path = write_yaml("name: x\nsteps:\n  - {id: a, uses: fake.image}\n")
    with pytest.raises(PipelineError) as info:
        load_spec(path, host.registry, overrides=["a.size=999", "b.size=3"])
    got = [i.format() for i in info.value.issues]
    assert got == [
        "--set b.size=3: no step 'b'. Steps: a",
        "--set a.size=999: steps[0].with.size (step 'a'): got 999: Input should be less than or equal to 256. "
        "Allowed: integer, 1 <= value <= 256",
    ]
    spec = load_spec(path, host.registry, overrides=["a.size=12"])
    assert spec.step("a").with_ == {"size": 12}


def test_overrides_change_the_step_named_not_the_yaml_it_shares(host, write_yaml):
    """`--set` applies to a copy of the parsed pipeline: a `with:` mapping two steps share
    through a YAML alias changes only in the step named, and the file's own values stay."""
    path = write_yaml("name: x\nsteps:\n  - {id: a, uses: fake.image, with: &w {size: 4}}\n"
                      "  - {id: b, uses: fake.image, with: *w}\n")
    spec = load_spec(path, host.registry, overrides=["a.size=8"], seed=3)
    assert spec.step("a").with_ == {"size": 8} and spec.step("b").with_ == {"size": 4}
    assert spec.seed == 3 and spec.data["seed"] == 3  # the manifest records the pipeline as run
    assert spec.data["steps"][0]["with"] == {"size": 8} and spec.data["steps"][1]["with"] == {"size": 4}


def test_the_run_walks_the_plan_validation_built(host, write_yaml, tmp_path, monkeypatch):
    from studio import api

    path = write_yaml("name: x\nsteps:\n  - {id: a, uses: fake.image, sweep: {size: [4, 5]}}\n")
    pipeline = api.load(path, host=host)
    checked = pipeline.plan()
    assert [i.name for i in checked.items] == ["a@size=4", "a@size=5"]

    def built_again(*args, **kwargs):
        raise AssertionError("the plan is built once, by validation")

    monkeypatch.setattr("studio.api.build_plan", built_again)
    assert pipeline.plan() is checked
    assert pipeline.run(out=tmp_path / "runs").status == "done"
