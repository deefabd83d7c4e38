"""Re-opening work from any output: `studio run FILE` and `studio export FILE` for a
PNG, WAV or MIDI Studio made, a manifest.json or a run directory."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from studio.cli import cli
from studio.errors import UserError
from studio.execute.artifacts import read_provenance, write_midi, write_wav
from studio.runs.reopen import KEY, decode, encode, reopen

PIPELINE = """
name: again
seed: 4
steps:
  - {id: words, uses: fake.text, sweep: {prompt: [red, blue]}}
  - id: pic
    uses: fake.image
    with: {prompt: "${steps.words.outputs.text}", size: 6}
"""


@pytest.fixture
def made(tmp_path, monkeypatch):
    """A run of PIPELINE from its folder, as a user makes one."""
    from studio.testing import FakePlugin, make_host

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("studio.cli.common.load_host", lambda: make_host([("fake", FakePlugin())]))
    (tmp_path / "p.yaml").write_text(PIPELINE)
    result = CliRunner().invoke(cli, ["run", "p.yaml", "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path / result.output.strip()


def statuses(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return [i["status"] for step in manifest["steps"].values() for i in step["items"]]


def test_every_output_carries_its_pipeline_and_item(made):
    png = made / "pic@prompt=red" / "image.png"
    reopened = reopen(png)
    assert reopened.pipeline["name"] == "again" and reopened.pipeline["seed"] == 4
    assert [s["id"] for s in reopened.pipeline["steps"]] == ["words", "pic"]
    assert (reopened.step, reopened.item) == ("pic", "pic@prompt=red")
    assert reopened.base_dir == made.parent.parent.parent  # where p.yaml was
    assert reopen(made).pipeline == reopened.pipeline == reopen(made / "manifest.json").pipeline
    chunk = Image.open(png).text["studio"]
    assert len(json.loads(chunk)[KEY]) < len(json.dumps(reopened.pipeline)) * 2  # compressed


def test_running_a_png_again_is_fully_cached_and_takes_set(made, tmp_path, monkeypatch):
    png = made / "pic@prompt=red" / "image.png"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = CliRunner().invoke(cli, ["run", str(png), "--out", str(tmp_path / "runs"), "-q"])
    assert again.exit_code == 0, again.output
    assert statuses(tmp_path / again.output.strip()) == ["cached"] * 4
    changed = CliRunner().invoke(cli, ["run", str(png), "--out", str(tmp_path / "runs"), "-q", "--set", "pic.size=7"])
    assert statuses(tmp_path / changed.output.strip()) == ["cached", "cached", "done", "done"]


def test_export_writes_a_pipeline_that_runs_the_same(made, tmp_path):
    out = tmp_path / "exported.yaml"
    result = CliRunner().invoke(cli, ["export", str(made / "pic@prompt=blue" / "image.png"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# re-opened from ") and "(step 'pic', item 'pic@prompt=blue')" in text
    assert yaml.safe_load(text)["steps"][1]["with"] == {"prompt": "${steps.words.outputs.text}", "size": 6}
    again = CliRunner().invoke(cli, ["run", str(out), "-q"])
    assert statuses(tmp_path / again.output.strip()) == ["cached"] * 4
    refused = CliRunner().invoke(cli, ["export", str(made), "-o", str(out)])
    assert refused.exit_code == 2 and "exists" in refused.output


def test_wav_and_midi_carry_the_pipeline_too(tmp_path):
    import pretty_midi

    from studio import media

    pipeline = {"name": "sound", "steps": [{"id": "a", "uses": "audio.render"}]}
    provenance = {"step": "a", "item": "a", KEY: encode(pipeline)}
    write_wav(media.Audio(np.zeros(1600, dtype=np.float32), 16000), tmp_path / "a.wav", provenance)
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=60, start=0.0, end=0.5))
    midi.instruments.append(piano)
    write_midi(midi, tmp_path / "a.mid", provenance)
    for name in ("a.wav", "a.mid"):
        assert read_provenance(tmp_path / name)[KEY] == provenance[KEY]
        assert reopen(tmp_path / name).pipeline == pipeline


def test_files_without_a_pipeline_or_with_a_bad_one_are_refused(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "other.png")
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "other.png")])
    assert result.exit_code == 2 and "carries no Studio pipeline" in result.output
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("studio", json.dumps({KEY: "not base64 at all!"}))
    Image.new("RGB", (4, 4)).save(tmp_path / "bad.png", pnginfo=info)
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "bad.png")])
    assert result.exit_code == 2 and "its embedded pipeline cannot be read" in result.output
    import base64
    import zlib

    bomb = base64.b64encode(zlib.compress(b"[" * (64 * 2**20), 9)).decode()  # 64 MB of brackets
    with pytest.raises(UserError, match="larger than 2 MB once decompressed"):
        decode(bomb, "bomb.png")
    assert os.path.exists(tmp_path / "other.png")
