"""Run history (`studio runs list/show/find/rm`, the SQLite index built from the
manifests, `latest` links) and the cache's upkeep (hard links, `studio cache info/gc`)."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest
from click.testing import CliRunner

from studio.cli import cli
from studio.runs.history import INDEX, find, resolve, runs
from studio.testing import run_yaml

PIPELINE = """
    name: {name}
    seed: 3
    steps:
      - {{id: words, uses: fake.text, sweep: {{prompt: [red, blue]}}}}
      - id: pic
        uses: fake.image
        with: {{prompt: "${{steps.words.outputs.text}}", size: {size}}}
"""


def run(tmp_path, name="alpha", size=6, **kwargs):
    return run_yaml(PIPELINE.format(name=name, size=size), tmp_path, **kwargs)


def cli_json(*args):
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_runs_are_listed_newest_first_with_their_counts_and_filtered(tmp_path):
    first = run(tmp_path)
    time.sleep(1.1)  # run ids and start times are to the second
    second = run(tmp_path)  # fully cached
    time.sleep(1.1)
    other = run(tmp_path, name="beta", size=8)
    out = tmp_path / "runs"
    listed = runs(out)
    assert [r.run_dir for r in listed] == [str(other.run_dir), str(second.run_dir), str(first.run_dir)]
    assert (listed[2].done, listed[2].cached, listed[2].failed, listed[2].items) == (4, 0, 0, 4)
    assert (listed[1].done, listed[1].cached) == (0, 4)
    assert listed[0].pipeline == "beta" and listed[0].source.endswith("pipeline.yaml") and listed[0].bytes > 0
    assert [r.run_dir for r in runs(out, pipeline="alpha")] == [str(second.run_dir), str(first.run_dir)]
    assert runs(out, status="failed") == []
    today = time.strftime("%Y-%m-%d")
    assert len(runs(out, since=today, until=today)) == 3 and runs(out, until="2000-01-01") == []
    assert cli_json("runs", "list", "--out", str(out), "--name", "beta")[0]["run_dir"] == str(other.run_dir)


def test_the_index_follows_the_manifests_and_is_rebuilt_when_damaged(tmp_path):
    first = run(tmp_path)
    out = tmp_path / "runs"
    assert len(runs(out)) == 1 and (out / INDEX).is_file()
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    manifest["status"] = "failed"  # the manifest is the source of truth: a change shows
    (first.run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert runs(out)[0].status == "failed"
    (out / INDEX).write_bytes(b"not a database at all" * 100)
    assert len(runs(out)) == 1  # rebuilt from the manifests
    with sqlite3.connect(out / INDEX) as db:
        db.execute("PRAGMA user_version = 99")  # another version's index: rebuilt too
    assert len(runs(out)) == 1
    import shutil

    shutil.rmtree(first.run_dir)
    assert runs(out) == []  # a removed run is forgotten


def test_latest_links_and_what_runs_show_accepts(tmp_path):
    first = run(tmp_path)
    time.sleep(1.1)
    second = run(tmp_path, size=7)
    out = tmp_path / "runs"
    link = out / "alpha" / "latest"
    assert link.is_symlink() and os.readlink(link) == second.run_dir.name
    assert resolve(out, "latest") == second.run_dir
    assert resolve(out, str(out / "alpha")) == second.run_dir
    assert resolve(out, "alpha") == second.run_dir
    assert resolve(out, str(first.run_dir)) == first.run_dir
    shown = cli_json("runs", "show", "latest", "--out", str(out))
    assert shown["run_dir"] == str(second.run_dir)
    result = CliRunner().invoke(cli, ["runs", "show", "nothing-here", "--out", str(out)])
    assert result.exit_code == 2 and "'nothing-here' is not a run" in result.output


def test_runs_find_by_step_generator_seed_and_parameter(tmp_path):
    run(tmp_path)
    run(tmp_path, name="beta", size=8)
    out = tmp_path / "runs"
    red = find(out, step="words", params={"prompt": "red"})
    assert [i["name"] for i in red] == ["words@prompt=red", "words@prompt=red"]
    assert {i["pipeline"] for i in find(out, uses="fake.image", params={"size": 8})} == {"beta"}
    seed = red[0]["seed"]
    assert all(i["seed"] == seed for i in find(out, seed=seed))
    found = cli_json("runs", "find", "--out", str(out), "--uses", "fake.image", "--param", "size=6")
    assert len(found) == 2 and all(i["pipeline"] == "alpha" for i in found)
    result = CliRunner().invoke(cli, ["runs", "find", "--out", str(out), "--param", "size"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output


def test_runs_rm_removes_a_run_and_moves_latest_back(tmp_path):
    first = run(tmp_path)
    time.sleep(1.1)
    second = run(tmp_path, size=7)
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["runs", "rm", "latest", "--out", str(out), "--yes"])
    assert result.exit_code == 0, result.output
    assert not second.run_dir.exists() and first.run_dir.exists()
    assert os.readlink(out / "alpha" / "latest") == first.run_dir.name
    assert [r.run_dir for r in runs(out)] == [str(first.run_dir)]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    result = CliRunner().invoke(cli, ["runs", "rm", str(outside), "--out", str(out), "--yes"])
    assert result.exit_code == 2 and "is not a run folder below" in result.output and outside.exists()


def test_cached_items_are_hard_links_and_gc_keeps_what_runs_recorded(tmp_path):
    first = run(tmp_path)
    second = run(tmp_path)
    out = tmp_path / "runs"
    for item in second.step("pic"):
        made = item.artifacts["image"].path
        assert made.stat().st_nlink >= 2  # the run's file and the cache entry share the blocks
        original = first.items[item.name].artifacts["image"].path
        assert os.path.samefile(made, original)
    info = cli_json("cache", "info", "--out", str(out))
    assert info["entries"] == 4 and info["entries_runs_recorded"] == 4
    entry_files = sum(p.stat().st_blocks * 512 for p in (out / ".cache" / "steps").rglob("entry.json"))
    assert info["bytes_alone"] == entry_files < info["bytes"]  # the outputs are the runs' own files

    result = CliRunner().invoke(cli, ["cache", "gc", "--out", str(out), "--max-gb", "0"])
    assert result.exit_code == 0 and "removed 0 entries" in result.output and "kept" in result.output
    import shutil

    shutil.rmtree(first.run_dir)
    shutil.rmtree(second.run_dir)
    result = CliRunner().invoke(cli, ["cache", "gc", "--out", str(out), "--older-than", "0"])
    assert result.exit_code == 0 and "removed 4 entries" in result.output
    assert cli_json("cache", "info", "--out", str(out))["entries"] == 0
    again = run(tmp_path)
    assert all(i.status == "done" for i in again.items.values())  # made afresh, nothing lost


def test_a_hard_linked_output_edited_in_place_is_not_served_from_the_cache(tmp_path):
    first = run(tmp_path)
    item = first.step("words")[0]
    path = item.artifacts["text"].path
    with open(path, "r+b") as f:  # an editor saving in place: the cache entry shares the file
        f.write(b"X")
    again = run(tmp_path)
    redone = again.items[item.name]
    assert redone.status == "done" and redone.artifacts["text"].path.read_text() == "red"


@pytest.mark.parametrize("count", [300])
def test_listing_many_runs_reads_only_new_manifests(tmp_path, count, monkeypatch):
    import studio.runs.history_index as history_index

    base = run(tmp_path)
    out = tmp_path / "runs"
    for n in range(count):  # copies of one run under other ids, as a long history would hold
        copy = base.run_dir.parent / f"20200101-{n:06d}-copy"
        copy.mkdir()
        (copy / "manifest.json").write_bytes((base.run_dir / "manifest.json").read_bytes())
    assert len(runs(out, limit=10_000)) == count + 1
    reads = []
    original = history_index._store
    monkeypatch.setattr(history_index, "_store", lambda db, d, s: reads.append(d) or original(db, d, s))
    assert len(runs(out, limit=10_000)) == count + 1
    assert reads == []  # nothing changed: no manifest read again
