"""A hostile corpus for the run history (`studio runs list/show/find/rm`, the SQLite
index OUT/.index.sqlite) and the cache commands (`studio cache info/gc`).

Each case builds an output folder holding one good run and something hostile (a
manifest or journal with wrong types or absurd values, a damaged or planted index, a
link out of the folder, folders 1,100 deep, absurd options) and checks what a user
would see: the exit code, no traceback, the place named in the message (the option, the
file, the field), a time bound, and what was or was not written or removed (nothing
outside OUT). One bad run never stops `runs list`, `cache info` or `cache gc` for the
others.

Most cases run in process through click's CliRunner (an exception other than SystemExit
is what a user would see as a traceback); the few that need the real entry point (its
handling of everything else) start a subprocess.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from studio.cli import cli
from studio.runs.history import INDEX, remove_tree

TIME_S = 10.0  # what one command may take here (a shared 2-core CI machine)
KEY = "ab" + "0" * 62


# --- building output folders ---------------------------------------------------------


def manifest(**fields: Any) -> dict[str, Any]:
    """A manifest as Studio writes it (the fields history reads), with `fields` replaced."""
    data = {
        "pipeline": "p", "source": "/x/pipeline.yaml", "status": "done", "started": "2026-01-01T10:00:00+0000",
        "seconds": 1.5, "seed": 3,
        "steps": {"a": {"uses": "fake.text", "items": [
            {"name": "a-1", "status": "done", "seed": 7, "seconds": 0.1, "params": {"prompt": "red"},
             "cache_key": KEY}]}},
    }
    data.update(fields)
    return data


def write_run(out: Path, run_id: str, data: Any = None, *, text: str | None = None, pipeline: str = "p") -> Path:
    run_dir = out / pipeline / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    body = text if text is not None else json.dumps(manifest() if data is None else data)
    (run_dir / "manifest.json").write_text(body, encoding="utf-8", errors="surrogatepass")
    return run_dir


def good_out(tmp_path: Path) -> Path:
    """OUT with one good run and one cache entry it recorded."""
    out = tmp_path / "runs"
    write_run(out, "20260101-100000-good")
    entry = out / ".cache" / "steps" / KEY[:2] / KEY
    entry.mkdir(parents=True)
    (entry / "entry.json").write_text("{}")
    return out


def item(**fields: Any) -> dict[str, Any]:
    return {"name": "b-1", "status": "done", "seed": 1, "seconds": 0.1, "params": {}, **fields}


def with_items(*items: Any) -> dict[str, Any]:
    return manifest(started="2026-01-02T10:00:00+0000", steps={"b": {"uses": "fake.text", "items": list(items)}})


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_folders(top: Path, depth: int, *, file_size: int = 10) -> None:
    """`depth` folders, one in the other, below `top` (made with folder descriptors:
    os.makedirs recurses, and the path outgrows what one call may name)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"x" * file_size)
    finally:
        os.close(fd)


# --- running the CLI -------------------------------------------------------------------


def studio(*args: str, input: str | None = None, limit_s: float = TIME_S):
    """The command line in process: exit code, stdout, stderr. An exception that is not
    SystemExit (click's exit) would reach the user as a traceback: it fails the test."""
    began = time.monotonic()
    result = CliRunner().invoke(cli, list(args), input=input)
    took = time.monotonic() - began
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        pytest.fail("".join(traceback.format_exception(result.exception)))
    assert "Traceback" not in result.output
    assert took < limit_s, f"{args[:3]} took {took:.1f} s"
    return result.exit_code, result.stdout, result.stderr


def assert_refused(args: list[str], *named: str, input: str | None = None) -> str:
    code, out, err = studio(*args, input=input)
    assert code == 2, (code, out, err)
    text = out + err
    for word in named:
        assert word in text, (word, text)
    assert len(text) < 5000
    return text


def snapshot(root: Path) -> dict[str, int]:
    """Every path under `root` with its size (folders 0), links not followed."""
    return {os.path.relpath(os.path.join(d, n), root): os.lstat(os.path.join(d, n)).st_size
            for d, dirs, files in os.walk(root) for n in dirs + files}


