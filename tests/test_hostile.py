"""A hostile corpus, run through the real command line.

Every case runs `studio ...` as a process of its own in a fresh directory, under a
memory limit (forked from a server that imported the CLI once, tests/forked_cli.py; the
forked and the real `python -m studio` are checked to answer alike), and checks what a
user would see:

- the exit code (0 done, 1 a generator failed on valid input, 2 the user's input was
  wrong), and never a Python traceback;
- the message names the place (file:line, YAML path, step, `--set`, the path given) and
  says what was wrong;
- the answer is bounded: validate/plan answer a bad pipeline in about 2 s (plus slack for
  a slow CI machine) and a few hundred MB, whatever the pipeline declares;
- what was written: nothing for validate/plan, no run directory for a run that fails
  validation.

The corpus is a list of `Case`s grouped by class; add a case by adding a line.
"""

from __future__ import annotations

import os
import pickle
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from mido.midifiles.meta import encode_variable_int

from forked_cli import run_forked

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = {
    "gan": REPO / "plugins/studio_image/weights/gan",
    "gpt": REPO / "plugins/studio_text/weights/gpt",
    "diffusion": REPO / "plugins/studio_image/weights/diffusion",
    "digits": REPO / "plugins/studio_image/weights/digits",
}
DIGITS = f"model: '{WEIGHTS['digits']}'"  # the class-conditional digit UNet shipped beside the default
ODE = REPO / "pipelines/assets/ode-to-joy.mid"

BUDGET_S = 2.0  # what validate/plan may take on a bad pipeline
SLACK_S = 3.0  # a slow, shared 2-core CI machine; interpreter start-up included
MB = 2**20
GB = 2**30


# --- media files made by hand (no library, so each is exactly as broken as meant) -----


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w: int = 8, h: int = 8) -> bytes:
    raw = b"".join(b"\x00" + bytes([200, 80, 40]) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def png_declaring(w: int, h: int) -> bytes:
    """A decompression bomb's shape: a huge declared size, a few compressed rows."""
    z = zlib.compressobj()
    row = b"\x00" + b"\x00" * (3 * w)
    data = z.compress(row * 4) + z.flush(zlib.Z_SYNC_FLUSH)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))


