"""Hostile outputs re-opened: `studio run FILE` and `studio export FILE [-o OUT]` for
PNG, WAV and MIDI files, manifests and run folders that are damaged, foreign, huge,
nested, bombs, pipes or devices. Every one is answered with exit 2, no traceback, a
message naming the file the user gave, in bounded time, and nothing written: no run
folder for `run`, no `-o` file (whole or half) for `export`.

The cases run in this process (click's CliRunner) to keep the suite fast; the few that
need a memory limit or a separate process (a decompression bomb, a 16 MB MIDI, a FIFO)
go through tests/test_hostile.py's check_case.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner

from studio.cli import cli
from studio.runs.reopen import KEY
from test_hostile import Case, make_files, check_case, midi, no_terminal_controls, png, wav

BUDGET_S = 3.0  # in process, on a busy 2-core machine; each case takes well under a second
OK_PIPELINE = {"name": "t", "steps": [{"id": "a", "uses": "image.title", "with": {"text": "hi", "width": 32,
                                                                                  "height": 32}}]}


# --- making hostile files ------------------------------------------------------------------


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with(*chunks: bytes) -> bytes:
    """A valid 8 x 8 PNG with `chunks` before its IEND."""
    base = png()
    assert base.endswith(chunk(b"IEND", b""))
    return base[:-12] + b"".join(chunks) + chunk(b"IEND", b"")


def text_chunk(text: str | bytes, kind: bytes = b"tEXt") -> bytes:
    data = text.encode("latin-1") if isinstance(text, str) else text
    if kind == b"tEXt":
        return chunk(kind, b"studio\0" + data)
    if kind == b"zTXt":
        return chunk(kind, b"studio\0\0" + zlib.compress(data))
    return chunk(kind, b"studio\0\0\0\0\0" + data)  # iTXt, uncompressed


def blob(raw: bytes) -> str:
    """What a provenance's pipeline_source holds: base64 of zlib."""
    return base64.b64encode(zlib.compress(raw, 9)).decode()


def prov(pipeline_json: str | bytes | None = None, **fields: Any) -> str:
    """A provenance as JSON text: step, item and the pipeline (given as its JSON)."""
    out: dict[str, Any] = {"step": "a", "item": "a"}
    if pipeline_json is not None:
        raw = pipeline_json.encode() if isinstance(pipeline_json, str) else pipeline_json
        out[KEY] = blob(raw)
    out.update(fields)
    return json.dumps(out)


def png_prov(text: str | bytes, kind: bytes = b"tEXt") -> bytes:
    return png_with(text_chunk(text, kind))


def pipeline_with(value: Any) -> str:
    """OK_PIPELINE with `value` as a parameter: the pipeline as JSON text."""
    return json.dumps({**OK_PIPELINE, "steps": [{**OK_PIPELINE["steps"][0], "with": {"text": "hi", "x": value}}]})


def wav_with(*chunks: bytes, header: bytes = b"RIFF") -> bytes:
    """A valid WAV with `chunks` after its fmt chunk."""
    base = wav(frames=80)
    body = base[12:]
    fmt_end = 8 + struct.unpack("<I", body[4:8])[0]
    body = body[:fmt_end] + b"".join(chunks) + body[fmt_end:]
    return header + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def riff(kind: bytes, data: bytes, size: int | None = None) -> bytes:
    return kind + struct.pack("<I", len(data) if size is None else size) + data + b"\0" * (len(data) & 1)


def wav_comment(comment: bytes) -> bytes:
    return wav_with(riff(b"LIST", b"INFO" + riff(b"ICMT", comment + b"\0")))


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_with(text: bytes, declared: int | None = None) -> bytes:
    """A valid MIDI with a text meta event (FF 01) holding `text` at the start of its first track."""
    base = midi()
    assert base[14:18] == b"MTrk"
    length = struct.unpack(">I", base[18:22])[0]
    event = b"\x00\xff\x01" + _vlq(len(text) if declared is None else declared) + text
    track = event + base[22:22 + length]
    return base[:14] + b"MTrk" + struct.pack(">I", len(track)) + track + base[22 + length:]


def lazy(build: Callable[[], bytes]) -> Callable[[Path, Path], None]:
    """A file whose bytes are made only when its case runs (the large ones)."""
    def make(path: Path, root: Path) -> None:
        path.write_bytes(build())
    return make