def listed(out: Path) -> list[dict[str, Any]]:
    code, stdout, stderr = studio("runs", "list", "--out", str(out), "--json")
    assert code == 0, (stdout, stderr)
    return json.loads(stdout)


def assert_all_commands_still_work(out: Path, good_runs: int = 1) -> list[dict[str, Any]]:
    """runs list lists the good run; cache info and gc (which read the same index) work
    and keep the entry the good run recorded."""
    runs = listed(out)
    good = [r for r in runs if r["run_id"].endswith("-good")]
    assert len(good) == good_runs and good[0]["status"] == "done" and good[0]["done"] == 1, runs
    code, stdout, stderr = studio("cache", "info", "--out", str(out), "--json")
    assert code == 0, stderr
    info = json.loads(stdout)
    assert info["entries"] == 1 and info["entries_runs_recorded"] == 1, info
    code, stdout, stderr = studio("cache", "gc", "--out", str(out), "--max-gb", "0")
    assert code == 0 and "removed 0 entries" in stdout and "kept 1" in stdout, (stdout, stderr)
    code, stdout, stderr = studio("runs", "find", "--out", str(out), "--param", "prompt=red", "--json")
    assert code == 0 and any(i["run_dir"].endswith("-good") for i in json.loads(stdout)), (stdout, stderr)
    return runs


def bad_run_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [r for r in runs if r["run_id"].endswith("-bad")]
    assert len(bad) == 1, runs
    return bad[0]


# --- A. manifests whose fields have the wrong types or absurd values --------------------

BAD_MANIFESTS: dict[str, tuple[Any, str]] = {
    # name: (manifest, the field the note names ("" when the run is fine without one))
    "items-a-number": (manifest(steps={"b": {"uses": "x", "items": 5}}), "steps.b.items"),
    "items-a-string": (manifest(steps={"b": {"uses": "x", "items": "abc"}}), "steps.b.items"),
    "items-of-other-types": (with_items(5, "x", None, [1]), "steps.b.items[0]"),
    "seed-10**30": (with_items(item(seed=10**30)), "steps.b.items[0].seed"),
    "seed-negative": (with_items(item(seed=-1)), "steps.b.items[0].seed"),
    "seed-text": (with_items(item(seed="7")), "steps.b.items[0].seed"),
    "seed-a-boolean": (with_items(item(seed=True)), "steps.b.items[0].seed"),
    "status-a-list": (manifest(status=["done"]), "status"),
    "status-a-mapping": (manifest(status={"a": 1}), "status"),
    "status-null": (manifest(status=None), "status"),
    "params-a-list": (with_items(item(params=[1, 2])), "steps.b.items[0].params"),
    "params-40-deep": (with_items(item(params={"x": nested(40)})), "steps.b.items[0].params"),
    "params-100-KB": (with_items(item(params={"x": "y" * 100_000})), "steps.b.items[0].params"),
    "seconds-1e400": (manifest(seconds=float("inf")), "seconds"),
    "item-seconds-negative": (with_items(item(seconds=-5)), "steps.b.items[0].seconds"),
    "pipeline-a-number": (manifest(pipeline=12), "pipeline"),
    "started-a-list": (manifest(started=["2026"]), "started"),
    "source-a-mapping": (manifest(source={"a": 1}), "source"),
    "cache-key-a-list": (with_items(item(cache_key=["x"])), "steps.b.items[0].cache_key"),
    "cache-key-not-hex": (with_items(item(cache_key="../../etc")), "steps.b.items[0].cache_key"),
    "steps-a-list": (manifest(steps=[1, 2]), "not a valid manifest"),
    "step-a-string": (manifest(steps={"b": "x"}), "steps.b"),
    "name-a-lone-surrogate": (with_items(item(name="\udcff\x1b[31m")), ""),
    "uses-a-list": (manifest(steps={"b": {"uses": [1], "items": [item()]}}), "steps.b.uses"),
    "manifest-a-list": ([1, 2], "not a valid manifest"),
}


