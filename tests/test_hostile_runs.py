"""A hostile tester's findings about runs: hostile run folders for `runs show`, a
poisoned step cache, broken output streams, escape sequences and a model given by
reference. Each answer is a message and an exit code, in bounded time and memory,
never a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio import media
from studio.generator import Generator, Params, model_input
from studio.hookspecs import hookimpl
from studio.testing import run_yaml

ENV = {**os.environ, "STUDIO_LOAD_PLUGINS": "utils", "PYTHONUNBUFFERED": "1"}


def studio(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_clean(proc: subprocess.CompletedProcess, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(proc.stderr) < 5000


def running_manifest(run_dir: Path, **fields) -> None:
    """A manifest of a run still going (this test's own process), so its journal is read."""
    from studio.execute.manifest import this_process

    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"pipeline": "p", "status": "running", "process": this_process(),
            "steps": {"a": {"uses": "x", "items": [{"name": "a-1", "status": "pending"}]}}, **fields}
    (run_dir / "manifest.json").write_text(json.dumps(data))


# --- A1/A2: files that are not what they say, or far too large ---------------------------


def test_a1_runs_show_refuses_fifo_devices_and_huge_journals_and_manifests(tmp_path):
    cases = {}
    for name in ("fifo", "zero", "huge"):
        run = tmp_path / f"j-{name}"
        running_manifest(run)
        cases[run] = "journal.jsonl"
        journal = run / "journal.jsonl"
        if name == "fifo":
            os.mkfifo(journal)
        elif name == "zero":
            journal.symlink_to("/dev/zero")
        else:
            with open(journal, "wb") as f:
                f.truncate(3 << 30)  # sparse: 3 GB that cost no disk
    for name in ("fifo", "zero"):
        run = tmp_path / f"m-{name}"
        run.mkdir()
        if name == "fifo":
            os.mkfifo(run / "manifest.json")
        else:
            (run / "manifest.json").symlink_to("/dev/zero")
        cases[run] = "manifest.json"
    for run, named in cases.items():
        began = time.monotonic()
        proc = studio("runs", "show", str(run), cwd=tmp_path, timeout=20)
        assert time.monotonic() - began < 15
        assert_clean(proc, 2)
        assert named in proc.stderr, proc.stderr


def test_a2_manifest_size_is_checked_before_parsing(tmp_path):
    from studio.execute.manifest import MAX_MANIFEST_BYTES

    assert MAX_MANIFEST_BYTES <= 64 << 20
    run = tmp_path / "r"
    run.mkdir()
    with open(run / "manifest.json", "wb") as f:
        f.write(b"[" + b"{}," * 1000)
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse rest: refused by its size alone
    proc = studio("runs", "show", str(run), cwd=tmp_path)
    assert_clean(proc, 2)
    assert "manifest.json" in proc.stderr and "MB" in proc.stderr


# --- B1: nesting deep enough to break the parser --------------------------------------------


def test_b1_deep_manifest_is_a_user_error(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "manifest.json").write_text('{"steps":{},"x":' + "[" * 100_000 + "]" * 100_000 + "}")
    proc = studio("runs", "show", str(run), cwd=tmp_path)
    assert_clean(proc, 2)
    assert "manifest.json" in proc.stderr

    run2 = tmp_path / "r2"
    running_manifest(run2)
    (run2 / "journal.jsonl").write_text('{"record":' + "[" * 100_000 + "]" * 100_000 + "}\n")
    proc = studio("runs", "show", str(run2), cwd=tmp_path)
    assert_clean(proc, 2)
    assert "journal.jsonl" in proc.stderr


IMAGE = """\
name: c
steps:
  - {id: a, uses: fake.image, with: {size: 4}}
"""
TEXT = """\
name: t
steps:
  - {id: a, uses: fake.text, with: {prompt: hello}}
"""


def entry_dir(tmp_path: Path) -> Path:
    entries = [p for p in (tmp_path / "runs" / ".cache" / "steps").glob("*/*") if not p.name.startswith(".")]
    assert len(entries) == 1
    return entries[0]


def test_b1_deep_cache_entry_is_a_miss(tmp_path):
    assert run_yaml(IMAGE, tmp_path).status == "done"
    (entry_dir(tmp_path) / "entry.json").write_text('{"files": ' + "[" * 300_000 + "]" * 300_000 + "}")
    result = run_yaml(IMAGE, tmp_path)
    assert result.status == "done"
    assert [r.status for r in result.items.values()] == ["done"]


# --- B3: fields of any JSON type ------------------------------------------------------------


