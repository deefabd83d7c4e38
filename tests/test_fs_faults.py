"""File-system faults: a full disk, a read-only folder, an --out that is a file, run
folders that are symbolic links, and a step cache that someone tampered with. Each
gives a message naming the path and the right exit code, never a traceback, and no
finished item goes unrecorded.

Real file systems (a tiny tmpfs, read-only mounts) are used when the tests run as root
and may mount; the same faults are also simulated in-process, so they are tested
everywhere."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import studio.host.plugins
import studio.execute.cache
import studio.execute.item_outputs
import studio.execute.manifest
from studio.cli import cli
from studio.errors import UserError
from studio.execute.artifacts import sha256_file
from studio.execute.cache import ENTRY, DamagedEntry, StepCache
from studio.execute.executor import Executor, RunWarning
from studio.execute.manifest import JOURNAL, read_manifest
from studio.generator import Artifact
from studio.hookspecs import hookimpl
from studio.testing import FakePlugin, make_host, run_yaml

SWEEP = "name: s\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 2, 3, 4, 5]}}\n"
ENV = {**os.environ, "STUDIO_LOAD_PLUGINS": "utils"}


def enospc(path="x"):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def fail_on_call(n: int, original, error=enospc):
    """`original`, except that its n-th call raises `error()`."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise error()
        return original(*args, **kwargs)

    return wrapper


def check_recorded(run_dir: Path) -> dict:
    """What read_manifest says about a run, checked against the files on disk."""
    manifest = read_manifest(run_dir)
    assert manifest["status"] != "running"
    for step in manifest["steps"].values():
        for item in step["items"]:
            assert bool(item["artifacts"]) == (item["status"] in ("done", "cached")), item
            for art in item["artifacts"].values():
                assert sha256_file(run_dir / art["path"]) == art["sha256"]
    assert not [p for p in run_dir.rglob("*") if ".partial" in p.name]
    return manifest


def statuses(manifest: dict) -> list[str]:
    return [i["status"] for s in manifest["steps"].values() for i in s["items"]]


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("fake", FakePlugin())]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(SWEEP)

    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    return run


# --- a full disk, simulated ----------------------------------------------------------------


def test_a_full_disk_while_writing_an_artifact_stops_the_run_and_keeps_what_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(studio.execute.item_outputs, "atomic_write", fail_on_call(3, studio.execute.item_outputs.atomic_write))
    result = run_yaml(SWEEP, tmp_path)
    assert result.status == "failed"
    third = result.run_dir / "a@seed=3" / "image.png"
    assert result.error == f"disk full at {third}: free space or use --out on another disk"
    items = [result.items[f"a@seed={n}"] for n in range(1, 6)]
    assert [r.status for r in items] == ["done", "done", "failed", "interrupted", "interrupted"]
    assert items[2].error_kind == "environment" and items[3].error == "not made: the run stopped early"
    manifest = check_recorded(result.run_dir)
    assert statuses(manifest) == ["done", "done", "failed", "interrupted", "interrupted"]
    assert manifest["error"] == result.error


def test_a_full_disk_exits_2_with_the_path(invoke, monkeypatch, tmp_path):
    monkeypatch.setattr(studio.execute.item_outputs, "atomic_write", fail_on_call(2, studio.execute.item_outputs.atomic_write))
    result = invoke("run", "p.yaml", "-q")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Error: disk full at " in result.output and "a@seed=2/image.png: free space or use --out on another " \
        "disk\n  finished artifacts are kept in runs/s/" in result.output


def cache_on_another_disk(*args, **kwargs):
    """os.link across file systems: the cache copies its files instead."""
    import errno

    raise OSError(errno.EXDEV, "Invalid cross-device link")