@pytest.mark.parametrize("name", list(BAD_MANIFESTS))
def test_a_manifest_with_bad_fields_is_noted_and_never_stops_the_others(tmp_path, name):
    out = good_out(tmp_path)
    data, field = BAD_MANIFESTS[name]
    write_run(out, "20260102-100000-bad", data)
    code, stdout, stderr = studio("runs", "list", "--out", str(out))
    assert code == 0, stderr
    assert "-good" in stdout and "-bad" in stdout
    if field:
        assert "note:" in stderr and field in stderr, stderr
    runs = assert_all_commands_still_work(out)
    bad = bad_run_of(runs)
    assert isinstance(bad["status"], str) and isinstance(bad["items"], int) and isinstance(bad["note"], str)
    if field:
        assert field in bad["note"]
    for r in runs:  # nothing but text and numbers of sane size reached the index
        for v in r.values():
            assert v is None or isinstance(v, (str, int, float)) and (not isinstance(v, str) or len(v) < 20_000)
    assert sorted(p.name for p in out.iterdir()) == [".cache", INDEX, "p"]  # nothing else written


RAW_MANIFESTS = {
    "invalid-json": "{\"pipeline\": ",
    "5000-digit-seed": '{"pipeline": "p", "status": "done", "steps": {"b": {"items": [{"seed": ' + "9" * 5000 + "}]}}}",
    "nested-100000-deep": "[" * 100_000 + "]" * 100_000,
    "invalid-utf-8": "{\"pipeline\": \"\udcff\"}",  # written with surrogatepass: bytes ED B3 BF
    "nan-seconds": '{"pipeline": "p", "status": "done", "seconds": NaN, "steps": {}}',
}


@pytest.mark.parametrize("name", list(RAW_MANIFESTS))
def test_a_manifest_that_is_not_json_or_absurd_json_is_listed_as_unreadable_or_cleaned(tmp_path, name):
    out = good_out(tmp_path)
    write_run(out, "20260102-100000-bad", text=RAW_MANIFESTS[name])
    runs = assert_all_commands_still_work(out)
    bad = bad_run_of(runs)
    if name in ("nan-seconds", "5000-digit-seed"):
        assert bad["seconds"] is None or bad["status"] == "unreadable"
    else:
        assert bad["status"] == "unreadable" and "manifest.json" in bad["note"], bad


RUNNING = {
    "pid-2**40": {"pid": 2**40},
    "pid-negative": {"pid": -5},
    "pid-text": {"pid": "123"},
    "pid-float": {"pid": 1e300},
    "start-ticks-a-list": {"start_ticks": [1]},
    "boot-id-a-list": {"boot_id": [1]},
    "host-a-list": {"host": ["x"]},
}


@pytest.mark.parametrize("name", list(RUNNING))
def test_a_running_manifest_with_an_absurd_process_is_read_without_a_crash(tmp_path, name):
    import socket

    from studio.execute.manifest import process_is_gone, this_process

    process = {**this_process(), "host": socket.gethostname(), **RUNNING[name]}
    assert process_is_gone(process) in (True, False)
    out = good_out(tmp_path)
    run_dir = write_run(out, "20260102-100000-bad", manifest(status="running", process=process))
    assert bad_run_of(assert_all_commands_still_work(out))["status"] in ("running", "interrupted")
    code, stdout, stderr = studio("runs", "show", str(run_dir))
    assert code == 0, stderr