def test_b3_runs_show_takes_any_field_type(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({
        "pipeline": ["x"], "status": {"a": 1}, "warnings": 5, "error": [1], "seconds": "slow",
        "runtime": {"device": 7}, "steps": {"a": {"uses": 3, "items": [
            {"name": 1, "artifacts": [1, 2], "seconds": True},
            {"name": "b", "artifacts": {"p": 3, "q": {"path": ["x"], "size": {}}}},
            5]},
            "b": {"items": 7}, "c": 3}}))
    proc = studio("runs", "show", str(run), cwd=tmp_path)
    assert_clean(proc, 0)

    run2 = tmp_path / "r2"
    running_manifest(run2, warnings={"w": 1})
    (run2 / "journal.jsonl").write_text('{"record":"item","name":[1]}\n{"record":"item","name":{"a":1}}\n'
                                        '{"record":"end","status":[2]}\n')
    proc = studio("runs", "show", str(run2), cwd=tmp_path)
    assert_clean(proc, 0)
    proc = studio("runs", "show", str(run2), "--json", cwd=tmp_path)
    assert_clean(proc, 0)


# --- C3/D1: a step cache that lies consistently --------------------------------------------


def poison(entry: Path, data: bytes, *, sparse_size: int | None = None) -> None:
    meta = json.loads((entry / "entry.json").read_text())
    port, info = next(iter(meta["files"].items()))
    path = entry / info["file"]
    path.write_bytes(data)
    if sparse_size is not None:
        with open(path, "r+b") as f:
            f.truncate(sparse_size)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if sparse_size is None:
            h.update(f.read())
    info["sha256"] = h.hexdigest() if sparse_size is None else "0" * 64
    info["size"] = path.stat().st_size
    (entry / "entry.json").write_text(json.dumps(meta))


def bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("pipeline, data", [
    (IMAGE, b"not a png at all, but its hash matches"),
    (IMAGE, bomb_png()),
    (TEXT, b"\xff\xfe\xfa invalid utf-8"),
], ids=["not-png", "bomb", "bad-utf8"])
def test_c3_poisoned_but_consistent_cache_entry_is_a_miss(tmp_path, pipeline, data):
    assert run_yaml(pipeline, tmp_path).status == "done"
    poison(entry_dir(tmp_path), data)
    result = run_yaml(pipeline, tmp_path)
    assert result.status == "done"
    assert [r.status for r in result.items.values()] == ["done"]  # made again, not "cached"
    # and the entry was replaced by a good one: the next run reuses it
    assert [r.status for r in run_yaml(pipeline, tmp_path).items.values()] == ["cached"]


def test_d1_huge_cache_file_is_refused_before_copying(tmp_path):
    assert run_yaml(IMAGE, tmp_path).status == "done"
    poison(entry_dir(tmp_path), b"\x89PNG\r\n\x1a\n", sparse_size=10 << 30)
    began = time.monotonic()
    result = run_yaml(IMAGE, tmp_path)
    assert time.monotonic() - began < 10
    assert [r.status for r in result.items.values()] == ["done"]
    assert all(a.size < 1 << 20 for a in result.artifacts())