def test_a_full_cache_warns_and_every_item_is_done(tmp_path, monkeypatch):
    monkeypatch.setattr(studio.execute.cache.os, "link", cache_on_another_disk)
    monkeypatch.setattr(studio.execute.cache.shutil, "copyfile", fail_on_call(2, shutil.copyfile))
    with pytest.warns(RunWarning, match=r"the step cache is not written \(disk full at .*\.cache/steps: free"):
        result = run_yaml(SWEEP, tmp_path)
    assert result.status == "done" and result.error is None
    assert {r.status for r in result.items.values()} == {"done"}
    assert len(result.warnings) == 1  # once, not once per item
    manifest = check_recorded(result.run_dir)
    assert manifest["warnings"] == result.warnings
    monkeypatch.undo()
    again = run_yaml(SWEEP, tmp_path)  # the one stored before the disk filled is reused
    assert [r.status for r in again.items.values()] == ["cached", "done", "done", "done", "done"]


def test_a_full_cache_is_a_warning_on_the_command_line(invoke, monkeypatch):
    monkeypatch.setattr(studio.execute.cache.os, "link", cache_on_another_disk)
    monkeypatch.setattr(studio.execute.cache.shutil, "copyfile", fail_on_call(1, shutil.copyfile))
    result = invoke("run", "p.yaml", "-q")
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: the step cache is not written (disk full at ") == 1


def test_a_manifest_that_cannot_be_written_at_the_end_leaves_the_journal(tmp_path, monkeypatch):
    write = studio.execute.manifest.write_json_atomic

    def full_at_the_end(path, data):
        if data["status"] != "running":
            raise enospc(path)
        write(path, data)

    monkeypatch.setattr(studio.execute.manifest, "write_json_atomic", full_at_the_end)
    result = run_yaml(SWEEP, tmp_path)
    assert result.error.startswith(f"disk full at {result.manifest_path}: free space")
    assert (result.run_dir / JOURNAL).is_file()
    monkeypatch.undo()
    manifest = check_recorded(result.run_dir)
    assert manifest["status"] == "done" and statuses(manifest) == ["done"] * 5
    assert manifest["error"] == result.error


def test_a_journal_that_cannot_be_written_stops_the_run(tmp_path, monkeypatch):
    journal = studio.execute.manifest.Journal
    monkeypatch.setattr(journal, "append", fail_on_call(4, journal.append))  # header, 2 items, then full
    result = run_yaml(SWEEP, tmp_path)
    assert result.status == "failed"
    assert result.error == f"disk full at {result.run_dir / JOURNAL}: free space or use --out on another disk"
    assert statuses(check_recorded(result.run_dir)) == ["done", "done", "done", "interrupted", "interrupted"]


class HookFails:
    @hookimpl
    def artifact_saved(self, artifact, step):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/catalogue/index")


def test_any_other_file_error_is_named_not_a_traceback(tmp_path, invoke, monkeypatch):
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("fake", FakePlugin()), ("hook", HookFails())]))
    result = invoke("run", "p.yaml", "-q")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Error: /srv/catalogue/index: Permission denied\n  finished artifacts are kept in runs/s/" in result.output


# --- where the run goes ---------------------------------------------------------------------


def test_out_that_is_a_file_is_refused(invoke, tmp_path):
    (tmp_path / "out.txt").write_text("mine")
    result = invoke("run", "p.yaml", "--out", "out.txt")
    assert result.exit_code == 2
    assert result.output == "Error: cannot write to out.txt: it is a file, not a folder; give --out a folder\n"
    assert (tmp_path / "out.txt").read_text() == "mine"


def test_out_that_cannot_be_written_is_refused_and_nothing_is_left(invoke, tmp_path, monkeypatch):
    mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "ro" in self.parts:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = invoke("run", "p.yaml", "--out", "ro")
    assert result.exit_code == 2
    assert result.output == "Error: cannot write to ro: Read-only file system\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_run_folders_behind_symbolic_links_work(tmp_path):
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "s").symlink_to(elsewhere, target_is_directory=True)
    result = run_yaml(SWEEP, tmp_path)
    assert result.status == "done"
    assert result.run_dir.parent == tmp_path / "runs" / "s"  # as the user sees it
    manifest = check_recorded(result.run_dir)
    assert manifest["steps"]["a"]["items"][0]["artifacts"]["image"]["path"] == "a@seed=1/image.png"
    assert (elsewhere / result.run_dir.name / "a@seed=1" / "image.png").is_file()
    assert {r.status for r in run_yaml(SWEEP, tmp_path).items.values()} == {"cached"}


