"""`studio dataset` attacked: run folders whose manifest.json holds the wrong types or
artifact paths that leave the run, and -o/--split values that would write elsewhere.

Every case goes through the real entry point (studio.cli.main, in this process: the
command imports no model library) and checks what a user sees: exit 2, a message naming
the place (manifest.json and the field, or the option), no traceback, an answer in
bounded time, and nothing written: not under -o, not beside it, not outside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from test_hostile import cli_main, png, snapshot

BUDGET_S = 5.0  # a refusal reads one small manifest; slack for a shared CI machine


def main(argv: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str, float]:
    """`studio ARGV` through studio.cli.main in this process: (exit code, stdout + stderr, seconds)."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    return cli_main(argv, monkeypatch, capsys)


def item(name: str = "pics@seed=1", path: Any = "pics/0/image.png", **changes: Any) -> dict[str, Any]:
    entry = {"name": name, "status": "done", "seed": 1, "labels": {"seed": 1},
             "params": {"prompt": "a red apple", "class_label": "apple"},
             "artifacts": {"image": {"path": path, "media_type": "image/png", "sha256": "0" * 64, "size": 100}}}
    entry.update(changes)
    return entry


def make_run(root: Path, items: Any = None, steps: Any = None) -> Path:
    """A finished run folder with two PNGs, its manifest as given."""
    run = root / "run"
    for i in range(2):
        (run / "pics" / str(i)).mkdir(parents=True, exist_ok=True)
        (run / "pics" / str(i) / "image.png").write_bytes(png())
    if steps is None:
        steps = {"pics": {"uses": "fake.image", "status": "done",
                          "items": items if items is not None else [item(), item("pics@seed=2", "pics/1/image.png")]}}
    (run / "manifest.json").write_text(json.dumps({"pipeline": "p", "status": "done", "steps": steps}))
    return run


def with_artifact(**fields: Any) -> list:
    artifact = {"path": "pics/0/image.png", "media_type": "image/png", "sha256": "0" * 64, "size": 100, **fields}
    return [item(artifacts={"image": artifact})]


def outside_link(root: Path) -> None:
    (root / "secret.png").write_bytes(png())
    (root / "run" / "pics" / "0" / "image.png").unlink()
    (root / "run" / "pics" / "0" / "image.png").symlink_to(root / "secret.png")


def fifo_artifact(root: Path) -> None:
    (root / "run" / "pics" / "0" / "image.png").unlink()
    os.mkfifo(root / "run" / "pics" / "0" / "image.png")


# (id, the run's items or steps, something done to the folder after, the field named)
DAMAGED: list[tuple[str, dict[str, Any], Callable[[Path], None] | None, str]] = [
    ("step-is-a-list", {"steps": {"pics": ["a"]}}, None, "steps.pics: ['a']"),
    ("items-is-a-number", {"steps": {"pics": {"items": 5}}}, None, "steps.pics.items: 5"),
    ("item-is-a-string", {"items": ["pics/0/image.png"]}, None, "steps.pics.items[0]: 'pics/0/image.png'"),
    ("status-is-a-list", {"items": [item(status=["done"])]}, None, "steps.pics.items[0].status"),
    ("params-is-a-list", {"items": [item(params=[1, 2])]}, None, "steps.pics.items[0].params"),
    ("labels-is-a-string", {"items": [item(labels="seed=1")]}, None, "steps.pics.items[0].labels"),
    ("artifacts-is-a-list", {"items": [item(artifacts=["pics/0/image.png"])]}, None,
     "steps.pics.items[0].artifacts"),
    ("artifact-is-a-string", {"items": [item(artifacts={"image": "pics/0/image.png"})]}, None,
     "steps.pics.items[0].artifacts.image: 'pics/0/image.png'"),
    ("path-is-a-number", {"items": with_artifact(path=5)}, None, "artifacts.image.path: 5"),
    ("path-is-null", {"items": with_artifact(path=None)}, None, "artifacts.image.path: None"),
    ("path-is-a-list", {"items": with_artifact(path=["a"])}, None, "artifacts.image.path: ['a']"),
    ("media-type-is-a-list", {"items": with_artifact(media_type=["image/png"])}, None,
     "artifacts.image.media_type"),
    ("path-is-absolute", {"items": with_artifact(path="/etc/hostname")}, None, "artifacts.image.path: '/etc/hostname'"),
    ("path-climbs-out", {"items": with_artifact(path="../secret.png")}, None, "artifacts.image.path: '../secret.png'"),
    ("path-links-out", {}, outside_link, "links to"),
    ("path-is-a-fifo", {}, fifo_artifact, "a pipe or a device"),
    ("path-is-a-folder", {"items": with_artifact(path="pics/0")}, None, "artifacts.image.path: 'pics/0'"),
    ("path-is-missing", {"items": with_artifact(path="pics/9/image.png")}, None, "cannot be read"),
    ("name-is-a-list", {"items": [item(name=["x"])]}, None, "steps.pics.items[0].name"),
    ("seed-is-a-string", {"items": [item(seed="1")]}, None, "steps.pics.items[0].seed: '1'"),
    ("seed-is-huge", {"items": [item(seed=10**30)]}, None, "steps.pics.items[0].seed"),
    ("caption-is-huge", {"items": [item(params={"prompt": "x" * 200_000})]}, None, "params.prompt"),
    ("step-is-null", {"steps": {"pics": None}}, None, "steps.pics: None"),
]