def test_d1_hash_is_checked_before_copying(tmp_path, monkeypatch):
    from studio.execute.cache import StepCache

    assert run_yaml(IMAGE, tmp_path).status == "done"
    entry = entry_dir(tmp_path)
    meta = json.loads((entry / "entry.json").read_text())
    info = next(iter(meta["files"].values()))
    data = bytearray((entry / info["file"]).read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    (entry / info["file"]).write_bytes(bytes(data))
    copied = []
    monkeypatch.setattr(StepCache, "copy_out", lambda self, f, dest: copied.append(f))
    result = run_yaml(IMAGE, tmp_path)
    assert [r.status for r in result.items.values()] == ["done"] and copied == []


# --- D2: broken or full output streams -------------------------------------------------------


SWEEP = """\
name: cards
steps:
  - id: card
    uses: image.title
    with: {text: "hi", width: 64, height: 64}
    sweep: {seed: [1, 2, 3, 4, 5, 6]}
"""


def test_d2_broken_stdout_does_not_stop_the_run(tmp_path):
    (tmp_path / "p.yaml").write_text(SWEEP)
    proc = subprocess.Popen([sys.executable, "-m", "studio", "run", "p.yaml", "--json-events"], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    proc.stdout.read(100)
    proc.stdout.close()  # `| head -c 100`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err
    [run] = [p for p in (tmp_path / "runs" / "cards").iterdir() if not p.name.startswith(".") and p.name != "latest"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert [i["status"] for i in manifest["steps"]["card"]["items"]] == ["done"] * 6


def piped_head(args: list[str], cwd: Path) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "studio", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


def test_d2_broken_pipe_exits_quietly_with_141(tmp_path):
    lines = "\n".join(f"  - {{id: s{i}, uses: image.title, with: {{text: t, width: 16, height: 16}}, "
                      f"sweep: {{seed: {list(range(1, 200))}}}}}" for i in range(20))
    (tmp_path / "big.yaml").write_text(f"name: big\nsteps:\n{lines}\n")
    for args in (["plan", "big.yaml"], ["plugins", "show", "image.title"]):
        code, err = piped_head(args, tmp_path)
        assert (code, err) == (141, ""), (args, code, err)
    run = tmp_path / "r"
    run.mkdir()
    items = [{"name": f"item-{i}", "status": "done", "seconds": 1.0} for i in range(2000)]
    (run / "manifest.json").write_text(json.dumps({"pipeline": "p", "status": "done",
                                                   "steps": {"a": {"uses": "x", "items": items}}}))
    code, err = piped_head(["runs", "show", "r"], tmp_path)
    assert (code, err) == (141, ""), (code, err)
    # one large write that the pipe takes in part is not an error to Python: 0 or 141, quietly
    code, err = piped_head(["runs", "show", "r", "--json"], tmp_path)
    assert code in (0, 141) and err == "", (code, err)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_d2_full_stdout_is_named(tmp_path):
    (tmp_path / "p.yaml").write_text(SWEEP)
    for extra in ([], ["--json-events"], ["-q"]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "studio", "run", "p.yaml", *extra], cwd=tmp_path,
                                  env=ENV, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert "cannot write to standard output" in proc.stderr, proc.stderr
        assert "--out" not in proc.stderr and "Traceback" not in proc.stderr


# --- E1: escape sequences in a manifest ---------------------------------------------------


def test_e1_control_characters_are_shown_escaped(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    evil = "\x1b[2J\x1b]0;pwn\x07\x9b31m"
    (run / "manifest.json").write_text(json.dumps({
        "pipeline": evil, "status": "done", "warnings": [evil * 10_000], "error": evil,
        "steps": {"a": {"uses": evil, "items": [{"name": evil, "status": evil, "error": evil,
                                                   "artifacts": {"p": {"path": evil, "size": evil}}}]}}}))
    proc = studio("runs", "show", str(run), cwd=tmp_path)
    assert_clean(proc, 0)
    for bad in ("\x1b", "\x07", "\x9b"):
        assert bad not in proc.stdout
    assert "\\x1b" in proc.stdout
    assert len(proc.stdout) < 20_000  # the 10,000-fold warning is clipped


# --- E2: the out-of-memory message is generic ------------------------------------------------


class Hungry(Generator):
    name = "fake.hungry"
    description = "Runs out of memory (for tests)."
    outputs = {"text": media.TEXT}

    class Params(Params):
        pass

    def generate(self, params, ctx):
        raise MemoryError("out of memory")


class Loader(Generator):
    name = "fake.loader"
    description = "Names a model (for tests)."
    outputs = {"text": media.TEXT}

    class Params(Params):
        model: str = model_input(suffixes=(".pt",))

    def generate(self, params, ctx):
        return {"text": params.model}


class Extra:
    @hookimpl
    def register_generators(self, register):
        register(Hungry)
        register(Loader)


def test_e2_out_of_memory_message_is_generic(tmp_path):
    result = run_yaml("name: h\nsteps:\n  - {id: a, uses: fake.hungry}\n", tmp_path, plugins=[("extra", Extra())])
    [item] = result.failed
    assert item.error_kind == "environment"
    assert "lower the sizes in its parameters" in item.error and "width/height" not in item.error


# --- E3: a model given by reference is checked like a literal one ---------------------------


def test_e3_model_by_reference_is_checked(tmp_path):
    result = run_yaml("""\
        name: m
        steps:
          - {id: a, uses: fake.text, with: {prompt: "/etc"}}
          - {id: b, uses: fake.text, with: {prompt: "no/such/weights.pt"}}
          - {id: c, uses: fake.loader, with: {model: "${steps.a.outputs.text}"}}
          - {id: d, uses: fake.loader, with: {model: "${steps.b.outputs.text}"}}
    """, tmp_path, plugins=[("extra", Extra())])
    failed = {r.step_id: r for r in result.failed}
    assert set(failed) == {"c", "d"}
    assert all(r.error_kind == "user" and "model" in r.error for r in failed.values())
    assert "system directory" in failed["c"].error and "not found" in failed["d"].error

    (tmp_path / "w.pt").write_bytes(b"weights")
    result = run_yaml("""\
        name: m
        steps:
          - {id: a, uses: fake.text, with: {prompt: "w.pt"}}
          - {id: c, uses: fake.loader, with: {model: "${steps.a.outputs.text}"}}
    """, tmp_path, plugins=[("extra", Extra())])
    assert result.status == "done"
    assert result.step("c")[0].artifacts["text"].read_text() == str((tmp_path / "w.pt").resolve())