def test_out_behind_a_symbolic_link_works(tmp_path, invoke):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    result = invoke("run", "p.yaml", "-q", "--out", "link")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / result.output.strip()
    assert run_dir.parts[-3] == "link"
    shown = invoke("runs", "show", run_dir, "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["status"] == "done"


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", "/abs", ""])
def test_item_folders_cannot_leave_the_run_folder(tmp_path, name):
    executor = Executor.__new__(Executor)
    executor.run_dir = tmp_path / "run"
    with pytest.raises(UserError, match="would leave the run directory"):
        executor._item_dir(SimpleNamespace(dirname=name))


# --- real file systems: a tiny tmpfs, read-only mounts ----------------------------------------


@pytest.fixture
def mount(tmp_path):
    """mount(path, *options): a tmpfs at `path`, or with ("bind", src) a bind mount; unmounted
    after the test. Skips where this process may not mount."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting needs root")
    mounted: list[Path] = []

    def do(path: Path, options: str = "", bind: Path | None = None, read_only: bool = False) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if bind is None:
            command = ["mount", "-t", "tmpfs", "-o", options or "size=1m", "tmpfs", str(path)]
        else:
            command = ["mount", "--bind", str(bind), str(path)]
        if subprocess.run(command, capture_output=True).returncode != 0:
            pytest.skip("mount is not permitted here")
        mounted.append(path)
        if read_only:
            remount = "remount,bind,ro" if bind is not None else "remount,ro"
            assert subprocess.run(["mount", "-o", remount, str(path)], capture_output=True).returncode == 0
        return path

    yield do
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


CARDS = textwrap.dedent(f"""\
    name: cards
    steps:
      - id: card
        uses: image.title
        with: {{text: "fill the disk", width: 1024, height: 1024}}
        sweep: {{seed: {list(range(1, 31))}}}
""")


def studio_cmd(*args, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "cards.yaml").write_text(CARDS)
    return subprocess.run([sys.executable, "-m", "studio", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_a_really_full_disk(tmp_path, mount):
    full = mount(tmp_path / "full", "size=200k")
    result = studio_cmd("run", "cards.yaml", "--out", full, "-q", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Error: disk full at " in result.stderr and ": free space or use --out on another disk" in result.stderr
    (run_dir,) = [p for p in (full / "cards").iterdir() if p.name != "latest"]
    shown = studio_cmd("runs", "show", run_dir, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)
    assert manifest["status"] == "failed" and manifest["error"].startswith("disk full at ")
    done = [i for i in manifest["steps"]["card"]["items"] if i["status"] == "done"]
    assert done  # some fit before the disk filled, and they are recorded whole
    for item in done:
        art = item["artifacts"]["image"]
        assert sha256_file(run_dir / art["path"]) == art["sha256"]
    # the cache stores a finished image as a hard link to it (no second copy on the full
    # disk); where even its small entry file did not fit, the run said so
    linked = all((run_dir / i["artifacts"]["image"]["path"]).stat().st_nlink >= 2 for i in done)
    assert linked or "the step cache is not written (disk full at" in result.stderr


def test_a_really_full_cache_disk_is_only_a_warning(tmp_path, mount):
    mount(tmp_path / "runs" / ".cache", "size=100k")
    result = studio_cmd("run", "cards.yaml", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: the step cache is not written (disk full at ") == 1
    assert statuses(check_recorded(tmp_path / result.stdout.strip())) == ["done"] * 30


def test_a_read_only_out(tmp_path, mount):
    ro = mount(tmp_path / "ro", "size=1m", read_only=True)
    result = studio_cmd("run", "cards.yaml", "--out", ro, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"Error: cannot write to {ro}: Read-only file system\n"
    assert list(ro.iterdir()) == []


def test_a_read_only_cache_only_warns(tmp_path, mount):
    source = tmp_path / "cache-source"
    source.mkdir()
    mount(tmp_path / "runs" / ".cache", bind=source, read_only=True)
    result = studio_cmd("run", "cards.yaml", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: the step cache is not written (cannot write to ") == 1
    assert "Read-only file system" in result.stderr
    assert statuses(check_recorded(tmp_path / result.stdout.strip())) == ["done"] * 30


# --- the step cache is untrusted input ----------------------------------------------------------

KEY = "ab" * 32


@pytest.fixture
def entry(tmp_path):
    """A cache with one stored entry: (cache, entry directory, the artifact stored)."""
    source = tmp_path / "made" / "image.png"
    source.parent.mkdir()
    source.write_bytes(b"\x89PNG not really" * 10)
    art = Artifact(path=source, media_type="image/png", sha256=sha256_file(source), size=source.stat().st_size)
    cache = StepCache(tmp_path / "cache")
    cache.store(KEY, {"image": art}, {"synth": "x"})
    return cache, tmp_path / "cache" / KEY[:2] / KEY, art


def edit_entry(entry_dir: Path, change) -> None:
    data = json.loads((entry_dir / ENTRY).read_text())
    change(data)
    (entry_dir / ENTRY).write_text(json.dumps(data))


def test_an_intact_entry_is_used(entry, tmp_path):
    cache, _, art = entry
    found = cache.lookup(KEY)
    assert [(f.port, f.media_type, f.sha256) for f in found.files] == [("image", "image/png", art.sha256)]
    assert found.notes == {"synth": "x"}
    cache.copy_out(found.files[0], tmp_path / "copy.png")
    assert (tmp_path / "copy.png").read_bytes() == art.path.read_bytes()


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "..", ".", "", "sub/image.png",
                                  ".image.png.partial-1", ENTRY, "a\\b", "x\x00y", 7, None, ["image.png"]])
def test_unsafe_file_names_are_never_followed(entry, name):
    cache, entry_dir, _ = entry
    edit_entry(entry_dir, lambda d: d["files"]["image"].update(file=name))
    assert cache.lookup(KEY) is None


@pytest.mark.parametrize("change", [
    lambda d: d.clear(),
    lambda d: d.update(files=[]),
    lambda d: d.update(files={}),
    lambda d: d.update(files={"image": "image.png"}),
    lambda d: d.update(notes=["not", "a", "mapping"]),
    lambda d: d["files"]["image"].update(sha256=12),
    lambda d: d["files"]["image"].update(sha256="not hex"),
    lambda d: d["files"]["image"].update(size="150"),
    lambda d: d["files"]["image"].update(size=True),
    lambda d: d["files"]["image"].update(size=1),
    lambda d: d["files"]["image"].update(media_type=None),
    lambda d: d["files"].update({"../port": d["files"]["image"]}),
    lambda d: d["files"].update({"copy": d["files"]["image"]}),
], ids=["empty", "files-list", "no-files", "file-not-dict", "notes-list", "sha-int", "sha-text", "size-text",
        "size-bool", "size-wrong", "media-none", "bad-port", "same-file-twice"])
def test_entries_of_the_wrong_shape_are_misses(entry, change):
    cache, entry_dir, _ = entry
    edit_entry(entry_dir, change)
    assert cache.lookup(KEY) is None


@pytest.mark.parametrize("text", ["[]", "null", '"entry"', "{", "\xff\xfe", " " * (2 << 20) + "{}"])
def test_entry_files_that_are_not_json_objects_or_too_big_are_misses(entry, text):
    cache, entry_dir, _ = entry
    (entry_dir / ENTRY).write_text(text, encoding="latin-1")
    assert cache.lookup(KEY) is None


def test_links_and_odd_files_in_an_entry_are_not_followed(entry, tmp_path):
    cache, entry_dir, art = entry
    outside = tmp_path / "outside.png"
    shutil.copyfile(art.path, outside)  # the same bytes, but not inside the entry
    (entry_dir / "image.png").unlink()
    (entry_dir / "image.png").symlink_to(outside)
    assert cache.lookup(KEY) is None

    (entry_dir / "image.png").unlink()
    os.mkfifo(entry_dir / "image.png")  # reading it would hang
    assert cache.lookup(KEY) is None

    moved = tmp_path / "moved-entry"
    entry_dir.rename(moved)
    entry_dir.symlink_to(moved, target_is_directory=True)  # the entry itself a link
    assert cache.lookup(KEY) is None

    entry_dir.unlink()
    entry_dir.mkdir()
    (entry_dir / ENTRY).symlink_to(moved / ENTRY)
    assert cache.lookup(KEY) is None


def test_a_file_swapped_after_lookup_is_caught_as_it_is_copied(entry, tmp_path):
    cache, entry_dir, art = entry
    found = cache.lookup(KEY)
    data = bytearray(art.path.read_bytes())
    data[-1] ^= 1  # same size, different content
    (entry_dir / "image.png").write_bytes(bytes(data))
    with pytest.raises(DamagedEntry):
        cache.copy_out(found.files[0], tmp_path / "copy.png")


def test_a_bad_key_is_a_miss(entry):
    cache, _, _ = entry
    assert cache.lookup("../" + KEY[3:]) is None


def test_a_damaged_entry_is_repaired_by_the_next_store(tmp_path):
    text = "name: c\nsteps:\n  - {id: a, uses: fake.image, with: {size: 4}}\n"
    first = run_yaml(text, tmp_path)
    (entry_file,) = (tmp_path / "runs" / ".cache" / "steps").rglob(ENTRY)
    entry_file.write_text('{"files": {"image": {"file": "../../../../etc/passwd"}}}')
    again = run_yaml(text, tmp_path)
    assert again.items["a"].status == "done"  # a miss: made again, and stored again
    assert json.loads(entry_file.read_text())["files"]["image"]["file"] == "image.png"
    third = run_yaml(text, tmp_path)
    assert third.items["a"].status == "cached"
    assert third.artifacts()[0].sha256 == first.artifacts()[0].sha256
    assert not [p for p in entry_file.parent.parent.iterdir() if p.name.startswith(".")]  # nothing left aside


def test_tampered_content_is_made_again_and_repaired(tmp_path):
    text = "name: c\nsteps:\n  - {id: a, uses: fake.image, with: {size: 4}}\n"
    first = run_yaml(text, tmp_path)
    (cached,) = (tmp_path / "runs" / ".cache" / "steps").rglob("image.png")
    data = bytearray(cached.read_bytes())
    data[-5] ^= 0xFF  # same size: only the hash can tell
    cached.write_bytes(bytes(data))
    again = run_yaml(text, tmp_path)
    assert again.items["a"].status == "done"
    assert sha256_file(again.artifacts()[0].path) == first.artifacts()[0].sha256
    assert sha256_file(cached) == first.artifacts()[0].sha256  # repaired
    assert not list(again.run_dir.rglob(".*partial*"))


def test_an_entry_for_other_ports_is_not_used(tmp_path):
    text = "name: c\nsteps:\n  - {id: a, uses: fake.image, with: {size: 4}}\n"
    run_yaml(text, tmp_path)
    (entry_file,) = (tmp_path / "runs" / ".cache" / "steps").rglob(ENTRY)
    data = json.loads(entry_file.read_text())
    data["files"] = {"picture": data["files"]["image"]}
    entry_file.write_text(json.dumps(data))
    again = run_yaml(text, tmp_path)
    assert again.items["a"].status == "done" and set(again.items["a"].artifacts) == {"image"}
