"""Property-based fuzzing of the run-index reader (studio.runs.history's _refresh/_store, and
the manifest and journal readers under them).

Beside one good run, a run folder gets an arbitrary JSON manifest (any JSON value; or
Studio's manifest with one field, at any depth, replaced by any JSON value; or a
manifest still "running" with arbitrary journal lines, JSON or not). Whatever it holds:

- indexing never raises: the run is either indexed (its values of the types the index
  stores) or listed as "unreadable" with a note saying why;
- `runs list`, `runs find`, `cache info` and `cache gc` still answer with exit 0 and
  still see the good run and the cache entry it recorded.

Deterministic (`derandomize=True`, no example database) with a fixed number of examples,
so CI sees the same inputs on every run (the project's settings, see test_fuzz.py).
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hypothesis import HealthCheck, Phase, given, settings  # the `test` extra
from hypothesis import strategies as st

from studio.cli import cli
from studio.runs.history import find, recorded_cache_keys, runs

EXAMPLES = 120
PER_EXAMPLE_S = 10.0
KEY = "ab" + "0" * 62

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # timed below, per example
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)

GOOD = {
    "pipeline": "p", "source": "/x/pipeline.yaml", "status": "done", "started": "2026-01-01T10:00:00+0000",
    "seconds": 1.5, "seed": 3,
    "steps": {"a": {"uses": "fake.text", "items": [
        {"name": "a-1", "status": "done", "seed": 7, "seconds": 0.1, "params": {"prompt": "red"}, "cache_key": KEY}]}},
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 2**31, 2**40, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None), max_size=20),  # lone surrogates too (written as \\udcff escapes)
    st.sampled_from(["done", "failed", "running", "pending", "cached", "interrupted", "unreadable", "\x1b[2J",
                     "../../etc", KEY, "x" * 5000]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(st.characters(codec=None), max_size=8), children, max_size=5)),
    max_leaves=25,
)
DEEP = "@@deep@@"  # replaced in the manifest's text by a list nested 30 to 3,000 deep

# where a field may be replaced: a path into GOOD (keys, or list indexes)
PATHS = [
    (), ("pipeline",), ("source",), ("status",), ("started",), ("seconds",), ("steps",), ("steps", "a"),
    ("steps", "a", "uses"), ("steps", "a", "items"), ("steps", "a", "items", 0),
    *[("steps", "a", "items", 0, k) for k in ("name", "status", "seed", "seconds", "params", "cache_key")],
    ("steps", "a", "items", 0, "params", "prompt"), ("process",), ("steps", "b"),
]


def replaced(path: tuple, value: Any, status: str) -> Any:
    data = copy.deepcopy(GOOD)
    data["status"] = status
    if not path:
        return value
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


def as_text(value: Any, depth: int) -> str:
    """The manifest's text: JSON (NaN, Infinity and \\udcff escapes included), with a
    list `depth` deep where DEEP stands."""
    return json.dumps(value).replace(json.dumps(DEEP), "[" * depth + "]" * depth)


manifests = st.builds(as_text, st.one_of(
    json_values,
    st.builds(replaced, st.sampled_from(PATHS), st.one_of(json_values, st.just(DEEP)),
              st.sampled_from(["done", "running"])),
), st.integers(min_value=30, max_value=3000))
journal_lines = st.lists(st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    st.builds(lambda fields: json.dumps({"record": "item", "step": "a", "name": "a-1", **fields}),
              st.dictionaries(st.sampled_from(["status", "seed", "seconds", "params", "cache_key", "name", "record"]),
                              json_values, max_size=4)),
    st.builds(lambda status: json.dumps({"record": "end", "status": status}), json_values),
    st.builds(lambda process: json.dumps({"record": "run", "process": process}), json_values),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
), max_size=6)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """OUT with one good run and the cache entry it recorded; each example rewrites the
    bad run beside them."""
    out = tmp_path_factory.mktemp("fuzz-history") / "runs"
    good = out / "p" / "20260101-100000-good"
    good.mkdir(parents=True)
    (good / "manifest.json").write_text(json.dumps(GOOD))
    entry = out / ".cache" / "steps" / KEY[:2] / KEY
    entry.mkdir(parents=True)
    (entry / "entry.json").write_text("{}")
    (out / "p" / "20260102-100000-bad").mkdir()
    return out


@FUZZ_SETTINGS
@given(manifest=manifests, lines=journal_lines, running=st.booleans())
def test_any_manifest_or_journal_is_indexed_or_noted_never_an_exception(out, manifest, lines, running):
    from studio.execute.manifest import this_process

    bad = out / "p" / "20260102-100000-bad"
    if running and manifest.startswith("{") and manifest != "{}":  # a running run of this process: its journal is read
        manifest = '{"status": "running", "process": ' + json.dumps(this_process()) + ", " + manifest[1:]
    (bad / "manifest.json").write_text(manifest)
    journal = bad / "journal.jsonl"
    if lines:
        journal.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    elif journal.exists():
        journal.unlink()
    os.utime(bad / "manifest.json", ns=(time.time_ns(), time.time_ns()))  # a new stamp even at the same size

    began = time.monotonic()
    notes: list[str] = []
    listed = {r.run_id: r for r in runs(out, notes=notes)}
    assert listed["20260101-100000-good"].done == 1
    run = listed["20260102-100000-bad"]  # indexed, or listed as unreadable: never missing
    assert isinstance(run.status, str) and run.status and isinstance(run.note, str)
    assert type(run.items) is int and 0 <= run.items <= 100_000
    assert run.seconds is None or isinstance(run.seconds, float)
    if run.status == "unreadable":
        assert run.note, run
    found = find(out, params={"prompt": "red"})
    assert any(i["run_dir"].endswith("-good") for i in found)
    for i in find(out):
        assert isinstance(i["params"], dict) and (i["seed"] is None or 0 <= i["seed"] < 2**63)
        json.dumps(i, default=str)
    assert KEY in recorded_cache_keys(out)

    runner = CliRunner()
    for args in (["runs", "list", "--json"], ["cache", "info", "--json"], ["cache", "gc", "--max-gb", "0"],
                 ["runs", "find", "--uses", "fake.text"], ["runs", "show", str(bad)]):
        result = runner.invoke(cli, [*args] if args[1] == "show" else [*args, "--out", str(out)])
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
        expected = (0, 2) if args[1] == "show" else (0,)  # show reads the manifest itself: damaged is exit 2
        assert result.exit_code in expected, (args, result.output)
        assert "Traceback" not in result.output
    assert (out / ".cache" / "steps" / KEY[:2] / KEY).is_dir()  # the good run's entry is kept
    assert time.monotonic() - began < PER_EXAMPLE_S