@pytest.mark.parametrize("case", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_a_damaged_manifest_is_refused_by_its_field(case, tmp_path, monkeypatch, capsys):
    name, manifest, patch, field = case
    run = make_run(tmp_path, items=manifest.get("items"), steps=manifest.get("steps"))
    if patch:
        patch(tmp_path)
    before = snapshot(tmp_path)
    code, output, seconds = main(["dataset", str(run), "-o", str(tmp_path / "ds")], tmp_path, monkeypatch, capsys)
    assert code == 2, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert "manifest.json" in output and field in output, output
    assert seconds < BUDGET_S, seconds
    assert len(output) < 3000, output
    assert snapshot(tmp_path) == before, sorted(snapshot(tmp_path) - before)


SPLITS = ["../../x", "../x", "/tmp/x", "a/b", "", ".", "..", ".hidden", "tr\x1bain", "x" * 101, "tr\nain"]


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: repr(s)[:20])
def test_a_split_is_one_folder_name_inside_o(split, tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "a" / "b")
    before = snapshot(tmp_path)
    code, output, seconds = main(["dataset", str(run), "-o", "ds", "--split", split], tmp_path / "a", monkeypatch,
                                 capsys)
    assert code == 2 and "--split" in output and "Traceback" not in output, output
    assert "\x1b" not in output
    assert seconds < BUDGET_S
    assert snapshot(tmp_path) == before, sorted(snapshot(tmp_path) - before)


def test_o_that_links_elsewhere_or_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "ds").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "train").symlink_to(tmp_path / "elsewhere")
    before = snapshot(tmp_path)
    for argv, where in ((["-o", "ds"], "-o ds is a link"), (["-o", "file"], "-o file exists and is not a folder"),
                        (["-o", "real", "--split", "train"], "--split real/train is a link"),
                        (["-o", "file/sub"], "file is not a folder")):
        code, output, seconds = main(["dataset", str(run), *argv], tmp_path, monkeypatch, capsys)
        assert code == 2 and where in output and "Traceback" not in output, (argv, output)
        assert seconds < BUDGET_S
    assert snapshot(tmp_path) == before
    assert (tmp_path / "file").read_text() == "mine"


def test_labels_and_names_that_look_like_paths_stay_inside_o(tmp_path, monkeypatch, capsys):
    labels = ["../../evil", "/etc", "a/b", "a_b", "x" * 5000, "", "\x1b[31mred", "..", None]
    items = []
    for i, label in enumerate(labels):
        (tmp_path / "run" / "pics" / str(i)).mkdir(parents=True)
        (tmp_path / "run" / "pics" / str(i) / "image.png").write_bytes(png())
        items.append(item(name=["../../up", "/abs", "a" * 900][i % 3] + str(i), path=f"pics/{i}/image.png",
                          params={"class_label": label, "prompt": "p"}))
    run = make_run(tmp_path, items=items)
    outside = snapshot(tmp_path)
    code, output, _ = main(["dataset", str(run), "-o", "ds", "--layout", "classes"], tmp_path, monkeypatch, capsys)
    assert code == 0, output
    written = snapshot(tmp_path) - outside
    assert written and all(p == "ds" or p.startswith("ds/") for p in written), sorted(written)
    files = [p for p in written if p.endswith(".png")]
    assert len(files) == len(labels)
    assert all(len(part) <= 100 for p in files for part in p.split("/")), files
    folders = {p.split("/")[1] for p in files}
    assert len(folders) == len(labels)  # labels that read alike once made safe (a/b, a_b; "" and none) stay apart


def test_a_failed_export_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    import studio.runs.dataset

    run = make_run(tmp_path)
    calls = []

    def place(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())

    monkeypatch.setattr(studio.runs.dataset, "_place", place)
    before = snapshot(tmp_path)
    code, output, _ = main(["dataset", str(run), "-o", "new/deeper/ds"], tmp_path, monkeypatch, capsys)
    assert code == 2 and "disk full" in output and "Traceback" not in output, output
    assert len(calls) == 2
    assert snapshot(tmp_path) == before, sorted(snapshot(tmp_path) - before)  # not even new/deeper


def test_a_sound_run_still_exports(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path)
    code, output, _ = main(["dataset", str(run), "-o", "ds", "--split", "train"], tmp_path, monkeypatch, capsys)
    assert code == 0, output
    rows = [json.loads(line) for line in (tmp_path / "ds" / "train" / "metadata.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["apple", "apple"] and rows[0]["text"] == "a red apple"
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["train"]