JOURNALS: dict[str, Callable[[Path], None]] = {
    "items-of-wrong-types": lambda p: p.write_text("\n".join(json.dumps(r) for r in [
        {"record": "item", "step": "a", "name": "a-1", "status": ["x"], "seed": 10**30, "params": [1],
         "seconds": "1", "cache_key": {"a": 1}},
        {"record": "end", "status": {"x": 1}}, [1, 2], "text", {"record": 5}]) + "\n"),
    "a-line-nested-100000-deep": lambda p: p.write_text("[" * 100_000 + "]" * 100_000 + "\n"),
    "a-fifo": lambda p: os.mkfifo(p),
    "a-link-to-dev-zero": lambda p: p.symlink_to("/dev/zero"),
    "a-folder": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("name", list(JOURNALS))
def test_a_journal_with_wrong_types_or_of_the_wrong_kind_never_stops_the_index(tmp_path, name):
    from studio.execute.manifest import this_process

    out = good_out(tmp_path)
    run_dir = write_run(out, "20260102-100000-bad", manifest(
        status="running", process=this_process(),
        steps={"a": {"uses": "x", "items": [{"name": "a-1", "status": "pending"}]}}))
    JOURNALS[name](run_dir / "journal.jsonl")
    bad = bad_run_of(assert_all_commands_still_work(out))
    assert isinstance(bad["status"], str)
    if name != "items-of-wrong-types":
        assert bad["status"] == "unreadable" and "journal" in bad["note"], bad
    else:
        assert "seed" in bad["note"] and "params" in bad["note"], bad


def test_a_manifest_that_is_a_fifo_or_a_device_is_skipped_at_once(tmp_path):
    out = good_out(tmp_path)
    (out / "p" / "20260102-100000-fifo").mkdir()
    os.mkfifo(out / "p" / "20260102-100000-fifo" / "manifest.json")
    (out / "p" / "20260102-100000-zero").mkdir()
    (out / "p" / "20260102-100000-zero" / "manifest.json").symlink_to("/dev/zero")
    runs = assert_all_commands_still_work(out)
    assert [r["run_id"] for r in runs] == ["20260101-100000-good"]


def test_a_run_with_more_items_than_the_index_takes_is_noted(tmp_path):
    out = good_out(tmp_path)
    write_run(out, "20260102-100000-bad", with_items(*[{}] * 120_000))
    bad = bad_run_of(assert_all_commands_still_work(out))
    assert bad["items"] == 100_000 and "more than 100,000 items" in bad["note"]


def test_a_run_folder_whose_name_is_not_utf8_is_skipped_with_a_note(tmp_path):
    out = good_out(tmp_path)
    name = os.fsdecode(b"20260102-100000-\xff")
    write_run(out, name)
    code, stdout, stderr = studio("runs", "list", "--out", str(out))
    assert code == 0 and "-good" in stdout and "not valid UTF-8" in stderr, stderr
    assert_all_commands_still_work(out)


# --- B. an index file that is not Studio's, or not a file in OUT -------------------------


def other_tables(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (x)")
        db.execute("CREATE TABLE other (y)")
        db.execute("PRAGMA user_version = 2")
    db.close()


def ours_plus_a_trigger(path: Path) -> None:
    from studio.runs.history import SCHEMA, TABLES

    with sqlite3.connect(path) as db:
        db.executescript(TABLES)
        db.execute("CREATE TRIGGER t AFTER INSERT ON runs BEGIN DELETE FROM items; END")
        db.execute(f"PRAGMA user_version = {SCHEMA}")
    db.close()


def rows_of_wrong_types(path: Path) -> None:
    """Studio's tables, with a row for the good run whose stamp matches and whose values
    are not numbers: it must be read again, not trusted."""
    from studio.runs.history import SCHEMA, TABLES, _stamp

    run_dir = path.parent / "p" / "20260101-100000-good"
    with sqlite3.connect(path) as db:
        db.executescript(TABLES)
        db.execute("INSERT INTO runs VALUES (?, 'p', 'x', 'done', '', 'abc', '', 'x', 1, 1, 1, 'big', 1, '', ?)",
                   (str(run_dir), _stamp(run_dir)))
        db.execute("INSERT INTO items VALUES ('/elsewhere', 's', 'u', 'n', 'done', 1, 1, '[[[', ?)", ("f" * 64,))
        db.execute(f"PRAGMA user_version = {SCHEMA}")
    db.close()


def corrupt_sqlite(path: Path) -> None:
    ours_plus_a_trigger(path)
    data = bytearray(path.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # a valid header, garbage pages
    path.write_bytes(bytes(data))


INDEXES: dict[str, Callable[[Path], None]] = {
    "right-version-other-tables": other_tables,
    "our-tables-and-a-trigger": ours_plus_a_trigger,
    "rows-of-wrong-types": rows_of_wrong_types,
    "corrupt-sqlite": corrupt_sqlite,
    "not-sqlite": lambda p: p.write_bytes(b"not a database at all" * 100),
    "empty": lambda p: p.write_bytes(b""),
    "a-fifo": lambda p: os.mkfifo(p),
    "a-folder": lambda p: (p.mkdir(), (p / "keep").write_text("mine")),
}


@pytest.mark.parametrize("name", list(INDEXES))
def test_an_index_that_is_not_studios_is_rebuilt_or_kept_in_memory(tmp_path, name):
    out = good_out(tmp_path)
    INDEXES[name](out / INDEX)
    runs = assert_all_commands_still_work(out)
    assert runs[0]["bytes"] != "big" and isinstance(runs[0]["seconds"], float)
    if name == "a-folder":  # never removed: it is not ours; the index lived in memory
        assert (out / INDEX / "keep").read_text() == "mine"
        code, _, stderr = studio("runs", "list", "--out", str(out))
        assert code == 0 and INDEX in stderr and "in memory" in stderr
    else:
        assert (out / INDEX).is_file() and not (out / INDEX).is_symlink()
        with sqlite3.connect(out / INDEX) as db:
            assert db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0
        db.close()


@pytest.mark.parametrize("kind", ["dangling-link", "link-to-a-file", "hard-link", "journal-link"])
def test_the_index_is_never_written_through_a_link(tmp_path, kind):
    out = good_out(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "victim"
    if kind == "dangling-link":
        (out / INDEX).symlink_to(target)
    elif kind == "link-to-a-file":
        target.write_bytes(b"precious")
        (out / INDEX).symlink_to(target)
    elif kind == "hard-link":
        ours_plus_a_trigger(target)  # even a valid index of Studio's: it is someone else's file too
        os.link(target, out / INDEX)
    else:
        target.write_bytes(b"precious")
        (out / f"{INDEX}-journal").symlink_to(target)
    before = target.read_bytes() if target.exists() else None
    assert_all_commands_still_work(out)
    assert (target.read_bytes() if target.exists() else None) == before  # untouched, or never created
    assert sorted(p.name for p in elsewhere.iterdir()) == ([] if kind == "dangling-link" else ["victim"])
    assert (out / INDEX).is_file() and not (out / INDEX).is_symlink() and os.stat(out / INDEX).st_nlink == 1
    code, _, stderr = studio("runs", "list", "--out", str(out))
    assert code == 0


def test_a_read_only_output_folder_is_listed_from_memory_and_nothing_is_written(tmp_path, monkeypatch):
    """Root may write anywhere, so the folder's being read-only is what os.access says
    (the question the index asks before it writes), not its mode bits."""
    import studio.runs.history

    out = good_out(tmp_path)
    before = snapshot(out)
    real_access = os.access
    monkeypatch.setattr(studio.runs.history.os, "access",
                        lambda path, mode, **kw: False if mode & os.W_OK else real_access(path, mode, **kw))
    assert listed(out)[0]["run_id"] == "20260101-100000-good"
    assert not (out / INDEX).exists()
    assert snapshot(out) == before


# --- C. options ------------------------------------------------------------------------

OPTION_CASES = {
    "find-seed-10**30": (["runs", "find", "--seed", str(10**30)], "--seed"),
    "find-seed-negative": (["runs", "find", "--seed", "-1"], "--seed"),
    "find-seed-5000-digits": (["runs", "find", "--seed", "9" * 5000], "--seed"),
    "find-param-5000-deep": (["runs", "find", "--param", "x=" + "[" * 5000 + "]" * 5000], "--param"),
    "find-param-deep-mapping": (["runs", "find", "--param", "x=" + "{a: " * 40 + "1" + "}" * 40], "--param"),
    "find-param-aliases": (["runs", "find", "--param", "x=[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
        f"&{n} [{','.join([f'*{p}'] * 10)}]" for p, n in zip("abcd", "bcde")) + "]"], "--param"),
    "find-param-20000-chars": (["runs", "find", "--param", "x=" + "y" * 20_000], "--param"),
    "find-param-no-key": (["runs", "find", "--param", "=3"], "--param"),
    "list-name-not-utf8": (["runs", "list", "--name", os.fsdecode(b"\xff\xfe")], "--name"),
    "list-limit-0": (["runs", "list", "--limit", "0"], "--limit"),
    "find-uses-not-utf8": (["runs", "find", "--uses", os.fsdecode(b"image.\xff")], "--uses"),
    "find-step-20000-chars": (["runs", "find", "--step", "s" * 20_000], "--step"),
    "gc-max-gb-1e308": (["cache", "gc", "--max-gb", "1e308"], "--max-gb"),
    "gc-max-gb-nan": (["cache", "gc", "--max-gb", "nan"], "--max-gb"),
    "gc-max-gb-inf": (["cache", "gc", "--max-gb", "inf"], "--max-gb"),
    "gc-max-gb-negative": (["cache", "gc", "--max-gb", "-1"], "--max-gb"),
    "gc-max-gb-text": (["cache", "gc", "--max-gb", "lots"], "--max-gb"),
    "gc-older-than-1e308": (["cache", "gc", "--older-than", "1e308"], "--older-than"),
    "gc-older-than-nan": (["cache", "gc", "--older-than", "nan"], "--older-than"),
    "gc-older-than-inf": (["cache", "gc", "--older-than", "-inf"], "--older-than"),
    "gc-older-than-negative": (["cache", "gc", "--older-than", "-1"], "--older-than"),
    "gc-nothing-asked": (["cache", "gc"], "--max-gb"),
    "show-a-5000-char-name": (["runs", "show", "x" * 5000], "not a run"),
    "rm-a-5000-char-name": (["runs", "rm", "--yes", "x" * 5000], "not a run"),
}


@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_absurd_options_are_refused_naming_the_option(tmp_path, name):
    out = good_out(tmp_path)
    args, named = OPTION_CASES[name]
    text = assert_refused([*args, "--out", str(out)], named)
    assert "9" * 500 not in text and "[" * 500 not in text  # the value is clipped
    assert sorted(p.name for p in (out / ".cache" / "steps" / KEY[:2]).iterdir()) == [KEY]  # nothing removed
    assert (out / "p" / "20260101-100000-good").is_dir()


@pytest.mark.parametrize("value", ["1e999", "9" * 5000, "x: [1, 2]", "!!python/object:os.system ls", "&a 1"])
def test_odd_but_harmless_param_values_are_compared_as_given(tmp_path, value):
    out = good_out(tmp_path)
    code, stdout, stderr = studio("runs", "find", "--out", str(out), "--param", "prompt=" + value, "--json")
    assert code == 0 and json.loads(stdout) == [], (stdout, stderr)


def test_an_output_folder_whose_name_is_not_utf8_is_refused_naming_out(tmp_path):
    out = tmp_path / os.fsdecode(b"runs-\xff")
    write_run(out, "20260101-100000-good")
    assert_refused(["runs", "list", "--out", str(out)], "--out", "UTF-8")
    assert sorted(p.name for p in out.iterdir()) == ["p"]


def test_escape_sequences_from_a_manifest_never_reach_the_terminal(tmp_path):
    out = good_out(tmp_path)
    write_run(out, "20260102-100000-bad", manifest(pipeline="\x1b]0;owned\x07\x1b[2J", source="\x1b[31m",
                                                   status="done\x1b[8m"))
    code, stdout, stderr = studio("runs", "list", "--out", str(out))
    assert code == 0 and "\x1b" not in stdout + stderr and "\\x1b" in stdout


def test_the_library_refuses_out_of_range_values_too(tmp_path):
    from studio.errors import UserError
    from studio.runs.cache_admin import collect
    from studio.runs.history import find, runs

    out = good_out(tmp_path)
    for call, named in ((lambda: find(out, seed=10**30), "--seed"), (lambda: find(out, limit=10**30), "--limit"),
                        (lambda: runs(out, limit=-1), "--limit"),
                        (lambda: collect(out, older_than_days=float("nan")), "--older-than"),
                        (lambda: collect(out, max_bytes=10**40), "--max-gb")):
        with pytest.raises(UserError, match=named):
            call()
    assert (out / ".cache" / "steps" / KEY[:2] / KEY).is_dir()


# --- D. deep folders and links inside run folders --------------------------------------


def test_folders_1100_deep_in_a_run_and_in_the_cache_are_measured_and_removed_iteratively(tmp_path):
    out = good_out(tmp_path)
    bad = write_run(out, "20260102-100000-bad")
    deep_folders(bad / "deep", 1100)
    entry = out / ".cache" / "steps" / "cd" / ("cd" + "1" * 62)
    deep_folders(entry, 1100)
    try:
        runs = listed(out)
        assert bad_run_of(runs)["bytes"] >= 0
        code, stdout, _ = studio("cache", "info", "--out", str(out), "--json")
        assert code == 0 and json.loads(stdout)["entries"] == 2
        code, stdout, stderr = studio("cache", "gc", "--out", str(out), "--max-gb", "0")
        assert code == 0 and "removed 1 entries" in stdout, (stdout, stderr)
        assert not entry.exists()
        code, stdout, stderr = studio("runs", "rm", "--out", str(out), "--yes", str(bad))
        assert code == 0 and not bad.exists(), (stdout, stderr)
        assert [r["run_id"] for r in listed(out)] == ["20260101-100000-good"]
    finally:
        for left in (bad, entry):
            if left.exists():
                remove_tree(left)


def test_links_out_of_a_run_folder_are_neither_counted_nor_followed_nor_removed(tmp_path):
    out = good_out(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "big").write_bytes(b"x" * 2_000_000)
    (elsewhere / "sub").mkdir()
    (elsewhere / "sub" / "f").write_text("keep")
    bad = write_run(out, "20260102-100000-bad")
    (bad / "to-folder").symlink_to(elsewhere)
    (bad / "to-file").symlink_to(elsewhere / "big")
    (bad / "to-root").symlink_to("/")
    began = time.monotonic()
    run = bad_run_of(listed(out))
    assert run["bytes"] < 100_000 and time.monotonic() - began < 5
    code, stdout, stderr = studio("runs", "rm", "--out", str(out), "--yes", str(bad))
    assert code == 0 and not bad.exists()
    assert (elsewhere / "big").stat().st_size == 2_000_000 and (elsewhere / "sub" / "f").read_text() == "keep"


# --- E. runs rm never removes anything outside OUT --------------------------------------


def outside_run(tmp_path: Path) -> Path:
    run = tmp_path / "outside" / "p" / "20260101-000000-x"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(manifest()))
    (run / "precious").write_text("keep")
    return run


RM_TARGETS: dict[str, Callable[[Path, Path, Path], str]] = {
    # (out, the outside run, tmp_path) -> the target given to runs rm
    "a-run-outside": lambda out, run, tmp: str(run),
    "dot-dot-out-of-OUT": lambda out, run, tmp: str(out / "p" / ".." / ".." / "outside" / "p" / run.name),
    "a-link-in-OUT-to-a-run-outside": lambda out, run, tmp: (
        (out / "p" / "20260105-000000-link").symlink_to(run), str(out / "p" / "20260105-000000-link"))[1],
    "a-pipeline-folder-linked-outside": lambda out, run, tmp: (
        (out / "q").symlink_to(run.parent), str(out / "q" / run.name))[1],
    "a-latest-link-pointing-outside": lambda out, run, tmp: (
        (out / "r").mkdir(), (out / "r" / "latest").symlink_to(run), "r")[2],
    "a-pipeline-name-with-dot-dot": lambda out, run, tmp: "../outside/p",
    "the-cache-folder": lambda out, run, tmp: (
        (out / ".cache" / "steps" / "manifest.json").write_text("{}"), str(out / ".cache" / "steps"))[1],
    "OUT-itself": lambda out, run, tmp: ((out / "manifest.json").write_text("{}"), str(out))[1],
}


@pytest.mark.parametrize("name", list(RM_TARGETS))
def test_runs_rm_never_removes_anything_outside_OUT(tmp_path, name):
    out = good_out(tmp_path)
    run = outside_run(tmp_path)
    target = RM_TARGETS[name](out, run, tmp_path)
    code, stdout, stderr = studio("runs", "rm", "--out", str(out), "--yes", target)
    assert code == 2 and "nothing was removed" in stderr or "is not a run" in stderr, (code, stdout, stderr)
    assert (run / "precious").read_text() == "keep" and (run / "manifest.json").is_file()
    assert (out / "p" / "20260101-100000-good" / "manifest.json").is_file()
    assert (out / ".cache" / "steps" / KEY[:2] / KEY).is_dir()


def test_runs_rm_without_an_answer_removes_nothing_and_says_so(tmp_path):
    out = good_out(tmp_path)
    text = assert_refused(["runs", "rm", "--out", str(out), "latest"], "--yes", input="")
    assert "was not removed" in text and (out / "p" / "20260101-100000-good").is_dir()


# --- F. a cache folder that is a link out of OUT ----------------------------------------


@pytest.mark.parametrize("which", [".cache", ".cache/steps"])
def test_a_cache_folder_linked_out_of_OUT_is_refused_and_nothing_there_removed(tmp_path, which):
    out = tmp_path / "runs"
    write_run(out, "20260101-100000-good")
    elsewhere = tmp_path / "elsewhere"
    entry = elsewhere / ("steps" if which == ".cache" else "") / "ef" / ("ef" + "2" * 62)
    entry.mkdir(parents=True)
    (entry / "entry.json").write_text("{}")
    if which == ".cache":
        (out / ".cache").symlink_to(elsewhere)
    else:
        (out / ".cache").mkdir()
        (out / ".cache" / "steps").symlink_to(elsewhere)
    assert_refused(["cache", "gc", "--out", str(out), "--older-than", "0", "--include-listed"], which, "link")
    assert_refused(["cache", "info", "--out", str(out)], which, "link")
    assert (entry / "entry.json").is_file()


def test_cache_entries_that_are_links_are_not_entries(tmp_path):
    out = good_out(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "f").write_text("keep")
    (out / ".cache" / "steps" / "ab" / ("ab" + "3" * 62)).symlink_to(elsewhere)
    (out / ".cache" / "steps" / "cd").symlink_to(elsewhere)
    code, stdout, stderr = studio("cache", "gc", "--out", str(out), "--older-than", "0", "--include-listed")
    assert code == 0 and "removed 1 entries" in stdout, (stdout, stderr)
    assert (elsewhere / "f").read_text() == "keep"


# --- G. runs show -------------------------------------------------------------------------


def test_runs_show_json_of_a_deeply_nested_manifest_is_a_message(tmp_path):
    out = good_out(tmp_path)
    run = write_run(out, "20260102-100000-bad", manifest(extra=nested(900)))
    code, stdout, stderr = studio("runs", "show", str(run), "--json")
    assert code in (0, 2) and "Traceback" not in stderr
    if code == 2:
        assert "manifest.json" in stderr
    code, stdout, stderr = studio("runs", "show", str(run))
    assert code == 0, stderr


# --- H. through the real entry point ------------------------------------------------------


def test_the_real_command_line_on_a_hostile_output_folder(tmp_path):
    """One subprocess: the index a FIFO, a dangling link beside it as the journal, a
    manifest claiming a pid of 2**40, a 10**30 seed: every command answers at once."""
    out = good_out(tmp_path)
    os.mkfifo(out / INDEX)
    write_run(out, "20260102-100000-bad", with_items(item(seed=10**30)))
    write_run(out, "20260103-100000-bad2", manifest(status="running", process={"pid": 2**40, "host": "x"}))
    env = {**os.environ, "STUDIO_LOAD_PLUGINS": "utils"}
    script = ("import sys; from studio.cli import main\n"
              "for args in (['runs','list'], ['cache','info'], ['cache','gc','--max-gb','0'], "
              "['runs','find','--seed','7'], ['runs','show','latest']):\n"
              f"    sys.argv = ['studio', *args, '--out', {str(out)!r}]\n"
              "    try:\n        main()\n    except SystemExit as e:\n        print('EXIT', args[0], args[1], e.code)\n")
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert time.monotonic() - began < 30
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    exits = [line for line in proc.stdout.splitlines() if line.startswith("EXIT")]
    assert exits == ["EXIT runs list 0", "EXIT cache info 0", "EXIT cache gc 0", "EXIT runs find 0",
                     "EXIT runs show 0"] or all(e.endswith((" 0", " None")) for e in exits), (exits, proc.stderr)
    assert "seed" in proc.stderr and (out / INDEX).is_file()