@functools.cache
def list_bomb() -> bytes:
    """19 KB of PNG whose pipeline inflates to a list of 15 MB."""
    return png_prov(prov(pipeline_with([0] * 7_500_000)))


def fifo(path: Path, root: Path) -> None:
    os.mkfifo(path)


def link_to(target: str) -> Callable[[Path, Path], None]:
    def make(path: Path, root: Path) -> None:
        path.symlink_to(target)
    return make


def folder(path: Path, root: Path) -> None:
    path.mkdir()


def manifest(pipeline: Any, **fields: Any) -> str:
    return json.dumps({"status": "done", "steps": {}, "resolved_pipeline": pipeline, **fields})


def a_run_with(image: bytes, base_dir: Any) -> Callable[[Path, Path], None]:
    """RUN/a/image.png beside RUN/manifest.json that names `base_dir`."""
    def make(path: Path, root: Path) -> None:
        path.mkdir()
        (path / "manifest.json").write_text(manifest(OK_PIPELINE, base_dir=base_dir))
        (path / "a").mkdir()
        (path / "a" / "image.png").write_bytes(image)
    return make


# --- the cases -------------------------------------------------------------------------------


@dataclass
class Reopen:
    name: str
    files: dict[str, Any]  # relative path: bytes, str, or make(path, root)
    target: str  # what the user gives
    expect: tuple[str, ...] = ()  # phrases the message holds, beside the target's name
    commands: tuple[str, ...] = ("export", "run")
    where: str | None = None  # the name the message must hold (default: target)
    budget_s: float = BUDGET_S
    extra: dict = field(default_factory=dict)