def wav(frames: int = 8000, rate: int = 8000) -> bytes:
    data = struct.pack(f"<{frames}h", *([3000, -3000] * (frames // 2)))
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", len(data)) + data)


def _vlq(n: int) -> bytes:
    """A MIDI variable-length number (mido's own encoder)."""
    return bytes(encode_variable_int(n))


def midi(notes: list[tuple[int, int, int]] = ((0, 96, 60),), ppq: int = 96, tempo: int = 500_000) -> bytes:
    """A type-0 MIDI file; notes are (start tick, length in ticks, pitch)."""
    events = []
    for start, length, pitch in notes:
        events.append((start, bytes([0x90, pitch, 100])))
        events.append((start + length, bytes([0x80, pitch, 0])))
    events.sort(key=lambda e: e[0])
    track, now = _vlq(0) + b"\xff\x51\x03" + tempo.to_bytes(3, "big"), 0
    for tick, event in events:
        track += _vlq(tick - now) + event
        now = tick
    track += _vlq(0) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ppq) + b"MTrk" + struct.pack(">I", len(track)) + track


class _Pwn:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- file makers: str -> text, bytes -> bytes, callable(path, root) -> anything -------


def fifo(path: Path, root: Path) -> None:
    os.mkfifo(path)


def directory(path: Path, root: Path) -> None:
    path.mkdir()


def symlink(target: str) -> Callable:
    def make(path: Path, root: Path) -> None:
        path.symlink_to(target)
    return make


def copy_of(src: Path, patch: Callable[[Path, Path], None] | None = None) -> Callable:
    def make(path: Path, root: Path) -> None:
        shutil.copytree(src, path)
        if patch:
            patch(path, root)
    return make


def pickle_with_code(path: Path, root: Path) -> None:
    path.write_bytes(pickle.dumps(_Pwn(str(root / "pwned"))))


def sparse(size: int) -> Callable:
    def make(path: Path, root: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(size)
    return make


def gpt_with_bin(path: Path, root: Path) -> None:
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(_Pwn(str(root / "pwned"))))


def gpt_with_auto_map(path: Path, root: Path) -> None:
    import json

    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "evil.py").write_text(f"open({str(root / 'pwned')!r}, 'w').close()\n")


def gpt_tokenizer_auto_map(path: Path, root: Path) -> None:
    import json

    config = json.loads((path / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "evil.py").write_text(f"open({str(root / 'pwned')!r}, 'w').close()\n")


def gpt_trust_remote_code(path: Path, root: Path) -> None:
    import json

    config = json.loads((path / "config.json").read_text())
    config["trust_remote_code"] = True
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "evil.py").write_text(f"open({str(root / 'pwned')!r}, 'w').close()\n")


def diffusion_custom_pipeline(path: Path, root: Path) -> None:
    import json

    index = json.loads((path / "model_index.json").read_text())
    index["_class_name"] = ["evil", "EvilPipeline"]
    (path / "model_index.json").write_text(json.dumps(index))
    (path / "evil.py").write_text(f"open({str(root / 'pwned')!r}, 'w').close()\n")


# --- pipelines ---------------------------------------------------------------------


def pipe(*steps: str, head: str = "name: t\n") -> str:
    """`name: t` on line 1, `steps:` on line 2, step i on line 3 + i (flow style)."""
    return head + "steps:\n" + "".join(f"  - {s}\n" for s in steps)


TITLE = "{id: a, uses: image.title, with: {text: hi, width: 32, height: 32}}"
TPL = "{id: a, uses: text.template, with: {template: hello}}"
OK_TITLE = pipe(TITLE)


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


def alias_bomb_flow() -> str:
    levels = ["&a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"&{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return "[" + ", ".join(levels) + "]"


def sweep6x40() -> str:
    return pipe("{id: a, uses: image.title, sweep: {"
                f"seed: [{', '.join(str(i) for i in range(40))}], "
                f"width: [{', '.join(str(16 + i) for i in range(40))}], "
                f"height: [{', '.join(str(16 + i) for i in range(40))}], "
                f"font_size: [{', '.join(str(i) for i in range(40))}], "
                f"text: [{', '.join(f't{i}' for i in range(40))}], "
                f"color: [{', '.join(repr(f'#0000{i:02x}') for i in range(40))}]}}}}")


def many_steps(n: int, chain: bool = False) -> str:
    steps = []
    for i in range(n):
        if chain and i:
            steps.append(f"{{id: s{i}, uses: text.template, with: {{template: '${{steps.s{i - 1}.outputs.text}}.'}}}}")
        else:
            steps.append(f"{{id: s{i}, uses: text.template, with: {{template: 'x{i}'}}}}")
    return pipe(*steps)


# --- the case type and its runner -----------------------------------------------------


@dataclass
class Case:
    cls: str  # the class of input, for grouping the report
    name: str
    argv: list[str]  # after `studio`; "{tmp}" is the case's directory
    files: dict[str, Any] = field(default_factory=dict)
    code: int | frozenset = 2
    expect: tuple[str, ...] = ()  # phrases that must be in the output
    where: tuple[str, ...] = ()  # the location: file:line, YAML path, step, option, path
    budget_s: float | None = None  # default: BUDGET_S for validate/plan, 60 for run
    max_rss_mb: int | None = None  # default: 400 (torch-free), 1500 (torch)
    torch: bool = False  # the command may import torch: a higher address-space limit
    max_output: int = 20_000  # echoed values are truncated
    writes: str = "default"  # "nothing" | "no-run-dir" | "any"; default by command and code
    check: Callable[[Path, str, int], None] | None = None  # check(tmp, output, code)

    @property
    def id(self) -> str:
        return f"{self.cls}-{self.name}"


@dataclass
class Result:
    code: int
    output: str
    seconds: float
    rss_mb: float
    timed_out: bool


# The command runs as the grandchild of a small launcher: a child forked straight from a
# large pytest process would count the parent's pages in its own peak RSS.
LAUNCHER = """
import os, resource, subprocess, sys
limit, report = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
child = subprocess.Popen([sys.executable, "-m", "studio", *sys.argv[3:]])
_, status, usage = os.wait4(child.pid, 0)
with open(report, "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_cli(argv: list[str], cwd: Path, *, timeout: float, as_limit: int) -> Result:
    """`python -m studio ARGV` under a memory limit, in its own process group, stdout
    and stderr into one file, its peak RSS measured, and a hard kill on timeout (a hang
    is a failure, not a stuck test suite)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["COLUMNS"] = "200"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rss"
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(as_limit), str(report), *argv], cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        seconds = time.monotonic() - start
        out.seek(0)
        output = out.read().decode("utf-8", "replace")
        rss_kb = int(report.read_text()) if report.exists() else 0
    return Result(proc.returncode, output, seconds, rss_kb / 1024, timed_out)


def run_forked_cli(argv: list[str], cwd: Path, *, timeout: float, as_limit: int) -> Result:
    """run_cli's answer from a process forked off a server that imported the CLI once
    (tests/forked_cli.py): a few hundred cases without a few hundred interpreter starts."""
    code, output, seconds, rss_kb, timed_out = run_forked(argv, cwd, timeout=timeout, as_limit=as_limit)
    return Result(code, output, seconds, rss_kb / 1024, timed_out)


def cli_main(argv: list[Any], monkeypatch, capsys) -> tuple[int, str, float]:
    """`studio ARGV` through studio.cli.main in this process, as the console script runs
    it (errors become messages and exit codes): (exit code, stdout + stderr, seconds)."""
    from studio.cli import main

    monkeypatch.setattr(sys, "argv", ["studio", *map(str, argv)])
    start = time.monotonic()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    return code, captured.out + captured.err, seconds


def make_files(root: Path, files: dict[str, Any]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8"))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path, root)


def snapshot(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def check_case(case: Case, tmp: Path) -> None:
    make_files(tmp, case.files)
    before = snapshot(tmp)
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    command = argv[0]
    budget = case.budget_s if case.budget_s is not None else (60.0 if command == "run" else BUDGET_S)
    rss = case.max_rss_mb or (1500 if case.torch else 400)
    r = run_forked_cli(argv, tmp, timeout=max(20.0, budget + SLACK_S + 5), as_limit=(10 if case.torch else 4) * GB)
    shown = r.output if len(r.output) < 3000 else r.output[:1500] + "\n[...]\n" + r.output[-1500:]
    context = f"studio {' '.join(a[:80] for a in argv)}\n--- exit {r.code}, {r.seconds:.2f} s, {r.rss_mb:.0f} MB ---\n{shown}"
    assert not r.timed_out, f"hung (killed after {r.seconds:.0f} s)\n{context}"
    assert "Traceback" not in r.output, f"traceback\n{context}"
    codes = case.code if isinstance(case.code, frozenset) else frozenset([case.code])
    assert r.code in codes, f"exit {r.code}, expected {sorted(codes)}\n{context}"
    assert r.seconds <= budget + SLACK_S, f"took {r.seconds:.1f} s (budget {budget} s + {SLACK_S} s)\n{context}"
    assert r.rss_mb <= rss, f"peak RSS {r.rss_mb:.0f} MB (limit {rss} MB)\n{context}"
    if r.code == 2:
        assert r.output.strip(), f"exit 2 with no message\n{context}"
    for phrase in case.where + case.expect:
        assert phrase in r.output, f"{phrase!r} not in the output\n{context}"
    assert len(r.output) <= case.max_output, f"{len(r.output):,} characters of output (at most {case.max_output:,})\n{context}"
    writes = case.writes
    if writes == "default":
        writes = "nothing" if command in ("validate", "plan") else ("no-run-dir" if r.code == 2 else "any")
    if writes == "nothing":
        assert snapshot(tmp) == before, f"wrote {sorted(snapshot(tmp) - before)[:5]}\n{context}"
    elif writes == "no-run-dir":
        runs = [p for p in snapshot(tmp) - before if not p.startswith("runs/.cache")]
        assert not any(p.count(os.sep) >= 2 and p.startswith("runs") for p in runs), \
            f"a run directory was created for a refused pipeline: {sorted(runs)[:5]}\n{context}"
    assert not (tmp / "pwned").exists(), f"code from a checkpoint or config ran\n{context}"
    if case.check:
        case.check(tmp, r.output, r.code)


V = ["validate", "p.yaml"]


def no_terminal_controls(output: str) -> None:
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", output), repr(output)


P = ["plan", "p.yaml"]
R = ["run", "p.yaml"]
ANY = frozenset({0, 2})


def title_png_written(tmp: Path, output: str, code: int) -> None:
    assert list(tmp.glob("runs/t/*/a/image.png")), f"no image written\n{output}"


def wav_written(tmp: Path, output: str, code: int) -> None:
    assert list(tmp.glob("runs/t/*/r/audio.wav")), f"no audio written\n{output}"


def vars_ref_resolved_or_refused(tmp: Path, output: str, code: int) -> None:
    if code == 0:
        texts = list(tmp.glob("runs/t/*/b/text.txt"))
        assert texts, output
        assert texts[0].read_text() == "[hello]", f"the reference was passed on as text: {texts[0].read_text()!r}"
    else:
        assert "steps[1].with.vars" in output, output


CASES: list[Case] = [
    # --- sweep and zip: a sweep's size is arithmetic, never materialised ---------------
    Case("sweep", "scalar-sweep-validate", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: {seed: 5}}")},
         where=("p.yaml:3", "steps[0].sweep.seed"), expect=("list",)),
    Case("sweep", "scalar-sweep-plan", P, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: {seed: 5}}")},
         where=("p.yaml:3", "steps[0].sweep.seed")),
    Case("sweep", "scalar-zip-validate", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, zip: {seed: 5, width: [64]}}")},
         where=("p.yaml:3", "steps[0].zip.seed")),
    Case("sweep", "scalar-zip-run", R, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, zip: {seed: 5, width: [64]}}")},
         where=("p.yaml:3", "steps[0].zip.seed"), budget_s=BUDGET_S),
    Case("sweep", "mapping-sweep-value", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: {seed: {a: 1}}}")},
         where=("p.yaml:3", "steps[0].sweep.seed")),
    Case("sweep", "empty-sweep-list", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: {seed: []}}")},
         where=("p.yaml:3", "steps[0].sweep.seed")),
    Case("sweep", "sweep-is-a-list", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: [seed, 1]}")},
         where=("p.yaml:3", "steps[0].sweep")),
    Case("sweep", "nested-lists-in-sweep", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: {seed: [[1, 2], [3]]}}")},
         where=("p.yaml:3", "steps[0].sweep.seed[0]")),
    Case("sweep", "6-params-x-40-validate", V, {"p.yaml": sweep6x40()}, where=("p.yaml:3", "steps[0].sweep"),
         expect=("1,000",)),
    Case("sweep", "6-params-x-40-plan", P, {"p.yaml": sweep6x40()}, where=("p.yaml:3", "steps[0].sweep")),
    Case("sweep", "6-params-x-40-run", R, {"p.yaml": sweep6x40()}, where=("p.yaml:3", "steps[0].sweep"),
         budget_s=BUDGET_S),
    Case("sweep", "2000-items", V, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: hi}, sweep: {seed: [%s], width: [%s]}}"
        % (", ".join(map(str, range(100))), ", ".join(map(str, range(16, 36)))))},
         where=("p.yaml:3", "steps[0].sweep"), expect=("2,000",)),
    Case("sweep", "zip-1001", V, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: hi}, zip: {seed: [%s]}}" % ", ".join(map(str, range(1001))))},
         where=("p.yaml:3", "steps[0].zip"), expect=("1,001",)),
    Case("sweep", "sweep-50000-values", V, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: hi}, sweep: {seed: [%s]}}" % ", ".join(map(str, range(50_000))))},
         where=("p.yaml:3",), expect=("more than 30,000 values",)),
    Case("sweep", "sweep-20000-values", V, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: hi}, sweep: {seed: [%s]}}" % ", ".join(map(str, range(20_000))))},
         where=("p.yaml:3", "steps[0].sweep")),
    Case("sweep", "mapped-fan-out-40x40", V, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: hi}, sweep: {seed: [%s]}}" % ", ".join(map(str, range(40))),
        "{id: b, uses: image.resize, with: {image: '${steps.a.outputs.image}'}, sweep: {width: [%s]}}"
        % ", ".join(map(str, range(1, 41))))},
         where=("p.yaml:4", "steps[1]", "'b'"), expect=("1,600",)),
    Case("sweep", "two-mapped-upstreams-1000x1000", P, {"p.yaml": pipe(
        "{id: a, uses: text.template, sweep: {template: [%s]}}" % ", ".join(f"a{i}" for i in range(1000)),
        "{id: b, uses: text.template, sweep: {template: [%s]}}" % ", ".join(f"b{i}" for i in range(1000)),
        "{id: c, uses: text.template, with: {template: '${steps.a.outputs.text} ${steps.b.outputs.text}'}}")},
         where=("p.yaml:5", "steps[2]", "'c'"), expect=("1,000,000",)),
    Case("sweep", "pipeline-total-11000", V, {"p.yaml": pipe(*[
        "{id: s%d, uses: image.title, with: {text: hi}, sweep: {seed: [%s]}}" % (k, ", ".join(map(str, range(1000))))
        for k in range(11)])}, where=("p.yaml",), expect=("11,000",)),
    Case("sweep", "sweep-and-zip-same-key", V, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: hi}, sweep: {seed: [1, 2]}, zip: {seed: [3, 4]}}")},
         where=("p.yaml:3", "steps[0].zip.seed")),
    Case("sweep", "zip-unequal-with-scalar", P, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: hi}, zip: {seed: [1, 2], width: 64}}")},
         where=("p.yaml:3", "steps[0].zip.width")),

    # --- the pipeline path: regular files, read at most the size limit plus one byte ---
    Case("path", "dev-zero-validate", ["validate", "/dev/zero"], where=("/dev/zero",)),
    Case("path", "dev-zero-plan", ["plan", "/dev/zero"], where=("/dev/zero",)),
    Case("path", "dev-zero-run", ["run", "/dev/zero"], where=("/dev/zero",), budget_s=BUDGET_S),
    Case("path", "symlink-to-dev-zero", ["validate", "link.yaml"], {"link.yaml": symlink("/dev/zero")},
         where=("link.yaml",)),
    Case("path", "fifo-validate", ["validate", "fifo.yaml"], {"fifo.yaml": fifo}, where=("fifo.yaml",)),
    Case("path", "fifo-run", ["run", "fifo.yaml"], {"fifo.yaml": fifo}, where=("fifo.yaml",), budget_s=BUDGET_S),
    Case("path", "directory", ["validate", "d.yaml"], {"d.yaml": directory}, where=("d.yaml",),
         expect=("directory",)),
    Case("path", "missing", ["validate", "nope.yaml"], where=("nope.yaml",), expect=("no such file",)),
    Case("path", "3-mb-file", V, {"p.yaml": OK_TITLE + ("# " + "x" * 98 + "\n") * 30_000},
         where=("p.yaml",), expect=("MB",)),
    Case("path", "10-gb-sparse-file", V, {"p.yaml": sparse(10 * GB)}, where=("p.yaml",)),
    Case("path", "empty-file", V, {"p.yaml": ""}, where=("p.yaml",), expect=("empty",)),
    Case("path", "only-comments", V, {"p.yaml": "# nothing\n# here\n"}, where=("p.yaml",), expect=("empty",)),
    Case("path", "null-document", V, {"p.yaml": "~\n"}, where=("p.yaml",)),
    Case("path", "utf8-bom-is-fine", V, {"p.yaml": "\ufeff" + OK_TITLE}, code=0, expect=("ok",)),
    Case("path", "crlf-is-fine", V, {"p.yaml": OK_TITLE.replace("\n", "\r\n")}, code=0, expect=("ok",)),
    Case("path", "tab-indentation", V, {"p.yaml": "name: t\nsteps:\n  - id: a\n\tuses: image.title\n"},
         where=("p.yaml:4",)),
    Case("path", "two-documents", V, {"p.yaml": OK_TITLE + "---\n" + OK_TITLE}, where=("p.yaml:4",),
         expect=("document",)),
    Case("path", "binary-garbage", V, {"p.yaml": bytes(range(256)) * 40}, where=("p.yaml",)),
    Case("path", "latin-1", V, {"p.yaml": "name: t\nsteps:\n  - {id: a, uses: image.title, with: {text: caf\xe9}}\n".encode("latin-1")},
         where=("p.yaml",), expect=("UTF-8",)),
    Case("path", "utf-16", V, {"p.yaml": OK_TITLE.encode("utf-16")}, where=("p.yaml",)),
    Case("path", "nul-byte-in-value", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: 'h\x00i'}}")},
         where=("p.yaml:3",)),
    Case("path", "nul-byte-in-comment", V, {"p.yaml": "name: t  # \x00\n" + "steps:\n  - " + TITLE + "\n"},
         where=("p.yaml:1",)),
    Case("path", "esc-byte-in-value", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: 'h\x1b[31mi'}}")},
         where=("p.yaml:3",)),
    Case("path", "del-byte-in-value", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: 'h\x7fi'}}")},
         where=("p.yaml:3",)),
    Case("path", "nul-byte-run", R, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: 'h\x00i'}}")},
         where=("p.yaml:3",), budget_s=BUDGET_S),
    Case("path", "3000-nested-brackets", V, {"p.yaml": "name: t\nsteps: " + nested(3000) + "\n"},
         where=("p.yaml",)),
    Case("path", "3000-nested-braces", V, {"p.yaml": "name: t\nsteps: " + "{a: " * 3000 + "}" * 3000 + "\n"},
         where=("p.yaml",)),
    Case("path", "1200-nested-block-mappings", V,
         {"p.yaml": "name: t\nsteps:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(1200)) + " " * 1201 + "x\n"},
         where=("p.yaml",)),
    Case("path", "900-nested-lists-as-a-value", V,
         {"p.yaml": pipe("{id: a, uses: image.title, with: {text: %s}}" % nested(900))}, where=("p.yaml",)),
    Case("path", "alias-bomb", V, {"p.yaml": "name: t\nsteps: " + alias_bomb_flow() + "\n"},
         where=("p.yaml",), expect=("alias",)),
    Case("path", "wide-aliases", V,
         {"p.yaml": "name: t\nbig: &b [%s]\nsteps: [%s]\n" % (", ".join(["x"] * 1000), ", ".join(["*b"] * 200))},
         where=("p.yaml",)),
    Case("path", "recursive-alias", V, {"p.yaml": "name: t\nsteps: &s [*s]\n"}, where=("p.yaml:2",)),
    # many values in under 2 MB: counted from the C parser's events before anything is built
    Case("path", "million-item-flow-list", V, {"p.yaml": "name: t\nsteps: []\nx: [" + ",".join(["1"] * 999_000) + "]\n"},
         where=("p.yaml:3",), expect=("more than 30,000 values",)),
    Case("path", "660k-empty-mappings", V, {"p.yaml": "name: t\nsteps: []\nx: [" + ",".join(["{}"] * 660_000) + "]\n"},
         where=("p.yaml:3",), expect=("more than 30,000 values",)),
    Case("path", "660k-aliases", V,
         {"p.yaml": "name: t\nsteps: []\na: &a 1\nx: [" + ",".join(["*a"] * 660_000) + "]\n"},
         where=("p.yaml:4",), expect=("more than 30,000 values",)),
    Case("path", "20k-block-steps", V, {"p.yaml": "name: t\nsteps:\n" + "".join(f"  - {{id: s{i}, uses: image.title, with: {{text: hi}}}}\n"
                                                  for i in range(20_000))},
         where=("p.yaml:",), expect=("more than 30,000 values",)),
    Case("path", "3000-steps-under-the-value-cap", V,
         {"p.yaml": "name: t\nsteps:\n" + "".join(f"  - {{id: s{i}, uses: image.title, with: {{text: hi}}}}\n"
                                                   for i in range(3000))},
         where=("p.yaml",), expect=("1,000",)),
    Case("path", "python-tag", V, {"p.yaml": "name: !!python/object/apply:os.system ['touch pwned']\nsteps: []\n"},
         where=("p.yaml:1",), expect=("tag",)),
    Case("path", "unknown-local-tag", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: !evil hi}}")},
         where=("p.yaml:3",)),
    Case("path", "binary-tag-as-text", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: !!binary aGVsbG8=}}")},
         where=("p.yaml:3", "steps[0].with.text")),
    Case("path", "unclosed-flow", V, {"p.yaml": "name: t\nsteps: [{id: a, uses: image.title\n"}, where=("p.yaml:",)),
    Case("path", "validate-good-and-bad", ["validate", "good.yaml", "bad.yaml"],
         {"good.yaml": OK_TITLE, "bad.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: 1}}")},
         where=("bad.yaml:3", "steps[0].with.width"), expect=("good.yaml: ok",)),

    # --- values and types: refused the same way everywhere, located ---------------------
    Case("types", "string-for-int-width", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: '64'}}")},
         where=("p.yaml:3", "steps[0].with.width"), expect=("'64'",)),
    Case("types", "string-for-int-step-seed", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, seed: '5'}}")},
         where=("p.yaml:3", "steps[0].with.seed"), expect=("'5'",)),
    Case("types", "string-for-int-in-sweep", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: {width: ['64', '65']}}")},
         where=("p.yaml:3", "steps[0].sweep.width[0]")),
    Case("types", "string-for-top-level-seed", V, {"p.yaml": "name: t\nseed: '5'\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "seed"), expect=("'5'",)),
    Case("types", "fullwidth-digits", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: \uff16\uff14}}")},
         where=("p.yaml:3", "steps[0].with.width")),
    Case("types", "bool-for-int-columns", V, {"p.yaml": pipe(TITLE, "{id: g, uses: image.grid, with: {images: '${steps.a.outputs.image}', columns: true}}")},
         where=("p.yaml:4", "steps[1].with.columns")),
    Case("types", "bool-for-int-font-size", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, font_size: true}}")},
         where=("p.yaml:3", "steps[0].with.font_size")),
    Case("types", "bool-for-top-level-seed", V, {"p.yaml": "name: t\nseed: true\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "seed")),
    Case("types", "bool-for-float", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: a.mid, tail_s: true}}"), "a.mid": midi()},
         where=("p.yaml:3", "steps[0].with.tail_s")),
    Case("types", "float-for-int", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: 64.5}}")},
         where=("p.yaml:3", "steps[0].with.width")),
    Case("types", "huge-int", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: %d}}" % 10**30)},
         where=("p.yaml:3", "steps[0].with.width"), max_output=2000),
    Case("types", "huge-step-seed", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, seed: %d}}" % 2**64)},
         where=("p.yaml:3", "steps[0].with.seed")),
    Case("types", "huge-top-level-seed", V, {"p.yaml": "name: t\nseed: %d\nsteps:\n  - %s\n" % (10**4000, TITLE)},
         where=("p.yaml:2", "seed"), max_output=2000),
    Case("types", "inf-float", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: a.mid, tail_s: .inf}}"), "a.mid": midi()},
         where=("p.yaml:3", "steps[0].with.tail_s")),
    Case("types", "nan-float", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: a.mid, gain_db: .nan}}"), "a.mid": midi()},
         where=("p.yaml:3", "steps[0].with.gain_db")),
    Case("types", "minus-inf-float", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: a.mid, gain_db: -.inf}}"), "a.mid": midi()},
         where=("p.yaml:3", "steps[0].with.gain_db")),
    Case("types", "1e400-for-int", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: 1e400}}")},
         where=("p.yaml:3", "steps[0].with.width")),
    Case("types", "nan-for-int", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, height: .nan}}")},
         where=("p.yaml:3", "steps[0].with.height")),
    Case("types", "nan-for-top-level-seed", V, {"p.yaml": "name: t\nseed: .nan\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "seed")),
    Case("types", "list-for-int", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: [64]}}")},
         where=("p.yaml:3", "steps[0].with.width")),
    Case("types", "list-for-text", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: [a, b]}}")},
         where=("p.yaml:3", "steps[0].with.text")),
    Case("types", "mapping-for-text", V, {"p.yaml": pipe("{id: a, uses: text.template, with: {template: {a: b}}}")},
         where=("p.yaml:3", "steps[0].with.template")),
    Case("types", "date-for-text", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: 2024-01-01}}")},
         where=("p.yaml:3", "steps[0].with.text")),
    Case("types", "null-required-text", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: null}}")},
         where=("p.yaml:3", "steps[0].with.text")),
    Case("types", "null-with", V, {"p.yaml": pipe("{id: a, uses: image.title, with: null}")},
         where=("p.yaml:3", "'text'")),
    Case("types", "null-name", V, {"p.yaml": "name: null\nsteps:\n  - " + TITLE + "\n"}, where=("p.yaml:1", "name")),
    Case("types", "null-steps", V, {"p.yaml": "name: t\nsteps: null\n"}, where=("p.yaml:2", "steps")),
    Case("types", "null-id", V, {"p.yaml": pipe("{id: null, uses: image.title, with: {text: hi}}")},
         where=("p.yaml:3", "steps[0].id")),
    Case("types", "null-uses", V, {"p.yaml": pipe("{id: a, uses: null, with: {text: hi}}")},
         where=("p.yaml:3", "steps[0].uses")),
    Case("types", "null-device", V, {"p.yaml": "name: t\ndevice: null\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "device")),
    Case("types", "null-images", V, {"p.yaml": pipe("{id: g, uses: image.grid, with: {images: null}}")},
         where=("p.yaml:3", "steps[0].with.images")),
    Case("types", "null-in-images", V, {"p.yaml": pipe("{id: g, uses: image.grid, with: {images: [null]}}")},
         where=("p.yaml:3", "steps[0].with.images")),
    Case("types", "null-midi", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: null}}")},
         where=("p.yaml:3", "steps[0].with.midi")),
    Case("types", "empty-text", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: ''}}")},
         where=("p.yaml:3", "steps[0].with.text")),
    Case("types", "100k-char-text-is-truncated", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: %s}}" % ("x" * 100_000))},
         where=("p.yaml:3", "steps[0].with.text"), max_output=5000),
    Case("types", "100k-char-key-is-truncated", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, %s: 1}}" % ("k" * 100_000))},
         where=("p.yaml:3",), max_output=5000),
    Case("types", "100k-char-top-level-key", V, {"p.yaml": OK_TITLE + "%s: 1\n" % ("k" * 100_000)},
         where=("p.yaml:4",), max_output=5000),
    Case("types", "10k-char-step-id", V, {"p.yaml": pipe("{id: %s, uses: image.title, with: {text: hi}}" % ("a" * 10_000))},
         where=("p.yaml:3", "steps[0].id"), max_output=5000),
    Case("types", "100k-char-uses", V, {"p.yaml": pipe("{id: a, uses: %s, with: {text: hi}}" % ("image.t" * 15_000))},
         where=("p.yaml:3", "steps[0].uses"), max_output=5000),
    Case("types", "10k-char-name", V, {"p.yaml": "name: %s\nsteps:\n  - %s\n" % ("n" * 10_000, TITLE)},
         where=("p.yaml:1", "name"), max_output=5000),
    Case("types", "steps-as-a-mapping", V, {"p.yaml": "name: t\nsteps:\n  a: {uses: image.title}\n"},
         where=("p.yaml:2", "steps")),
    Case("types", "empty-steps", V, {"p.yaml": "name: t\nsteps: []\n"}, where=("p.yaml:2", "steps")),
    Case("types", "null-step", V, {"p.yaml": "name: t\nsteps:\n  - null\n"}, where=("p.yaml:3", "steps[0]")),
    Case("types", "string-step", V, {"p.yaml": "name: t\nsteps:\n  - a\n"}, where=("p.yaml:3", "steps[0]")),
    Case("types", "list-step", V, {"p.yaml": "name: t\nsteps:\n  - []\n"}, where=("p.yaml:3", "steps[0]")),
    Case("types", "empty-step", V, {"p.yaml": "name: t\nsteps:\n  - {}\n"}, where=("p.yaml:3", "steps[0]")),
    Case("types", "1000-steps", V, {"p.yaml": many_steps(1000)}, code=0, expect=("ok",)),
    Case("types", "1200-step-reference-chain", V, {"p.yaml": many_steps(1200, chain=True)}, code=ANY),
    Case("types", "1200-step-reference-chain-plan", P, {"p.yaml": many_steps(1200, chain=True)}, code=ANY),
    Case("types", "5000-steps", V, {"p.yaml": many_steps(5000)}, code=ANY),
    Case("types", "description-mapping", V, {"p.yaml": "name: t\ndescription: {a: b}\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "description")),
    Case("types", "step-description-list", V, {"p.yaml": pipe("{id: a, uses: image.title, description: [x], with: {text: hi}}")},
         where=("p.yaml:3", "steps[0].description")),
    Case("types", "complex-key-top-level", V, {"p.yaml": OK_TITLE + "? [a, b]\n: c\n"}, where=("p.yaml:4",)),
    Case("types", "complex-key-in-with", V, {"p.yaml": "name: t\nsteps:\n  - id: a\n    uses: image.title\n    with:\n"
                                                       "      text: hi\n      ? {x: 1}\n      : 2\n"},
         where=("p.yaml:7",)),
    Case("types", "int-key-in-with", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, 1: 2}}")},
         where=("p.yaml:3", "'a'")),
    Case("types", "null-key-top-level", V, {"p.yaml": OK_TITLE + "~: 5\n"}, where=("p.yaml:4",)),
    Case("types", "yes-key-in-with", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, yes: 1}}")},
         where=("p.yaml:3", "'a'")),
    Case("types", "duplicate-step-through-alias", V, {"p.yaml": "name: t\nsteps:\n  - &s " + TITLE + "\n  - *s\n"},
         where=("p.yaml:4", "steps[1]"), expect=("duplicate",)),
    Case("types", "duplicate-key-in-with", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, text: ho}}")},
         where=("p.yaml:3",), expect=("duplicate",)),
    Case("types", "device-cuda-99999999999", V, {"p.yaml": "name: t\ndevice: cuda:99999999999\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "device")),
    Case("types", "device-cuda-minus-1", V, {"p.yaml": "name: t\ndevice: cuda:-1\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "device")),
    Case("types", "device-trailing-newline", V, {"p.yaml": "name: t\ndevice: \"cpu\\n\"\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "device")),
    Case("types", "name-trailing-newline", V, {"p.yaml": "name: \"t\\n\"\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:1", "name")),
    Case("types", "step-id-trailing-newline", V, {"p.yaml": pipe("{id: \"a\\n\", uses: image.title, with: {text: hi}}")},
         where=("p.yaml:3", "steps[0].id")),
    Case("types", "precision-list", V, {"p.yaml": "name: t\nprecision: [fp32]\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "precision")),
    Case("types", "compile-string", V, {"p.yaml": "name: t\ncompile: 'yes'\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "compile")),
    Case("types", "uses-a-list", V, {"p.yaml": pipe("{id: a, uses: [image.title], with: {text: hi}}")},
         where=("p.yaml:3", "steps[0].uses")),

    # --- unicode tricks --------------------------------------------------------------
    Case("unicode", "cyrillic-a-in-step-id", V, {"p.yaml": pipe("{id: \u0430, uses: image.title, with: {text: hi}}")},
         where=("p.yaml:3", "steps[0].id")),
    Case("unicode", "zero-width-space-in-step-id", V, {"p.yaml": pipe("{id: \"a\u200b\", uses: image.title, with: {text: hi}}")},
         where=("p.yaml:3", "steps[0].id")),
    Case("unicode", "rtl-override-in-name", V, {"p.yaml": "name: \"t\u202egnp.exe\"\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:1", "name")),
    Case("unicode", "cyrillic-i-in-parameter", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, w\u0456dth: 64}}")},
         where=("p.yaml:3", "'a'"), expect=("width",)),
    Case("unicode", "dotless-name-dots", V, {"p.yaml": "name: ..\nsteps:\n  - " + TITLE + "\n"}, where=("p.yaml:1", "name")),
    Case("unicode", "emoji-and-rtl-text-is-fine", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: \"\U0001F3A8 \u202eabc \u0645\u0631\u062d\u0628\u0627\"}}")},
         code=0, expect=("ok",)),
    Case("unicode", "emoji-and-rtl-text-runs", ["run", "p.yaml", "-q"],
         {"p.yaml": pipe("{id: a, uses: image.title, with: {text: \"\U0001F3A8 \u202eabc \u0645\u0631\u062d\u0628\u0627 \u0301\u0301\u0301\", width: 64, height: 64}}")},
         code=0, check=title_png_written, budget_s=20),

    # --- references -------------------------------------------------------------------
    Case("refs", "empty-reference", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: '${}'}}")},
         where=("p.yaml:3", "steps[0].with.text")),
    Case("refs", "empty-step-in-reference", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '${steps..outputs.text}'}}")},
         where=("p.yaml:4", "steps[1].with.template")),
    Case("refs", "unterminated-reference", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: 'x ${steps.a.outputs.text'}}")},
         where=("p.yaml:4", "steps[1].with.template")),
    Case("refs", "unterminated-reference-in-media", V, {"p.yaml": pipe(TITLE, "{id: b, uses: image.resize, with: {image: '${steps.a.outputs.image', width: 8}}")},
         where=("p.yaml:4", "steps[1].with.image")),
    Case("refs", "nested-reference", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '${${steps.a.outputs.text}}'}}")},
         where=("p.yaml:4", "steps[1].with.template")),
    Case("refs", "port-with-a-dot", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '${steps.a.outputs.text.x}'}}")},
         where=("p.yaml:4", "steps[1].with.template")),
    Case("refs", "escaped-reference-is-fine", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '$${steps.a.outputs.text}'}}")},
         code=0),
    Case("refs", "spaces-inside-reference-are-fine", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '${ steps.a.outputs.text }'}}")},
         code=0),
    Case("refs", "reference-in-zip", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, zip: {template: ['${steps.a.outputs.text}']}}")},
         where=("p.yaml:4", "steps[1].zip.template")),
    Case("refs", "missing-step-in-sweep", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, sweep: {template: ['${steps.nope.outputs.text}', x]}}")},
         where=("p.yaml:4", "steps[1].sweep.template")),
    Case("refs", "reference-in-list-param", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.gpt, with: {prompt: hi, stop: ['${steps.a.outputs.text}']}}")},
         where=("p.yaml:4", "steps[1].with.stop"), torch=True),
    Case("refs", "missing-step-in-list-param", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.gpt, with: {prompt: hi, stop: ['${steps.nope.outputs.text}']}}")},
         where=("p.yaml:4", "steps[1].with.stop"), expect=("nope",), torch=True),
    Case("refs", "reference-in-dict-param-run", R, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '[{x}]', vars: {x: '${steps.a.outputs.text}'}}}")},
         code=ANY, check=vars_ref_resolved_or_refused),
    Case("refs", "missing-step-in-dict-param", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '{x}', vars: {x: '${steps.nope.outputs.text}'}}}")},
         where=("p.yaml:4", "steps[1].with.vars"), expect=("nope",)),
    Case("refs", "missing-step-in-media-list", V, {"p.yaml": pipe(TITLE, "{id: g, uses: image.grid, with: {images: ['${steps.a.outputs.image}', '${steps.nope.outputs.image}']}}")},
         where=("p.yaml:4", "steps[1].with.images"), expect=("nope",)),
    Case("refs", "self-reference", V, {"p.yaml": pipe("{id: a, uses: text.template, with: {template: '${steps.a.outputs.text}'}}")},
         where=("p.yaml:3", "'a'"), expect=("cycle",)),
    Case("refs", "three-step-cycle", P, {"p.yaml": pipe(*[
        "{id: %s, uses: text.template, with: {template: '${steps.%s.outputs.text}'}}" % (s, n)
        for s, n in (("a", "c"), ("b", "a"), ("c", "b"))])}, expect=("cycle",), where=("p.yaml:",)),
    Case("refs", "reference-in-int", V, {"p.yaml": pipe(TPL, "{id: b, uses: image.title, with: {text: hi, width: '${steps.a.outputs.text}'}}")},
         where=("p.yaml:4", "steps[1].with.width")),
    Case("refs", "reference-inside-media-string", V, {"p.yaml": pipe(TITLE, "{id: b, uses: image.resize, with: {image: 'x ${steps.a.outputs.image}', width: 8}}")},
         where=("p.yaml:4", "steps[1].with.image")),
    Case("refs", "reference-as-name", V, {"p.yaml": "name: '${steps.a.outputs.text}'\nsteps:\n  - " + TPL + "\n"},
         where=("p.yaml:1", "name")),
    Case("refs", "reference-as-uses", V, {"p.yaml": pipe(TPL, "{id: b, uses: '${steps.a.outputs.text}'}")},
         where=("p.yaml:4", "steps[1].uses")),
    Case("refs", "reference-as-key", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: x, '${steps.a.outputs.text}': 1}}")},
         where=("p.yaml:4", "'b'")),
    Case("refs", "uppercase-step-in-reference", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '${steps.A.outputs.text}'}}")},
         where=("p.yaml:4", "steps[1].with.template")),
    Case("refs", "wrong-media-type", V, {"p.yaml": pipe(TPL, "{id: b, uses: image.resize, with: {image: '${steps.a.outputs.text}', width: 8}}")},
         where=("p.yaml:4", "steps[1].with.image"), expect=("image",)),
    Case("refs", "500-references-in-one-string", V, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: '%s'}}" % (" ${steps.a.outputs.text}" * 500))},
         code=0),
    Case("refs", "unterminated-at-run", R, {"p.yaml": pipe(TPL, "{id: b, uses: text.template, with: {template: 'x ${steps.a.outputs.text'}}")},
         where=("p.yaml:4", "steps[1].with.template"), budget_s=BUDGET_S),

    # --- media inputs: sniffed by content, bounded, located ---------------------------
    Case("media", "etc-passwd-by-traversal", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: ../../../../../../../../etc/passwd, width: 8}}")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "etc-passwd-absolute", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: /etc/passwd, width: 8}}")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "etc-passwd-named-png", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: passwd.png, width: 8}}"),
                                              "passwd.png": symlink("/etc/passwd")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "dev-zero-as-image", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: /dev/zero, width: 8}}")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "dev-zero-named-png", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: zero.png, width: 8}}"),
                                            "zero.png": symlink("/dev/zero")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "directory-as-image", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: d.png, width: 8}}"), "d.png": directory},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "symlink-loop-as-image", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: loop.png, width: 8}}"),
                                               "loop.png": symlink("loop.png")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "fifo-as-image", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: f.png, width: 8}}"), "f.png": fifo},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "fifo-as-image-run", R, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: f.png, width: 8}}"), "f.png": fifo},
         where=("p.yaml:3", "steps[0].with.image"), budget_s=BUDGET_S),
    Case("media", "zero-byte-png", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: e.png, width: 8}}"), "e.png": b""},
         where=("p.yaml:3", "steps[0].with.image", "e.png")),
    Case("media", "zero-byte-png-run", R, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: e.png, width: 8}}"), "e.png": b""},
         where=("p.yaml:3", "steps[0].with.image", "e.png"), budget_s=BUDGET_S),
    Case("media", "truncated-png", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: t.png, width: 8}}"), "t.png": png(64, 64)[:60]},
         where=("p.yaml:3", "steps[0].with.image", "t.png")),
    Case("media", "text-named-png", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: n.png, width: 8}}"), "n.png": "hello\n"},
         where=("p.yaml:3", "steps[0].with.image", "n.png")),
    Case("media", "wav-named-png", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: w.png, width: 8}}"), "w.png": wav()},
         where=("p.yaml:3", "steps[0].with.image", "w.png")),
    Case("media", "png-declaring-100000x100000", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: bomb.png, width: 8}}"),
                                                     "bomb.png": png_declaring(100_000, 100_000)},
         where=("p.yaml:3", "steps[0].with.image", "bomb.png")),
    Case("media", "png-declaring-100000x100000-run", R, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: bomb.png, width: 8}}"),
                                                         "bomb.png": png_declaring(100_000, 100_000)},
         where=("p.yaml:3", "steps[0].with.image", "bomb.png"), budget_s=BUDGET_S),
    Case("media", "png-declaring-20000x20000-in-grid", V, {"p.yaml": pipe("{id: g, uses: image.grid, with: {images: [ok.png, bomb.png]}}"),
                                                           "ok.png": png(), "bomb.png": png_declaring(20_000, 20_000)},
         where=("p.yaml:3", "steps[0].with.images[1]", "bomb.png")),
    Case("media", "png-named-jpg-is-fine", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: real.jpg, width: 8}}"), "real.jpg": png()},
         code=0),
    Case("media", "upper-case-extension-is-fine", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: real.PNG, width: 8}}"), "real.PNG": png()},
         code=0),
    Case("media", "garbage-named-jpg", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: g.jpg, width: 8}}"), "g.jpg": b"\xff\xd8\xff" + b"\x00" * 20},
         where=("p.yaml:3", "steps[0].with.image", "g.jpg")),
    Case("media", "png-named-mid", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: p.mid}}"), "p.mid": png()},
         where=("p.yaml:3", "steps[0].with.midi", "p.mid")),
    Case("media", "zero-byte-mid", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: e.mid}}"), "e.mid": b""},
         where=("p.yaml:3", "steps[0].with.midi", "e.mid")),
    Case("media", "garbage-mid", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: g.mid}}"), "g.mid": b"MThd\x00\x00\x00\x06garbage!" * 3},
         where=("p.yaml:3", "steps[0].with.midi", "g.mid")),
    Case("media", "truncated-mid", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: t.mid}}"), "t.mid": midi([(i * 96, 96, 60) for i in range(50)])[:40]},
         where=("p.yaml:3", "steps[0].with.midi", "t.mid")),
    Case("media", "mid-with-no-notes", V, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: silent.mid}}"), "silent.mid": midi([])},
         where=("p.yaml:3", "steps[0].with.midi", "silent.mid"), expect=("note",)),
    Case("media", "mid-with-no-notes-run", R, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: silent.mid, synthesizer: builtin}}"), "silent.mid": midi([])},
         where=("silent.mid",), expect=("note",)),
    Case("media", "png-named-wav", V, {"p.yaml": pipe("{id: v, uses: audio.vae, with: {mode: reconstruct, audio: p.wav}}"), "p.wav": png()},
         where=("p.yaml:3", "steps[0].with.audio", "p.wav"), torch=True),
    Case("media", "truncated-wav", V, {"p.yaml": pipe("{id: v, uses: audio.vae, with: {mode: reconstruct, audio: t.wav}}"), "t.wav": wav()[:30]},
         where=("p.yaml:3", "steps[0].with.audio", "t.wav"), torch=True),
    Case("media", "zero-byte-wav", V, {"p.yaml": pipe("{id: v, uses: audio.vae, with: {mode: reconstruct, audio: e.wav}}"), "e.wav": b""},
         where=("p.yaml:3", "steps[0].with.audio", "e.wav"), torch=True),
    Case("media", "nul-in-input-path", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: \"a\\0b.png\", width: 8}}")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "5000-char-input-path", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: %s.png, width: 8}}" % ("d/" * 2500))},
         where=("p.yaml:3", "steps[0].with.image"), max_output=8000),
    Case("media", "300-char-file-name", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: %s.png, width: 8}}" % ("n" * 300))},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "pipeline-as-its-own-image", V, {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: p.yaml, width: 8}}")},
         where=("p.yaml:3", "steps[0].with.image")),
    Case("media", "valid-png-resizes", ["run", "p.yaml", "-q"], {"p.yaml": pipe("{id: a, uses: image.resize, with: {image: in.png, width: 16}}"), "in.png": png()},
         code=0, check=lambda tmp, out, code: title_png_written(tmp, out, code), budget_s=20),

    # --- resource caps at run time (torch-free generators) ----------------------------
    Case("caps", "midi-note-at-100000-s", R, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: far.mid, synthesizer: builtin}}"),
                                              "far.mid": midi([(0, 96, 60), (19_200_000, 96, 64)])},
         where=("'r'",), budget_s=20, max_rss_mb=1500, writes="any"),
    Case("caps", "midi-absurd-tempo", R, {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: slow.mid, synthesizer: builtin}}"),
                                          "slow.mid": midi([(0, 1, 60), (20_000, 1, 64)], ppq=1, tempo=0xFFFFFF)},
         where=("'r'",), budget_s=20, max_rss_mb=1500, writes="any"),
    Case("caps", "grid-1000-inputs-cell-2048", R, {"p.yaml": pipe(
        "{id: a, uses: image.title, with: {text: x, width: 16, height: 16}, sweep: {seed: [%s]}}" % ", ".join(map(str, range(1000))),
        "{id: sheet, uses: image.grid, with: {images: '${steps.a.outputs.image}', cell_size: 2048}}")},
         where=("sheet",), expect=("cell_size",), budget_s=60, max_rss_mb=1500, writes="any"),
    Case("caps", "diffusion-4096px-x-1000-steps-on-cpu", V, {"p.yaml": "name: t\ndevice: cpu\nsteps:\n"
                                                               "  - {id: d, uses: image.diffusion, with: {width: 4096, height: 4096, steps: 1000}}\n"},
         where=("p.yaml:4", "'d'"), torch=True),
    Case("caps", "diffusion-2048px-x-1000-steps-on-cpu", V, {"p.yaml": "name: t\ndevice: cpu\nsteps:\n"
                                                               "  - {id: d, uses: image.diffusion, with: {width: 2048, height: 2048, steps: 1000}}\n"},
         where=("p.yaml:4", "'d'"), torch=True),
    Case("caps", "diffusion-1024px-sweep-x-1000-steps-on-cpu", V, {"p.yaml": "name: t\ndevice: cpu\nsteps:\n"
                                                                     "  - {id: d, uses: image.diffusion, with: {width: 1024, height: 1024, steps: 1000}, sweep: {seed: [1, 2, 3, 4, 5, 6, 7, 8]}}\n"},
         where=("p.yaml:4", "'d'"), torch=True),
    Case("caps", "valid-midi-renders", ["run", "p.yaml", "-q"], {"p.yaml": pipe("{id: r, uses: audio.render, with: {midi: ode.mid, synthesizer: builtin, sample_rate: 8000}}"),
                                                                 "ode.mid": ODE.read_bytes()},
         code=0, check=wav_written, budget_s=30, max_rss_mb=1500),

    # --- validate checks what it can know: templates, colours, models -----------------
    Case("checks", "template-placeholder-without-value", V, {"p.yaml": pipe("{id: a, uses: text.template, with: {template: 'Hi {name}', vars: {other: x}}}")},
         where=("p.yaml:3", "steps[0].with"), expect=("name",)),
    Case("checks", "template-attribute-placeholder", V, {"p.yaml": pipe("{id: a, uses: text.template, with: {template: '{x.__class__.__mro__}', vars: {x: a}}}")},
         where=("p.yaml:3", "steps[0].with")),
    Case("checks", "template-bad-brace", V, {"p.yaml": pipe("{id: a, uses: text.template, with: {template: 'a { b', vars: {x: a}}}")},
         where=("p.yaml:3", "steps[0].with")),
    Case("checks", "title-unknown-background", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, background: notacolour}}")},
         where=("p.yaml:3", "steps[0].with.background"), expect=("notacolour",)),
    Case("checks", "title-unknown-text-colour", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, color: blurple}}")},
         where=("p.yaml:3", "steps[0].with.color"), expect=("blurple",)),
    Case("checks", "title-bad-hex-colour", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, background: '#12345'}}")},
         where=("p.yaml:3", "steps[0].with.background")),
    Case("checks", "title-colour-in-sweep", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi}, sweep: {background: [red, nope]}}")},
         where=("p.yaml:3", "steps[0].sweep.background[1]")),
    Case("checks", "grid-unknown-background", V, {"p.yaml": pipe(TITLE, "{id: g, uses: image.grid, with: {images: '${steps.a.outputs.image}', background: nope}}")},
         where=("p.yaml:4", "steps[1].with.background")),
    Case("checks", "title-unknown-background-run", R, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, background: notacolour}}")},
         where=("p.yaml:3", "steps[0].with.background"), budget_s=BUDGET_S),
    Case("checks", "class-label-out-of-range", V, {"p.yaml": pipe(f"{{id: d, uses: image.diffusion, with: {{{DIGITS}, class_label: 10}}}}")},
         where=("p.yaml:3", "steps[0].with.class_label"), torch=True),
    Case("checks", "class-label-unknown-name", V, {"p.yaml": pipe(f"{{id: d, uses: image.diffusion, with: {{{DIGITS}, class_label: cat}}}}")},
         where=("p.yaml:3", "steps[0].with.class_label"), expect=("cat",), torch=True),
    Case("checks", "class-label-negative", V, {"p.yaml": pipe(f"{{id: d, uses: image.diffusion, with: {{{DIGITS}, class_label: -1}}}}")},
         where=("p.yaml:3", "steps[0].with.class_label"), torch=True),
    Case("checks", "class-label-in-sweep", V, {"p.yaml": pipe(f"{{id: d, uses: image.diffusion, with: {{{DIGITS}}}, sweep: {{class_label: [1, 2, 42]}}}}")},
         where=("p.yaml:3", "steps[0].sweep.class_label[2]"), torch=True),
    Case("checks", "class-label-name-is-fine", V, {"p.yaml": pipe(f"{{id: d, uses: image.diffusion, with: {{{DIGITS}, class_label: '3'}}}}")},
         code=0, torch=True),
    Case("checks", "max-new-tokens-beyond-context", V, {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, max_new_tokens: 4000}}")},
         where=("p.yaml:3", "steps[0].with.max_new_tokens"), expect=("256",), torch=True),
    Case("checks", "max-new-tokens-equal-to-context", V, {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, max_new_tokens: 256}}")},
         where=("p.yaml:3", "steps[0].with.max_new_tokens"), torch=True),
    Case("checks", "max-new-tokens-fits", V, {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, max_new_tokens: 100}}")},
         code=0, torch=True),

    # --- model paths (validate only: it answers at once) ------------------------------
    Case("models", "model-root", V, {"p.yaml": pipe("{id: d, uses: image.diffusion, with: {model: /}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-usr", V, {"p.yaml": pipe("{id: d, uses: image.diffusion, with: {model: /usr}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-root-run", R, {"p.yaml": pipe("{id: d, uses: image.diffusion, with: {model: /}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True, budget_s=BUDGET_S),
    Case("models", "model-etc-passwd", V, {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, model: /etc/passwd}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-dev-zero", V, {"p.yaml": pipe("{id: g, uses: image.gan, with: {model: /dev/zero}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-fifo", V, {"p.yaml": pipe("{id: v, uses: audio.vae, with: {model: ./f}}"), "f": fifo},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-symlink-loop", V, {"p.yaml": pipe("{id: m, uses: music.transformer, with: {model: ./loop}}"), "loop": symlink("loop")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-empty-directory", V, {"p.yaml": pipe("{id: s, uses: style.cyclegan, with: {image: in.png, model: ./empty}}"),
                                                "in.png": png(), "empty": directory},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-missing-relative", V, {"p.yaml": pipe("{id: g, uses: image.gan, with: {model: ./models/nope}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-traversal", V, {"p.yaml": pipe("{id: g, uses: image.gan, with: {model: ../../../../../../../../etc}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-empty-string", V, {"p.yaml": pipe("{id: g, uses: image.gan, with: {model: ''}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-with-nul", V, {"p.yaml": pipe("{id: g, uses: image.gan, with: {model: \"./a\\0b\"}}")},
         where=("p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-relative-to-pipeline-file", ["validate", "sub/p.yaml"],
         {"sub/p.yaml": pipe("{id: g, uses: image.gan, with: {model: ./models/gan}}"), "sub/models/gan": copy_of(WEIGHTS["gan"])},
         code=0, torch=True),
    Case("models", "model-not-relative-to-cwd", ["validate", "sub/p.yaml"],
         {"sub/p.yaml": pipe("{id: g, uses: image.gan, with: {model: ./models/gan}}"), "models/gan": copy_of(WEIGHTS["gan"])},
         where=("sub/p.yaml:3", "steps[0].with.model"), torch=True),
    Case("models", "model-relative-to-pipeline-file-run", ["run", "sub/p.yaml", "-q"],
         {"sub/p.yaml": pipe("{id: g, uses: image.gan, with: {model: models/gan}}"), "sub/models/gan": copy_of(WEIGHTS["gan"])},
         code=0, torch=True, budget_s=40, max_rss_mb=2500),

    # --- checkpoints that would run code: refused in Studio's words, exit 2 ------------
    Case("checkpoints", "pickle-pth-with-code", ["run", "p.yaml"], {"p.yaml": pipe("{id: s, uses: style.cyclegan, with: {image: in.png, model: evil.pth}}"),
                                                                    "in.png": png(32, 32), "evil.pth": pickle_with_code},
         where=("'s'", "evil.pth"), torch=True, budget_s=40, max_rss_mb=2500, writes="any"),
    Case("checkpoints", "bin-where-safetensors-expected", ["run", "p.yaml"], {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, model: gpt, max_new_tokens: 4}}"),
                                                                             "gpt": copy_of(WEIGHTS["gpt"], gpt_with_bin)},
         where=("'g'",), torch=True, budget_s=40, max_rss_mb=2500, writes="any"),
    Case("checkpoints", "config-auto-map", ["run", "p.yaml"], {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, model: gpt, max_new_tokens: 4}}"),
                                                               "gpt": copy_of(WEIGHTS["gpt"], gpt_with_auto_map)},
         where=("'g'",), expect=("auto_map",), torch=True, budget_s=40, max_rss_mb=2500, writes="any"),
    Case("checkpoints", "tokenizer-auto-map", ["run", "p.yaml"], {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, model: gpt, max_new_tokens: 4}}"),
                                                                  "gpt": copy_of(WEIGHTS["gpt"], gpt_tokenizer_auto_map)},
         where=("'g'",), torch=True, budget_s=40, max_rss_mb=2500, writes="any"),
    Case("checkpoints", "config-trust-remote-code", ["run", "p.yaml"], {"p.yaml": pipe("{id: g, uses: text.gpt, with: {prompt: hi, model: gpt, max_new_tokens: 4}}"),
                                                                        "gpt": copy_of(WEIGHTS["gpt"], gpt_trust_remote_code)},
         where=("'g'",), torch=True, budget_s=40, max_rss_mb=2500, writes="any"),
    Case("checkpoints", "diffusion-custom-pipeline-class", ["run", "p.yaml"], {"p.yaml": pipe("{id: d, uses: image.diffusion, with: {model: diff, steps: 2}}"),
                                                                               "diff": copy_of(WEIGHTS["diffusion"], diffusion_custom_pipeline)},
         where=("'d'",), torch=True, budget_s=40, max_rss_mb=2500, writes="any"),

    # --- --set: the same limits as pipeline files, echoes truncated -------------------
    Case("set", "no-equals", P + ["--set", "oops"], {"p.yaml": OK_TITLE}, where=("--set", "oops"), expect=("STEP.PARAM=VALUE",)),
    Case("set", "empty-key", P + ["--set", "=5"], {"p.yaml": OK_TITLE}, where=("--set",), expect=("STEP.PARAM=VALUE",)),
    Case("set", "empty-param", P + ["--set", "a.=5"], {"p.yaml": OK_TITLE}, where=("--set",)),
    Case("set", "no-dot", P + ["--set", "a=5"], {"p.yaml": OK_TITLE}, where=("--set",)),
    Case("set", "unknown-step", P + ["--set", "nope.width=64"], {"p.yaml": OK_TITLE}, where=("--set nope.width=64",), expect=("nope",)),
    Case("set", "unknown-param", P + ["--set", "a.wdth=64"], {"p.yaml": OK_TITLE}, where=("--set a.wdth=64",), expect=("width",)),
    Case("set", "bad-value-on-run", R + ["--set", "a.width=big"], {"p.yaml": OK_TITLE}, where=("--set a.width=big", "steps[0].with.width"),
         budget_s=BUDGET_S),
    Case("set", "string-for-int", P + ["--set", "a.width='64'"], {"p.yaml": OK_TITLE}, where=("--set", "steps[0].with.width")),
    Case("set", "inf-for-int", P + ["--set", "a.width=.inf"], {"p.yaml": OK_TITLE}, where=("--set", "steps[0].with.width")),
    Case("set", "negative-seed", P + ["--set", "a.seed=-1"], {"p.yaml": OK_TITLE}, where=("--set", "steps[0].with.seed")),
    Case("set", "huge-seed", P + ["--set", "a.seed=%d" % 10**50], {"p.yaml": OK_TITLE}, where=("--set", "steps[0].with.seed")),
    Case("set", "alias-bomb", P + ["--set", "a.text=" + alias_bomb_flow()], {"p.yaml": OK_TITLE}, where=("--set",),
         max_output=5000),
    # what a message repeats from the user cannot drive the terminal (escape injection)
    Case("set", "escape-sequence-in-the-key", P + ["--set", "a\x1b]0;PWN\x07.text=1"], {"p.yaml": OK_TITLE},
         where=("--set",), expect=("\\x1b]0;PWN\\x07",), check=lambda tmp, out, code: no_terminal_controls(out)),
    Case("set", "bidi-override-in-the-value", P + ["--set", "a.width=\u202eevil"], {"p.yaml": OK_TITLE},
         where=("--set",), check=lambda tmp, out, code: no_terminal_controls(out)),
    Case("path", "escape-sequence-in-the-file-name", ["validate", "\x1b[31mp.yaml"], {"\x1b[31mp.yaml": OK_TITLE},
         code=0, expect=("\\x1b[31mp.yaml: ok",), check=lambda tmp, out, code: no_terminal_controls(out)),
    Case("path", "escape-sequence-in-a-missing-file-name", ["run", "\x1b[2Jp.yaml"], where=("\\x1b[2Jp.yaml",),
         check=lambda tmp, out, code: no_terminal_controls(out)),
    Case("set", "3000-nested-brackets", P + ["--set", "a.text=" + nested(3000)], {"p.yaml": OK_TITLE}, where=("--set",),
         max_output=5000),
    Case("set", "3000-nested-braces", P + ["--set", "a.text=" + "{a: " * 3000 + "}" * 3000], {"p.yaml": OK_TITLE},
         where=("--set",), max_output=5000),
    Case("set", "120-kb-value-is-truncated", P + ["--set", "a.text=" + "x" * 120_000], {"p.yaml": OK_TITLE},
         where=("--set",), max_output=5000),
    Case("set", "esc-byte", P + ["--set", "a.text=h\x1b[31mi"], {"p.yaml": OK_TITLE}, where=("--set",)),
    Case("set", "python-tag", P + ["--set", "a.text=!!python/object/apply:os.system ['touch pwned']"], {"p.yaml": OK_TITLE},
         where=("--set",)),
    Case("set", "missing-step-reference", P + ["--set", "a.text=${steps.nope.outputs.text}"], {"p.yaml": OK_TITLE},
         where=("--set",), expect=("nope",)),
    Case("set", "unicode-step", P + ["--set", "\u0430.width=64"], {"p.yaml": OK_TITLE}, where=("--set",)),
    Case("set", "sweep-through-set-is-a-param", P + ["--set", "a.sweep=[1, 2]"], {"p.yaml": OK_TITLE}, where=("--set",)),

    # --- command-line options -----------------------------------------------------------
    Case("cli", "seed-minus-1", R + ["--seed", "-1"], {"p.yaml": OK_TITLE}, where=("--seed",), budget_s=BUDGET_S),
    Case("cli", "seed-huge", R + ["--seed", str(2**64)], {"p.yaml": OK_TITLE}, where=("--seed",), budget_s=BUDGET_S),
    Case("cli", "seed-huge-plan", P + ["--seed", "9" * 5000], {"p.yaml": OK_TITLE}, where=("--seed",), max_output=5000),
    Case("cli", "device-cuda-abc", R + ["--device", "cuda:abc"], {"p.yaml": OK_TITLE}, where=("--device",), budget_s=BUDGET_S),
    Case("cli", "device-cuda-99999999999", R + ["--device", "cuda:99999999999"], {"p.yaml": OK_TITLE}, where=("--device",),
         budget_s=BUDGET_S),
    Case("cli", "device-with-newline", R + ["--device", "cpu\n"], {"p.yaml": OK_TITLE}, where=("--device",), budget_s=BUDGET_S),
    Case("cli", "max-ram-gb-0", R + ["--max-ram-gb", "0"], {"p.yaml": OK_TITLE}, where=("--max-ram-gb",), budget_s=BUDGET_S),
    Case("cli", "max-ram-gb-nan", R + ["--max-ram-gb", "nan"], {"p.yaml": OK_TITLE}, where=("--max-ram-gb",), budget_s=BUDGET_S),
    Case("cli", "max-ram-gb-inf", R + ["--max-ram-gb", "inf"], {"p.yaml": OK_TITLE}, where=("--max-ram-gb",), budget_s=BUDGET_S),
    Case("cli", "max-vram-gb-negative", R + ["--max-vram-gb", "-1"], {"p.yaml": OK_TITLE}, where=("--max-vram-gb",), budget_s=BUDGET_S),
    Case("cli", "precision-fp8", R + ["--precision", "fp8"], {"p.yaml": OK_TITLE}, where=("--precision",), budget_s=BUDGET_S),
    Case("cli", "validate-without-files", ["validate"], where=("PIPELINE",)),
    Case("cli", "unknown-command", ["frobnicate"], where=("frobnicate",)),
    Case("cli", "plan-json-bad-pipeline", P + ["--json"], {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: 1}}")},
         where=("p.yaml:3", "steps[0].with.width")),
    Case("cli", "run-valid-title", ["run", "p.yaml", "-q"], {"p.yaml": OK_TITLE}, code=0, check=title_png_written, budget_s=20),

    # --- the file system around a run (a few; the rest live with the runner's tests) ----
    Case("fs", "out-is-a-file", R + ["--out", "out.txt"], {"p.yaml": OK_TITLE, "out.txt": "x"}, where=("out.txt",),
         budget_s=BUDGET_S, writes="any"),
    Case("fs", "out-below-a-file", R + ["--out", "out.txt/sub"], {"p.yaml": OK_TITLE, "out.txt": "x"}, where=("out.txt",),
         expect=("out.txt is a file, not a folder",), budget_s=BUDGET_S, writes="any"),
    Case("fs", "run-name-is-a-file", R, {"p.yaml": OK_TITLE, "runs/t": "x"}, where=("runs/t",),
         expect=("is a file, not a folder", "move it away"), budget_s=BUDGET_S, writes="any"),
    Case("fs", "out-dev-null", R + ["--out", "/dev/null"], {"p.yaml": OK_TITLE}, where=("/dev/null",), budget_s=BUDGET_S,
         writes="any"),
    Case("fs", "out-in-proc", R + ["--out", "/proc/studio-out"], {"p.yaml": OK_TITLE}, where=("/proc/studio-out",),
         expect=("Give --out a folder you can write to",), budget_s=BUDGET_S, writes="any"),
    Case("fs", "run-dir-parent-is-a-dangling-symlink", R, {"p.yaml": OK_TITLE, "runs/t": symlink("/proc/nowhere")},
         where=("runs/t",), expect=("symbolic link to /proc/nowhere, which does not exist",), budget_s=BUDGET_S,
         writes="any"),
    Case("types", "5000-digit-seed", V, {"p.yaml": "name: t\nseed: " + "9" * 5000 + "\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "seed"), expect=("integer from 0",)),
    Case("types", "5000-digit-width", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: %s}}"
                                                         % ("9" * 5000))},
         where=("p.yaml:3", "steps[0].with.width"), expect=("valid integer",)),

    # --- round two: YAML 1.1 surprises, devices, sizes that cost time ------------------
    Case("types", "octal-looking-width", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: 040}}")},
         where=("p.yaml:3", "steps[0].with.width"), expect=("'040'", "valid integer")),
    Case("types", "sexagesimal-looking-width", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: 1:00}}")},
         where=("p.yaml:3", "steps[0].with.width"), expect=("'1:00'",)),
    Case("types", "lone-dot-for-a-number", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: .}}")},
         where=("p.yaml:3", "steps[0].with.width"), expect=("'.'", "valid integer")),
    Case("types", "norway-is-a-word", V, {"p.yaml": pipe("{id: a, uses: image.title, with: {text: no, width: 32, height: 32}}")},
         code=0, expect=("ok",)),
    Case("types", "yes-for-a-boolean", V, {"p.yaml": pipe("{id: a, uses: image.grid, with: {images: [x.png], labels: yes}}"),
                                            "x.png": png()},
         where=("p.yaml:3", "steps[0].with.labels"), expect=("'yes'", "valid boolean")),
    Case("types", "device-with-leading-zero", V, {"p.yaml": "name: t\ndevice: cuda:00\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "device"), expect=("cuda:00",)),
    Case("types", "device-with-unicode-digit", V, {"p.yaml": "name: t\ndevice: cuda:\u0663\nsteps:\n  - " + TITLE + "\n"},
         where=("p.yaml:2", "device")),
    Case("sweep", "ten-thousand-problems-are-summarised", V, {"p.yaml": pipe(*[
        "{id: s%d, uses: image.title, with: {text: hi}, zip: {width: [%s]}}" % (n, ", ".join(["1"] * 1000))
        for n in range(10)])}, where=("p.yaml:3", "steps[0].zip.width[0]"), expect=("more; fix these first",),
         max_output=30_000),
    Case("media", "png-with-a-million-empty-chunks", V, {
        "p.yaml": pipe("{id: a, uses: image.resize, with: {image: x.png, width: 8}}"),
        "x.png": lambda path, root: path.write_bytes(png()[:33] + _chunk(b"teSt", b"") * 1_000_000 + png()[33:])},
         where=("p.yaml:3", "steps[0].with.image"), expect=("chunks",)),
    Case("media", "midi-over-the-size-limit", V, {
        "p.yaml": pipe("{id: a, uses: audio.render, with: {midi: m.mid}}"),
        "m.mid": lambda path, root: path.write_bytes(_long_midi(3 * 2**20))},
         where=("p.yaml:3", "steps[0].with.midi"), expect=("MB",)),
    Case("media", "midi-with-smpte-time", V, {
        "p.yaml": pipe("{id: a, uses: audio.render, with: {midi: m.mid}}"),
        "m.mid": lambda path, root: path.write_bytes(midi()[:12] + bytes([0xE7, 0x28]) + midi()[14:])},
         where=("p.yaml:3", "steps[0].with.midi"), expect=("SMPTE",)),
    Case("media", "forty-large-webps-in-a-grid", V, {
        "p.yaml": pipe("{id: g, uses: image.grid, with: {images: [%s], cell_size: 16}}"
                       % ", ".join(f"w{i}.webp" for i in range(40))),
        **{f"w{i}.webp": (lambda path, root: _webp(path, root, 8192)) for i in range(40)}},
         code=0, expect=("ok",)),
    Case("refs", "reference-in-an-unknown-parameter", V, {"p.yaml": pipe(
        TITLE, "{id: b, uses: image.resize, with: {imag: '${steps.a.outputs.image}', width: 8}}")},
         where=("p.yaml:4", "steps[1].with.imag"), expect=("unknown parameter 'imag'", "Did you mean 'image'")),
    Case("cli", "pipeline-path-of-6000-characters", ["validate", "x" * 6000 + ".yaml"], {},
         expect=("cannot be read (File name too long)",), max_output=2_000),
    Case("cli", "unknown-generator-name-of-100k-characters", ["plugins", "show", "g." + "x" * 100_000], {},
         expect=("unknown generator",), max_output=2_000),
]


def _long_midi(size: int) -> bytes:
    """A type-0 MIDI of about `size` bytes of running-status notes (built by joining)."""
    body = b"\x00\x3c\x40\x00\x3c\x00" * (size // 6)
    track = b"\x00\x90\x3c\x40" + body + b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 96) + b"MTrk" + struct.pack(">I", len(track)) + track


def _webp(path: Path, root: Path, side: int) -> None:
    """A solid side x side WebP (160 KB); made once per case, then hard-linked."""
    from PIL import Image

    first = root / "first.webp"
    if not first.exists():
        Image.new("RGB", (side, side), "red").save(first, "WEBP", quality=1, method=0)
    os.link(first, path)


@pytest.mark.parametrize("argv, files", [
    (["validate", "p.yaml"], {"p.yaml": pipe("{id: a, uses: image.title, with: {text: hi, width: 040}}")}),
    (["plan", "p.yaml"], {"p.yaml": OK_TITLE}),
    (["run", "p.yaml", "-q"], {"p.yaml": OK_TITLE}),
    (["plugins", "show", "g.nope"], {}),
], ids=["refused", "planned", "ran", "unknown-generator"])
def test_a_forked_command_answers_as_a_fresh_python_m_studio_does(argv, files, tmp_path):
    """The corpus runs forked (run_forked_cli): the same exit code, output and writes as
    the real process (run_cli)."""
    answers = []
    for how, runner in (("real", run_cli), ("forked", run_forked_cli)):
        (tmp_path / how).mkdir()
        make_files(tmp_path / how, files)
        r = runner(argv, tmp_path / how, timeout=60, as_limit=4 * GB)
        assert not r.timed_out and r.rss_mb > 0 and "Traceback" not in r.output, r.output
        written = [p.relative_to(tmp_path / how).parts for p in (tmp_path / how).rglob("*")]
        written = sorted(parts[:2] + parts[3:] for parts in written)  # less the run's timestamped folder
        answers.append((r.code, re.sub(r"runs/t/[^/\s]+", "runs/t/RUN", r.output), written))
    assert answers[0] == answers[1]


def test_corpus_is_large_and_names_are_unique():
    assert len(CASES) >= 110
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


# --- cases a subprocess cannot carry, and cross-parameter consistency ----------------


def test_string_for_an_integer_is_refused_the_same_way_everywhere(tmp_path: Path) -> None:
    """`'7'` where an integer is expected: every parameter says it the same way."""
    (tmp_path / "a.mid").write_bytes(midi())
    params = [  # (line of the step, step yaml, path of the parameter)
        ("{id: a, uses: image.title, with: {text: hi, width: '70'}}", "steps[0].with.width"),
        ("{id: b, uses: image.title, with: {text: hi, font_size: '70'}}", "steps[1].with.font_size"),
        ("{id: c, uses: image.title, with: {text: hi, seed: '70'}}", "steps[2].with.seed"),
        ("{id: d, uses: image.grid, with: {images: '${steps.a.outputs.image}', cell_size: '70'}}", "steps[3].with.cell_size"),
        ("{id: e, uses: image.grid, with: {images: '${steps.a.outputs.image}', padding: '70'}}", "steps[4].with.padding"),
        ("{id: f, uses: image.resize, with: {image: '${steps.a.outputs.image}', width: '70'}}", "steps[5].with.width"),
        ("{id: g, uses: audio.render, with: {midi: a.mid, sample_rate: '70'}}", "steps[6].with.sample_rate"),
        ("{id: h, uses: text.gpt, with: {prompt: hi, max_new_tokens: '70'}}", "steps[7].with.max_new_tokens"),
        ("{id: i, uses: image.diffusion, with: {steps: '70'}}", "steps[8].with.steps"),
        ("{id: j, uses: music.transformer, with: {program: '70'}}", "steps[9].with.program"),
    ]
    (tmp_path / "p.yaml").write_text("name: t\nseed: '70'\n" + "steps:\n" + "".join(f"  - {s}\n" for s, _ in params))
    r = run_cli(["validate", "p.yaml"], tmp_path, timeout=30, as_limit=10 * GB)
    assert "Traceback" not in r.output and r.code == 2, r.output
    lines = r.output.splitlines()
    messages = []
    for i, (_, path) in enumerate(params):
        found = [line for line in lines if f"p.yaml:{4 + i}: {path} " in line]
        assert found, f"{path} ('70' for an integer) was not refused:\n{r.output}"
        assert "'70'" in found[0], found[0]
        # what is said after the location, less the parameter's own bounds
        messages.append(found[0].split("): ", 1)[1].split("Allowed:")[0].strip())
    assert len(set(messages)) == 1, "refused differently:\n" + "\n".join(messages)
    top = [line for line in lines if "p.yaml:2: seed" in line]
    assert top and "'70'" in top[0] and "integer" in top[0], r.output


def _invoke_in_process(args: list[str], cwd: Path):
    from click.testing import CliRunner

    from studio.cli import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        start = time.monotonic()
        result = CliRunner().invoke(cli, args)
        return result, time.monotonic() - start
    finally:
        os.chdir(old)


def _assert_user_error(result, seconds: float, *, max_output: int = 5000) -> None:
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {str(result.exception)[:300]}"
    assert "Traceback" not in output, output[:2000]
    assert result.exit_code == 2, f"exit {result.exit_code}\n{output[:2000]}"
    assert "--set" in output, output[:2000]
    assert len(output) <= max_output, f"{len(output):,} characters of output\n{output[:500]}"
    assert seconds <= BUDGET_S + SLACK_S, f"took {seconds:.1f} s"


def test_set_with_a_2_mb_value(tmp_path: Path) -> None:
    """argv cannot carry 2 MB on Linux (MAX_ARG_STRLEN is 128 KiB): in process."""
    (tmp_path / "p.yaml").write_text(OK_TITLE)
    result, seconds = _invoke_in_process(["plan", "p.yaml", "--set", "a.text=" + "x" * 2_100_000], tmp_path)
    _assert_user_error(result, seconds)


def test_set_with_a_2_mb_list(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(OK_TITLE)
    result, seconds = _invoke_in_process(["plan", "p.yaml", "--set", "a.text=[" + "1, " * 700_000 + "1]"], tmp_path)
    _assert_user_error(result, seconds)


def test_set_with_a_nul_byte(tmp_path: Path) -> None:
    """argv cannot carry a NUL byte: in process."""
    (tmp_path / "p.yaml").write_text(OK_TITLE)
    result, seconds = _invoke_in_process(["plan", "p.yaml", "--set", "a.text=h\x00i"], tmp_path)
    _assert_user_error(result, seconds)
