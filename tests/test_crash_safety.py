"""The run directory tells the truth after `kill -9` at any moment, and failures are
reported in words with the right exit code, never as a traceback.

The kill tests run the real `studio` command in a subprocess on the built-in
image.title (no torch), kill it with SIGKILL at fixed points, and check what
`studio runs show` reports against the files on disk; then the pipeline runs again
and reuses every item that had finished."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import studio.host.plugins
from studio.cli import cli
from studio.errors import UserError
from studio.execute import manifest as M
from studio.execute.artifacts import sha256_file
from studio.generator import Generator
from studio.hookspecs import hookimpl
from studio.testing import FakeImage, FakePlugin, make_host, run_yaml

ITEMS = 36
CARDS = f"""\
name: cards
steps:
  - id: card
    uses: image.title
    with: {{text: "kill me softly", width: 1024, height: 1024}}
    sweep: {{seed: {list(range(1, ITEMS + 1))}}}
"""
ENV = {**os.environ, "STUDIO_LOAD_PLUGINS": "utils", "PYTHONUNBUFFERED": "1"}


def studio_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=60)


def start_run(cwd: Path, *extra: str, python: str | None = None) -> subprocess.Popen:
    (cwd / "cards.yaml").write_text(CARDS)
    command = ["-m", "studio"] if python is None else [python]
    return subprocess.Popen([sys.executable, *command, "run", "cards.yaml", "-q", *extra], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_dirs(cwd: Path) -> list[Path]:
    parent = cwd / "runs" / "cards"
    return sorted(p for p in parent.iterdir() if not p.name.startswith(".") and p.name != "latest") \
        if parent.is_dir() else []


def journal_lines(cwd: Path) -> int:
    for run_dir in run_dirs(cwd):
        try:
            return (run_dir / M.JOURNAL).read_bytes().count(b"\n")
        except OSError:
            return 0
    return 0


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)  # reaped: its pid is free again


def shown(run_dir: Path) -> dict:
    """`studio runs show RUN_DIR --json`, checked against the files on disk."""
    result = studio_cmd("runs", "show", str(run_dir), "--json", cwd=run_dir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["status"] != "running"
    for step in manifest["steps"].values():
        for item in step["items"]:
            assert item["status"] in ("done", "cached", "interrupted"), item
            assert bool(item["artifacts"]) == (item["status"] in ("done", "cached")), item
            for art in item["artifacts"].values():
                assert ".partial" not in art["path"]
                path = run_dir / art["path"]
                assert path.is_file() and path.stat().st_size == art["size"]
                assert sha256_file(path) == art["sha256"], f"{path} is not what the run recorded"
    return manifest


def statuses(manifest: dict) -> dict[str, str]:
    return {i["name"]: i["status"] for s in manifest["steps"].values() for i in s["items"]}


def check_killed_then_rerun(cwd: Path) -> None:
    killed = run_dirs(cwd)
    before = statuses(shown(killed[0])) if killed else {}
    finished = {name for name, status in before.items() if status in ("done", "cached")}

    again = studio_cmd("run", "cards.yaml", "-q", cwd=cwd)
    assert again.returncode == 0, again.stderr
    after = statuses(shown(cwd / again.stdout.strip()))
    assert len(after) == ITEMS and set(after.values()) <= {"done", "cached"}
    assert {name for name, status in after.items() if status == "cached"} >= finished


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.6, 0.8])
def test_kill_after_a_delay(tmp_path, delay):
    proc = start_run(tmp_path)
    time.sleep(delay)
    kill(proc)
    check_killed_then_rerun(tmp_path)


@pytest.mark.parametrize("lines", [1, 2, 9, 25])
def test_kill_when_the_journal_has_n_lines(tmp_path, lines):
    proc = start_run(tmp_path)
    deadline = time.monotonic() + 30
    while journal_lines(tmp_path) < lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    kill(proc)
    killed = run_dirs(tmp_path)
    if proc.returncode == -signal.SIGKILL:  # killed mid-run, as intended
        manifest = shown(killed[0])
        assert manifest["status"] == "interrupted"
        done = [n for n, s in statuses(manifest).items() if s == "done"]
        assert len(done) >= lines - 1  # the header, then one line per finished item
    check_killed_then_rerun(tmp_path)


# --- kills at exact points, from inside the process ---------------------------------------

DRIVER = """
import json, os, signal, sys

import studio.execute.cache
import studio.execute.manifest

point, n = sys.argv[1], int(sys.argv[2])
calls = []


def die_on_call_n(original):
    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper


