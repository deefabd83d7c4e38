import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import studio.host.plugins
from studio.cli import cli
from studio.testing import FakePlugin, make_host

GOOD = "name: good\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 2]}}\n  - {id: b, uses: fake.text, with: {prompt: hi}}\n"


@pytest.fixture(autouse=True)
def fake_host(monkeypatch):
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("fake", FakePlugin())]))


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    return run


def test_run_writes_outputs_and_prints_the_run(invoke, write_yaml, tmp_path):
    write_yaml(GOOD)
    result = invoke("run", "pipeline.yaml", "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / result.output.strip()
    assert run_dir.parent == tmp_path / "runs" / "good"
    assert (run_dir / "a@seed=1" / "image.png").is_file() and (run_dir / "b" / "text.txt").read_text() == "hi"


def test_run_options_set_seed_out_no_cache(invoke, write_yaml, tmp_path):
    write_yaml(GOOD)
    result = invoke("run", "pipeline.yaml", "-q", "--out", "elsewhere", "--set", "b.prompt=changed",
                    "--set", "b.upper=true", "--seed", "9", "--device", "cpu", "--precision", "fp32", "--no-cache")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / result.output.strip()
    assert run_dir.parent == tmp_path / "elsewhere" / "good"
    assert (run_dir / "b" / "text.txt").read_text() == "CHANGED"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 9 and manifest["resolved_pipeline"]["seed"] == 9
    assert not (tmp_path / "elsewhere" / ".cache").exists()


def test_json_events_are_one_object_per_line(invoke, write_yaml):
    write_yaml(GOOD)
    first = invoke("run", "pipeline.yaml", "--json-events")
    events = [json.loads(line) for line in first.output.splitlines()]
    assert [e["event"] for e in events] == [
        "run_start", "step_start", "item_done", "item_done", "step_done", "step_start", "item_done", "step_done",
        "run_done"]
    second = invoke("run", "pipeline.yaml", "--json-events")
    kinds = [json.loads(line)["event"] for line in second.output.splitlines()]
    assert kinds.count("item_cached") == 3


def test_invalid_pipeline_exits_2_with_no_traceback_and_writes_nothing(invoke, write_yaml, tmp_path):
    write_yaml("name: bad\nsteps:\n  - {id: a, uses: fake.image, with: {size: 0}}\n")
    result = invoke("run", "pipeline.yaml")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output == (
        "Error: pipeline is invalid (1 problem):\n"
        "  pipeline.yaml:3: steps[0].with.size (step 'a'): got 0: Input should be greater than or equal to 1. "
        "Allowed: integer, 1 <= value <= 256\n")
    assert not (tmp_path / "runs").exists()


def test_missing_file_and_bad_set_exit_2(invoke, write_yaml):
    assert invoke("run", "nope.yaml").output == "Error: nope.yaml: no such file. Give the path of a pipeline YAML file.\n"
    write_yaml(GOOD)
    result = invoke("run", "pipeline.yaml", "--set", "oops")
    assert result.exit_code == 2
    assert "expected STEP.PARAM=VALUE, e.g. --set cover.steps=30" in result.output


def test_generator_failure_exits_1_and_keeps_artifacts(invoke, write_yaml, tmp_path):
    write_yaml("name: f\nsteps:\n  - {id: ok, uses: fake.text, with: {prompt: kept}}\n"
               "  - {id: bad, uses: fake.fail, with: {message: no GPU memory}}\n")
    result = invoke("run", "pipeline.yaml", "--quiet")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "1 item(s) failed; finished artifacts are kept in runs/f/" in result.output
    assert "step 'bad', item 'bad': fake.fail (plugin 'fake') raised ValueError: no GPU memory" in result.output
    (run_dir,) = [p for p in (tmp_path / "runs" / "f").iterdir() if p.name != "latest"]
    assert (run_dir / "ok" / "text.txt").read_text() == "kept"


def test_validate_many_files(invoke, write_yaml):
    write_yaml(GOOD, "good.yaml")
    write_yaml("name: x\nsteps: []\n", "bad.yaml")
    result = invoke("validate", "good.yaml", "bad.yaml")
    assert result.exit_code == 2
    assert "good.yaml: ok" in result.output
    assert "bad.yaml: pipeline is invalid (1 problem):\n  bad.yaml:2: steps: `steps:` must be a non-empty list" in result.output


def test_plan_prints_items_in_order(invoke, write_yaml):
    write_yaml("name: p\nseed: 4\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 2], size: [3]}}\n"
               "  - {id: b, uses: fake.text, with: {prompt: '${steps.a.outputs.image}'}}\n")
    assert invoke("plan", "pipeline.yaml").exit_code == 2  # media mismatch caught before planning
    write_yaml("name: p\nseed: 4\nsteps:\n  - {id: w, uses: fake.text, with: {prompt: x}}\n"
               "  - {id: a, uses: fake.image, with: {prompt: '${steps.w.outputs.text}'}, sweep: {seed: [1, 2]}}\n")
    result = invoke("plan", "pipeline.yaml")
    assert result.exit_code == 0
    from studio.pipeline.plan import derive_seed

    assert result.output == (
        "pipeline p: 2 steps, 3 items, run seed 4\n"
        "1. w  fake.text  1 item\n"
        f"     w  [seed {derive_seed(4, 'w', 0)} (derived)]\n"
        "2. a  fake.image  2 items  (after w)\n"
        "     a@seed=1  [seed 1]\n"
        "     a@seed=2  [seed 2]\n")


def test_plugins_show_and_list(invoke):
    shown = invoke("plugins", "show", "image.resize", "--json")
    info = json.loads(shown.output)
    assert info["plugin"] == "utils" and info["outputs"] == {"image": "image/png"}
    width = next(p for p in info["params"] if p["name"] == "width")
    assert width["allowed"] == "integer, 1 <= value <= 8192, or null" and width["default"] is None
    assert width["description"].startswith("Target width in pixels")
    text = invoke("plugins", "show", "image.resize").output
    assert "lanczos" in text and "(required)" in text
    missing = invoke("plugins", "show", "image.resise")
    assert missing.exit_code == 2 and "Did you mean 'image.resize'?" in missing.output
    listing = invoke("plugins", "list")
    assert "fake.image" in listing.output and "utils" in listing.output


def test_runs_show(invoke, write_yaml, tmp_path):
    write_yaml(GOOD)
    run_dir = invoke("run", "pipeline.yaml", "-q").output.strip()
    shown = invoke("runs", "show", run_dir)
    assert shown.exit_code == 0
    assert "a@seed=1" in shown.output and "done" in shown.output
    as_json = json.loads(invoke("runs", "show", run_dir, "--json").output)
    assert as_json["status"] == "done"
    nothing = invoke("runs", "show", tmp_path)
    assert nothing.exit_code == 2 and "no manifest.json here" in nothing.output


@pytest.mark.parametrize("delay", [0.06, 0.1, 0.15, 0.25])
def test_ctrl_c_while_the_command_starts_says_interrupted_without_a_traceback(tmp_path, delay):
    import signal
    import subprocess
    import sys
    import time

    pipeline = Path(__file__).resolve().parent.parent / "pipelines" / "showcase.yaml"
    child = subprocess.Popen([sys.executable, "-m", "studio", "validate", str(pipeline)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=60)
    assert "Traceback" not in output, output
    # 0: it had finished; -SIGINT: it was exiting (the shell shows 130 for both interrupts)
    assert child.returncode in (130, 0, -signal.SIGINT), output
    if child.returncode == 130:
        assert output.strip().endswith("interrupted")


def test_a_ctrl_c_inside_an_import_lock_callback_is_put_off_not_lost():
    # Python prints an exception raised in such a callback as "Exception ignored" with a
    # traceback and drops it: the interrupt is asked for again a moment later instead
    import signal
    import time
    import types

    from studio.execute import interrupts

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGALRM)
    interrupts.install()
    try:
        callback = types.SimpleNamespace(f_code=types.SimpleNamespace(co_name="cb",
                                                                      co_filename="<frozen importlib._bootstrap>"))
        interrupts._on_sigint(signal.SIGINT, callback)  # returns: put off
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            time.sleep(2)
        assert time.monotonic() - began < 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGALRM, before[1])