DEEP = pipeline_with(json.loads("[" * 400 + "]" * 400))
GOOD = json.dumps(OK_PIPELINE)
CASES = [
    # the embedded pipeline: bounded before anything dumps or validates it
    Reopen("nested-400", {"x.png": png_prov(prov(DEEP))}, "x.png", ("nested more than 64 levels",)),
    Reopen("nested-65-mappings", {"x.png": png_prov(prov(pipeline_with(json.loads('{"k":' * 65 + "1" + "}" * 65))))},
           "x.png", ("nested more than 64 levels",)),
    Reopen("nested-100000-json", {"x.png": png_prov(prov("[" * 100_000 + "]" * 100_000))}, "x.png",
           ("nested too deeply",)),
    Reopen("inflates-to-15mb", {"x.png": lazy(list_bomb)}, "x.png", ("larger than 2 MB once decompressed",)),
    Reopen("inflates-just-past-2mb", {"x.png": lazy(lambda: png_prov(prov(pipeline_with("x" * 2_000_000))))}, "x.png",
           ("larger than 2 MB",)),
    Reopen("30001-values", {"x.png": png_prov(prov(pipeline_with([1] * 30_001)))}, "x.png", ("30,000 values",)),

    Reopen("not-base64", {"x.png": png_prov(json.dumps({KEY: "not base64 at all!"}))}, "x.png", ("base64",)),
    Reopen("base64-of-not-zlib", {"x.png": png_prov(json.dumps({KEY: base64.b64encode(b"hello").decode()}))},
           "x.png", ("does not decompress",)),
    Reopen("truncated-zlib", {"x.png": png_prov(json.dumps({KEY: base64.b64encode(zlib.compress(GOOD.encode())[:-9])
                                                                 .decode()}))}, "x.png", ("cut short",)),
    Reopen("not-utf8", {"x.png": png_prov(prov(b'{"name": "\xff\xfe", "steps": []}'))}, "x.png", ("UTF-8",)),
    Reopen("not-json", {"x.png": png_prov(prov("name: yaml, not json"))}, "x.png", ("not valid JSON",)),
    Reopen("pipeline-is-a-list", {"x.png": png_prov(prov("[1, 2, 3]"))}, "x.png", ("not a pipeline", "list")),
    Reopen("steps-not-a-list", {"x.png": png_prov(prov('{"name": "t", "steps": {"a": 1}}'))}, "x.png",
           ("not a pipeline",)),
    Reopen("5000-digit-number", {"x.png": png_prov(prov(pipeline_with(0).replace('"x": 0', '"x": ' + "9" * 5000)))},
           "x.png", ("not valid JSON", "digits")),
    Reopen("key-is-a-number", {"x.png": png_prov(json.dumps({KEY: 12345}))}, "x.png", ("not one Studio wrote", "a number")),
    Reopen("key-is-a-list", {"x.png": png_prov(json.dumps({KEY: ["a"]}))}, "x.png", ("not one Studio wrote",)),
    Reopen("key-is-huge", {"x.png": lazy(lambda: png_prov(json.dumps({KEY: "A" * 3_000_000})))}, "x.png", ("characters of base64",)),
    Reopen("invalid-pipeline-named", {"x.png": png_prov(prov(GOOD.replace('"width": 32', '"width": "w"')))},
           "x.png", ("x.png (its embedded pipeline): steps[0].with",), commands=("run",)),
    Reopen("nan-seed", {"x.png": png_prov(prov(json.dumps({**OK_PIPELINE, "seed": float("nan")})))}, "x.png",
           ("x.png (its embedded pipeline): seed",), commands=("run",)),
    Reopen("unknown-generator-named", {"x.png": png_prov(prov(GOOD.replace("image.title", "image.nope")))}, "x.png",
           ("x.png (its embedded pipeline): steps[0].uses",), commands=("run",)),
    # the provenance around it: every field checked by type
    Reopen("provenance-not-json", {"x.png": png_prov("{not json")}, "x.png", ("provenance is not valid JSON",)),
    Reopen("provenance-a-list", {"x.png": png_prov("[1]")}, "x.png", ("list, not a JSON object",)),
    Reopen("provenance-nested-100000", {"x.png": png_prov('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")}, "x.png",
           ("nested too deeply",)),
    Reopen("provenance-nan", {"x.png": png_prov('{"step": NaN, "%s": "%s"}' % (KEY, blob(GOOD.encode())))}, "x.png",
           ("'step'",)),
    Reopen("step-a-list", {"x.png": png_prov(prov(GOOD, step=["a"]))}, "x.png", ("'step'", "a list")),
    Reopen("item-a-mapping", {"x.png": png_prov(prov(GOOD, item={"a": 1}))}, "x.png", ("'item'", "a mapping")),
    Reopen("item-huge-number", {"x.png": png_prov(prov(GOOD).replace('"item": "a"', '"item": ' + "7" * 4000))},
           "x.png", ("'item'", "many digits")),
    Reopen("item-too-long", {"x.png": png_prov(prov(GOOD, item="i" * 5000))}, "x.png", ("'item'",)),
    Reopen("no-pipeline", {"x.png": png_prov(json.dumps({"step": "a"}))}, "x.png", ("carries no Studio pipeline",)),
    # the PNG around it
    Reopen("png-not-a-png", {"x.png": "hello, not a PNG"}, "x.png", ("not a PNG",)),
    Reopen("png-empty", {"x.png": b""}, "x.png", ("not a PNG",)),
    Reopen("png-bad-crc", {"x.png": png_with(chunk(b"tEXt", b"studio\0" + prov(GOOD).encode(), crc=1))}, "x.png",
           ("checksum",)),
    Reopen("png-chunk-past-end", {"x.png": png()[:-12] + struct.pack(">I", 10**6) + b"tEXtstudio\0{"}, "x.png",
           ("past the end",)),
    Reopen("png-ztxt-bomb", {"x.png": lazy(lambda: png_with(chunk(b"zTXt", b"studio\0\0" + zlib.compress(b" " * 64 * 2**20, 9))))},
           "x.png", ("decompressed",)),
    Reopen("png-ztxt-truncated", {"x.png": png_with(chunk(b"zTXt", b"studio\0\0" + zlib.compress(b"{}")[:-3]))},
           "x.png", ("cut short",)),
    Reopen("png-itxt-not-utf8", {"x.png": png_prov(b'{"step": "\xff"}', kind=b"iTXt")}, "x.png", ("UTF-8",)),
    Reopen("png-itxt-no-fields", {"x.png": png_with(chunk(b"iTXt", b"studio\0\0\0"))}, "x.png", ("damaged",)),
    Reopen("png-40000-chunks", {"x.png": png()[:-12] + chunk(b"teXt", b"") * 40_000 + chunk(b"IEND", b"")}, "x.png",
           ("30,000 chunks",)),
    Reopen("png-text-chunk-of-9mb", {"x.png": lazy(lambda: png_with(chunk(b"tEXt", b"studio\0" + b" " * 9 * 2**20)))}, "x.png",
           ("MB",)),
    Reopen("png-foreign", {"x.png": png()}, "x.png", ("carries no Studio pipeline",)),
    # WAV and MIDI
    Reopen("wav-comment-not-utf8", {"x.wav": wav_comment(b'{"step": "\xff"}')}, "x.wav", ("UTF-8",)),
    Reopen("wav-comment-not-json", {"x.wav": wav_comment(b"{oops")}, "x.wav", ("not valid JSON",)),
    Reopen("wav-comment-deep", {"x.wav": wav_comment(prov(DEEP).encode())}, "x.wav", ("64 levels",)),
    Reopen("wav-list-past-end", {"x.wav": wav_with(riff(b"LIST", b"INFO", size=10**6))}, "x.wav", ("past the end",)),
    Reopen("wav-icmt-past-list", {"x.wav": wav_with(riff(b"LIST", b"INFO" + riff(b"ICMT", b"{}", size=500)))}, "x.wav",
           ("damaged",)),
    Reopen("wav-rf64", {"x.wav": wav_with(header=b"RF64")}, "x.wav", ("RF64",)),
    Reopen("wav-not-riff", {"x.wav": "text"}, "x.wav", ("not a WAV",)),
    Reopen("wav-2000-chunks", {"x.wav": wav_with(riff(b"junk", b"") * 2000)}, "x.wav", ("1,000 chunks",)),
    Reopen("midi-text-past-end", {"x.mid": midi_with(b"studio:{}", declared=5000)}, "x.mid", ("past the end",)),
    Reopen("midi-not-json", {"x.mid": midi_with(b"studio:{nope")}, "x.mid", ("not valid JSON",)),
    Reopen("midi-deep", {"x.mid": midi_with(b"studio:" + prov(DEEP).encode())}, "x.mid", ("64 levels",)),
    Reopen("midi-not-midi", {"x.mid": b"RIFF...."}, "x.mid", ("not a MIDI",)),
    Reopen("midi-3mb", {"x.mid": lazy(lambda: midi() + b"\0" * 3 * 2**20)}, "x.mid", ("re-opened up to 2 MB",)),
    # what the file is: regular files only, refused at once
    Reopen("png-fifo", {"x.png": fifo}, "x.png", ("not a regular file",)),
    Reopen("png-dev-zero", {"x.png": link_to("/dev/zero")}, "x.png", ("not a regular file",)),
    Reopen("midi-dev-urandom", {"x.mid": link_to("/dev/urandom")}, "x.mid", ("not a regular file",)),
    Reopen("png-folder", {"x.png": folder}, "x.png", ("no manifest.json",)),
    Reopen("png-missing", {}, "x.png", ("no such file",)),
    Reopen("png-dangling-link", {"x.png": link_to("nowhere.png")}, "x.png", ("no such file",)),
    Reopen("gif", {"x.gif": b"GIF89a"}, "x.gif", ("give a pipeline",), commands=("export",)),
    Reopen("jpg-cut-short", {"x.jpg": b"\xff\xd8"}, "x.jpg", ("cut short",), commands=("export",)),
    # manifests and run folders
    Reopen("manifest-deep", {"m/manifest.json": manifest(json.loads(DEEP))}, "m/manifest.json", ("64 levels",)),
    Reopen("run-folder-30001-values", {"m/manifest.json": manifest(json.loads(pipeline_with(list(range(30_001)))))},
           "m", ("30,000 values",), where="manifest.json"),
    Reopen("manifest-pipeline-of-2.5mb",
           {"m/manifest.json": manifest(json.loads(pipeline_with({f"k{i}": "y" * 250 for i in range(10_000)})))},
           "m/manifest.json", ("larger than 2 MB of text",)),
    Reopen("manifest-pipeline-a-list", {"m/manifest.json": manifest([1])}, "m/manifest.json", ("not a pipeline",)),
    Reopen("manifest-no-pipeline", {"m/manifest.json": manifest(None)}, "m/manifest.json", ("records no pipeline",)),
    Reopen("manifest-base-dir-a-list", {"m/manifest.json": manifest(OK_PIPELINE, base_dir=["/"])}, "m/manifest.json",
           ("base_dir", "a list")),
    Reopen("manifest-base-dir-a-number", {"m/manifest.json": manifest(OK_PIPELINE, base_dir=1e400)},
           "m/manifest.json", ("base_dir", "inf")),
    Reopen("manifest-fifo", {"m/manifest.json": fifo}, "m", ("not a regular file",), where="manifest.json"),
    Reopen("manifest-running-pid-2**40",
           {"m/manifest.json": json.dumps({"status": "running", "steps": {"a": {"items": 5}}, "base_dir": "/",
                                           "process": {"pid": 2**40, "host": "h"},
                                           "resolved_pipeline": json.loads(DEEP)})}, "m", ("64 levels",),
           where="manifest.json"),
    Reopen("manifest-running-junk-journal",
           {"m/manifest.json": json.dumps({"status": "running", "steps": {"a": {"items": [5, None]}},
                                           "resolved_pipeline": json.loads(DEEP)}),
            "m/journal.jsonl": '{"item": 5}\n[1]\n{"step": [], "item": {}, "status": 7}\n{"end": 5}\n'},
           "m", ("64 levels",), where="manifest.json"),
    Reopen("png-name-not-utf8-with-escape", {"\udcff\x1b[2J.png": png_prov(prov(DEEP))}, "\udcff\x1b[2J.png",
           ("64 levels",), where="\\udcff\\x1b[2J.png"),
    Reopen("manifest-not-json", {"m/manifest.json": "{"}, "m/manifest.json", ("not a valid manifest",)),
    Reopen("manifest-a-list", {"m/manifest.json": "[]"}, "m/manifest.json", ("not a valid manifest",)),
]


def snapshot(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = os.lstat(full).st_mtime_ns
    return out


def invoke(argv: list[str]) -> tuple[int, str, float]:
    start = time.monotonic()
    result = CliRunner().invoke(cli, argv)
    seconds = time.monotonic() - start
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    return result.exit_code, result.output, seconds


def check_refused(case: Reopen, command: str, root: Path) -> str:
    make_files(root, case.files)
    before = snapshot(root)
    target = str(root / case.target)
    out = root / "out.yaml"
    argv = {"export": ["export", target, "-o", str(out)], "run": ["run", target, "--out", str(root / "runs"), "-q"]}
    code, output, seconds = invoke(argv[command])
    context = f"studio {command} {case.target}: exit {code}, {seconds:.2f} s\n{output[:3000]}"
    assert code == 2, context
    assert "Traceback" not in output, context
    assert output.startswith("Error: ") or "\nError: " in output, context
    assert (case.where or case.target.split("/")[-1]) in output, context
    assert str(root) in output or case.where, context  # the path the user gave, not a temporary one
    assert "studio-reopened-" not in output and "pipeline.yaml" not in output, context
    for phrase in case.expect:
        assert phrase in output, f"{phrase!r} missing\n{context}"
    assert len(output) < 5_000, context
    no_terminal_controls(output)  # names and values from the file are shown escaped
    assert seconds < case.budget_s, context
    assert snapshot(root) == before, f"wrote {sorted(set(snapshot(root)) ^ set(before))[:5]}\n{context}"
    return output


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_outputs_are_refused_in_words(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in case.commands:
        root = tmp_path / command
        root.mkdir()
        check_refused(case, command, root)


# --- what is escaped, named and kept ---------------------------------------------------------


def test_a_base_dir_with_a_newline_stays_one_comment_line(tmp_path):
    image = png_prov(prov(GOOD, step="a\nsteps: []", item="a\x1b[31m\u202e"))
    a_run_with(image, "/tmp/x\nsteps: []\n# y")(tmp_path / "run", tmp_path)
    out = tmp_path / "p.yaml"
    code, output, _ = invoke(["export", str(tmp_path / "run" / "a" / "image.png"), "-o", str(out)])
    assert code == 0, output
    text = out.read_text("utf-8")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert len(comments) == 2 and "\\n" in comments[0] and "\\x1b" in comments[0] and "\\u202e" in comments[0]
    assert comments[1] == "# its relative input files were in /tmp/x\\nsteps: []\\n# y"
    assert yaml.safe_load(text) == OK_PIPELINE


def test_a_damaged_neighbour_manifest_is_only_a_hint(tmp_path):
    for base in (["/"], 5, "relative/dir", "/a\0b", "/" + "x" * 5000):
        root = tmp_path / str(abs(hash(str(base))))
        root.mkdir()
        a_run_with(png_prov(prov(GOOD)), base)(root / "run", root)
        code, output, _ = invoke(["export", str(root / "run" / "a" / "image.png")])
        assert code == 0 and "its relative input files" not in output, output


def test_a_base_dir_this_machine_cannot_use_is_looked_for_here(tmp_path):
    for i, base in enumerate(("rel\n# x", "C:\\Users\\me", "", "/a\0b")):
        (tmp_path / f"m{i}").mkdir()
        (tmp_path / f"m{i}" / "manifest.json").write_text(manifest(OK_PIPELINE, base_dir=base))
        code, output, _ = invoke(["export", str(tmp_path / f"m{i}")])
        assert code == 0 and "its relative input files" not in output, output
        assert yaml.safe_load(output) == OK_PIPELINE


def test_strings_that_are_not_text_survive_export(tmp_path):
    """A lone surrogate, control characters, infinity, and words YAML could take for
    numbers, booleans or dates pass through as a pipeline file holding them would:
    escaped or quoted, and the file written is UTF-8."""
    words = ["1e5", "1.0e5", "yes", "0x1F", "1_000", ".inf", "~", "null", "", "2001-12-14", "1:20", "<<"]
    raw = pipeline_with(["\ud800", "\x00\x07\x1b", "\u2028", float("inf"), *words])
    (tmp_path / "x.png").write_bytes(png_prov(prov(raw)))
    out = tmp_path / "p.yaml"
    code, output, _ = invoke(["export", str(tmp_path / "x.png"), "-o", str(out)])
    assert code == 0, output
    from studio.pipeline.yamlfile import load_yaml

    text = out.read_bytes().decode("utf-8")
    for data in (yaml.safe_load(text), load_yaml(text, "p.yaml")[0]):  # YAML 1.1, and as Studio reads it
        assert data["steps"][0]["with"]["x"][1:] == ["\x00\x07\x1b", "\u2028", float("inf"), *words]


def test_export_refuses_an_existing_output_before_reading(tmp_path):
    (tmp_path / "x.png").write_bytes(png_prov(prov(DEEP)))
    out = tmp_path / "p.yaml"
    out.write_text("mine")
    code, output, _ = invoke(["export", str(tmp_path / "x.png"), "-o", str(out)])
    assert code == 2 and "exists" in output and "64 levels" not in output
    assert out.read_text() == "mine"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    code, output, _ = invoke(["export", str(tmp_path / "x.png"), "-o", str(tmp_path / "dangling")])
    assert code == 2 and "exists" in output and not (tmp_path / "nowhere").exists()


def test_export_into_a_folder_it_cannot_make_leaves_nothing(tmp_path):
    (tmp_path / "x.png").write_bytes(png_prov(prov(GOOD)))
    (tmp_path / "file").write_text("a file, not a folder")
    before = snapshot(tmp_path)
    code, output, _ = invoke(["export", str(tmp_path / "x.png"), "-o", str(tmp_path / "file" / "p.yaml")])
    assert code == 2 and "Traceback" not in output and "p.yaml" in output, output
    assert snapshot(tmp_path) == before


def test_export_writes_whole_files_only(tmp_path, monkeypatch):
    """A write that fails half way (a full disk) leaves no -o and no temporary file."""
    import errno

    (tmp_path / "x.png").write_bytes(png_prov(prov(GOOD)))
    real = Path.write_text

    def full(self, text, *args, **kwargs):
        real(self, text[:10], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    before = snapshot(tmp_path)
    code, output, _ = invoke(["export", str(tmp_path / "x.png"), "-o", str(tmp_path / "p.yaml")])
    assert code == 2 and "disk full" in output and "p.yaml" in output, output
    assert snapshot(tmp_path) == before


# --- through the real command line: memory and time of the large ones -----------------------


SUBPROCESS_CASES = [
    Case("reopen", "png-15mb-list-bomb", ["export", "x.png", "-o", "p.yaml"], {"x.png": lazy(list_bomb)}, where=("x.png",),
         expect=("larger than 2 MB once decompressed",), writes="nothing", max_rss_mb=200),
    Case("reopen", "midi-16mb", ["run", "x.mid"], {"x.mid": lazy(lambda: midi() + b"\0" * 16 * 2**20)}, where=("x.mid",),
         expect=("re-opened up to 2 MB",), budget_s=2.0, writes="nothing", max_rss_mb=200),
    Case("reopen", "png-fifo", ["run", "x.png"], {"x.png": fifo}, where=("x.png",), expect=("not a regular file",),
         budget_s=2.0, writes="nothing"),
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=lambda c: c.id)
def test_large_hostile_outputs_through_the_command_line(case, tmp_path):
    check_case(case, tmp_path)
