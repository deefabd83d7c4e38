"""Writes that a planted link must not redirect, and running out of memory as the
machine's problem (exit 2), not a crash of Studio's (exit 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studio import cli
from studio.execute.artifacts import atomic_write, temp_path_for, write_json_atomic


def test_a_link_planted_at_the_temporary_name_is_not_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    final = run / "manifest.json"
    planted = final.with_name(f".{final.name}.partial-{os.getpid()}")
    planted.symlink_to(elsewhere)

    write_json_atomic(final, {"status": "done"})

    assert elsewhere.read_text() == "keep me"
    assert '"done"' in final.read_text()
    assert not planted.exists() and not planted.is_symlink()


def test_a_dangling_link_at_the_temporary_name_creates_nothing_elsewhere(tmp_path):
    target = tmp_path / "outside" / "created.png"
    target.parent.mkdir()
    final = tmp_path / "image.png"
    final.with_name(f".{final.name}.partial-{os.getpid()}").symlink_to(target)

    atomic_write(final, lambda p: p.write_bytes(b"png"))

    assert not target.exists()
    assert final.read_bytes() == b"png"


def test_the_temporary_name_is_free_whatever_held_it(tmp_path):
    final = tmp_path / "x.wav"
    stale = final.with_name(f".{final.name}.partial-{os.getpid()}")
    stale.write_bytes(b"a crashed run's half file")
    assert not os.path.lexists(temp_path_for(final))
    stale.symlink_to(tmp_path / "elsewhere")
    assert not os.path.lexists(temp_path_for(final))


def test_a_failed_write_leaves_neither_file(tmp_path):
    final = tmp_path / "out.json"

    def fail(path: Path) -> None:
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(final, fail)
    assert list(tmp_path.iterdir()) == []


def test_out_of_memory_anywhere_in_a_command_is_exit_2(monkeypatch, capsys):
    def hungry(*args, **kwargs):
        raise MemoryError()

    # where the command starts (the shared plugin host is left as it was)
    monkeypatch.setattr(cli.common, "load_host", hungry)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "Traceback" not in err