if point == "before-cache-store":  # the artifact is written, the cache not yet
    studio.execute.cache.StepCache.store = die_on_call_n(studio.execute.cache.StepCache.store)
elif point == "torn-journal-line":  # half an item's line reaches the disk
    append = studio.execute.manifest.Journal.append

    def half_then_die(self, record):
        if record.get("record") == "item":
            calls.append(1)
            if len(calls) == n:
                line = json.dumps(record).encode()
                os.write(self._fd, line[: len(line) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return append(self, record)

    studio.execute.manifest.Journal.append = half_then_die
elif point == "final-manifest":  # every item made; killed as the manifest says so
    write = studio.execute.manifest.Manifest.write

    def die_at_the_end(self, status, **kwargs):
        if status != "running":
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, status, **kwargs)

    studio.execute.manifest.Manifest.write = die_at_the_end

from studio.cli import main

sys.argv = ["studio", "run", "cards.yaml", "-q"]
main()
"""


@pytest.mark.parametrize("point, n, finished", [
    ("before-cache-store", 5, 4),
    ("torn-journal-line", 7, 6),
    ("final-manifest", 0, ITEMS),
])
def test_kill_at_an_exact_point(tmp_path, point, n, finished):
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "cards.yaml").write_text(CARDS)
    proc = subprocess.run([sys.executable, "driver.py", point, str(n)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (run_dir,) = run_dirs(tmp_path)
    manifest = shown(run_dir)
    assert manifest["status"] == "interrupted"
    assert "ended without finishing" in manifest["error"]
    done = [name for name, status in statuses(manifest).items() if status == "done"]
    assert len(done) == finished
    # `runs show` saved what it found: the manifest itself now tells the truth
    saved = json.loads((run_dir / "manifest.json").read_text())
    assert saved["status"] == "interrupted" and statuses(saved) == statuses(manifest)
    check_killed_then_rerun(tmp_path)


# --- the journal and the manifest, put together ----------------------------------------------


def test_a_running_manifest_takes_the_journal_and_its_end(tmp_path):
    result = run_yaml("name: j\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 2, 3]}}\n", tmp_path)
    final = json.loads(result.manifest_path.read_text())
    assert final["status"] == "done" and not (result.run_dir / M.JOURNAL).exists()  # said all it had to

    stale = json.loads(json.dumps(final))  # as if written early in the run
    stale["status"] = "running"
    for item in stale["steps"]["a"]["items"]:
        item.update(status="pending", artifacts={}, seconds=None)
    journal = [{"record": "run", "process": M.this_process()}]
    journal += [{"record": "item", "step": "a", **i} for i in final["steps"]["a"]["items"][:2]]
    result.manifest_path.write_text(json.dumps(stale))
    (result.run_dir / M.JOURNAL).write_text("\n".join(json.dumps(r) for r in journal) + "\n{\"record\": \"it")

    running = M.read_manifest(result.run_dir)  # this process is alive: still running
    assert running["status"] == "running"
    assert [i["status"] for i in running["steps"]["a"]["items"]] == ["done", "done", "pending"]
    assert running["steps"]["a"]["items"][0]["artifacts"] == final["steps"]["a"]["items"][0]["artifacts"]

    with open(result.run_dir / M.JOURNAL, "a") as f:
        f.write('\n{"record": "end", "status": "failed", "error": "disk full at somewhere"}\n')
    ended = M.read_manifest(result.run_dir)
    assert ended["status"] == "failed" and ended["error"] == "disk full at somewhere"
    assert [i["status"] for i in ended["steps"]["a"]["items"]] == ["done", "done", "interrupted"]
    assert ended["steps"]["a"]["status"] == "interrupted"


def test_which_processes_are_gone():
    me = M.this_process()
    assert not M.process_is_gone(me)
    assert M.process_is_gone({**me, "start_ticks": (me["start_ticks"] or 0) + 1}) == (me["start_ticks"] is not None)
    assert not M.process_is_gone({**me, "host": socket.gethostname() + "-elsewhere"})  # cannot tell
    if me["boot_id"]:
        assert M.process_is_gone({**me, "boot_id": "another boot"})
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert M.process_is_gone({**me, "pid": child.pid, "start_ticks": None})
    for nonsense in (None, "x", {}, {**me, "pid": "1"}, {**me, "pid": -1}):
        assert not M.process_is_gone(nonsense)


# --- failures are the user's, the machine's or the generator's --------------------------------


class NeedsShortPrompt(Generator):
    """Refuses long prompts at run time, as a model with a context limit would."""

    name = "test.picky"
    description = "Fails with a UserError on a prompt longer than 5 characters."
    outputs = {"text": "text/plain"}
    batchable = True
    max_batch_size = 4

    class Params(FakeImage.Params):
        pass

    def generate(self, params, ctx):
        if len(params.prompt) > 5:
            raise UserError(f"prompt: {len(params.prompt)} characters, this model takes at most 5")
        return {"text": params.prompt}


class AllocatorFails(FakeImage):
    """A CPU allocator that cannot give a batch larger than `fits` its memory."""

    name = "test.cpu_tight"
    max_batch_size = 8
    fits = 2
    calls: list[int] = []

    def generate_batch(self, params, ctxs):
        AllocatorFails.calls.append(len(params))
        if len(params) > AllocatorFails.fits:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 34359738368 bytes. Error code 12")
        return [self._one(p, c) for p, c in zip(params, ctxs)]

    def generate(self, params, ctx):
        return self.generate_batch([params], [ctx])[0]


class MorePlugin:
    @hookimpl
    def register_generators(self, register):
        register(NeedsShortPrompt)
        register(AllocatorFails)


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("fake", FakePlugin()), ("more", MorePlugin())]))
    monkeypatch.chdir(tmp_path)

    def run(text: str, *args):
        (tmp_path / "p.yaml").write_text(textwrap.dedent(text))
        return CliRunner().invoke(cli, ["run", "p.yaml", "-q", *args])

    return run


def test_a_user_error_at_run_time_fails_only_its_item_and_exits_2(invoke, tmp_path):
    result = invoke("""
        name: u
        steps:
          - {id: t, uses: test.picky, sweep: {prompt: [ok, much too long, fine]}}
    """)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert ("step 't', item 't@prompt=much too long': test.picky: prompt: 13 characters, this model takes "
            "at most 5") in result.output
    (run_dir,) = [p for p in (tmp_path / "runs" / "u").iterdir() if p.name != "latest"]
    items = json.loads((run_dir / "manifest.json").read_text())["steps"]["t"]["items"]
    assert [(i["status"], i["error_kind"]) for i in items] == [("done", None), ("failed", "user"), ("done", None)]
    assert (run_dir / "t@prompt=ok" / "text.txt").read_text() == "ok"


def test_parameters_refused_at_run_time_name_the_field_and_exit_2(invoke, tmp_path):
    long_text = "x" * 1500  # fine for fake.text; fake.image's prompt takes at most 1000 characters
    result = invoke(f"""
        name: v
        steps:
          - {{id: words, uses: fake.text, sweep: {{prompt: [short, {long_text}]}}}}
          - {{id: pic, uses: fake.image, with: {{prompt: "${{steps.words.outputs.text}}", size: 4}}}}
    """)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert (f"step 'pic', item 'pic@prompt={long_text[:8]}" in result.output
            and "parameters: prompt: String should have at most 1000 characters" in result.output)
    items = json.loads(next((tmp_path / "runs" / "v").glob("*/manifest.json")).read_text())["steps"]["pic"]["items"]
    assert [(i["status"], i["error_kind"]) for i in items] == [("done", None), ("failed", "user")]


def test_a_generator_crash_beside_a_user_error_exits_1(invoke):
    result = invoke("""
        name: w
        steps:
          - {id: t, uses: test.picky, with: {prompt: too long}}
          - {id: bad, uses: fake.fail}
    """)
    assert result.exit_code == 1, result.output
    assert "fake.fail (plugin 'fake') raised ValueError: boom" in result.output


def test_a_cpu_allocation_failure_halves_the_batch(tmp_path):
    AllocatorFails.calls, AllocatorFails.fits = [], 2
    text = "name: m\nsteps:\n  - {id: a, uses: test.cpu_tight, sweep: {seed: [1, 2, 3, 4, 5, 6, 7, 8]}}\n"
    result = run_yaml(text, tmp_path, plugins=[("more", MorePlugin())], use_cache=False)
    assert result.status == "done"
    assert AllocatorFails.calls == [8, 4, 2, 2, 2, 2]


def test_an_item_too_big_for_memory_alone_says_so_and_exits_2(invoke):
    AllocatorFails.calls, AllocatorFails.fits = [], 0
    result = invoke("name: m\nsteps:\n  - {id: a, uses: test.cpu_tight, sweep: {seed: [1, 2]}}\n")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert ("step 'a', item 'a@seed=1': out of memory with a batch of 1: lower the sizes in its parameters "
            "(image size, steps, audio length, batch) or free memory (RuntimeError: [enforce fail") in result.output
    assert AllocatorFails.calls == [2, 1, 1]
