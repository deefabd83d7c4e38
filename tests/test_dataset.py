"""`studio dataset`: a run's outputs as a training set that the tools people train with
read as written (Hugging Face datasets' imagefolder/audiofolder, torchvision's ImageFolder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from studio.errors import UserError
from studio.runs.dataset import export
from studio.testing import run_yaml

@pytest.fixture
def run(tmp_path):
    result = run_yaml("""
        name: shapes
        steps:
          - id: words
            uses: fake.text
            sweep: {prompt: [red apple, blue sky]}
          - id: pics
            uses: fake.image
            with: {prompt: "a picture of ${steps.words.outputs.text}", size: 8}
            sweep: {seed: [1, 2, 3]}
    """, tmp_path)
    assert result.status == "done", [item.error for item in result.failed]
    return result


def test_imagefolder_layout_reads_in_hugging_face_datasets_with_captions_from_upstream_text(run, tmp_path,
                                                                                          monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, count = export(run.run_dir, tmp_path / "set")
    assert count == 6  # the step with the most items: 2 texts x 3 seeds
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert sorted(r["text"] for r in rows) == ["a picture of blue sky"] * 3 + ["a picture of red apple"] * 3
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert len(loaded) == 6 and loaded[0]["image"].size == (8, 8)
    assert set(loaded.column_names) >= {"image", "text", "seed"}
    made = {a.path.name for a in run.artifacts("pics")}
    assert made == {"image.png"}
    source = next(a.path for a in run.artifacts("pics"))
    assert any(os.path.samefile(source, folder / r["file_name"]) for r in rows)  # hard links, not copies


def test_classes_layout_reads_in_torchvision_and_hugging_face(run, tmp_path, monkeypatch):
    import datasets
    from torchvision.datasets import ImageFolder

    folder, _ = export(run.run_dir, tmp_path / "by-class", layout="classes", label="prompt")
    assert sorted(p.name for p in folder.iterdir()) == ["a_picture_of_blue_sky", "a_picture_of_red_apple"]
    assert len(ImageFolder(str(folder))) == 6 and ImageFolder(str(folder)).classes == sorted(
        p.name for p in folder.iterdir())
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.features["label"].names == ["a_picture_of_blue_sky", "a_picture_of_red_apple"]


def test_a_split_and_the_other_step(run, tmp_path):
    folder, count = export(run.run_dir, tmp_path / "set", step="words", split="train")
    assert folder == tmp_path / "set" / "train" and count == 2
    assert sorted(p.suffix for p in folder.iterdir()) == [".jsonl", ".txt", ".txt"]


@pytest.mark.parametrize("kwargs, words", [
    ({"step": "nope"}, "--step 'nope': no such step"),
    ({"layout": "classes"}, "--layout classes needs a class per file"),
    ({"layout": "zip"}, "--layout 'zip': use one of imagefolder, classes"),
])
def test_bad_requests_write_nothing(run, tmp_path, kwargs, words):
    with pytest.raises(UserError, match=words):
        export(run.run_dir, tmp_path / "set", **kwargs)
    assert not (tmp_path / "set").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".set.partial")]


def test_an_existing_folder_is_never_overwritten(run, tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="exists and is not empty"):
        export(run.run_dir, tmp_path / "set")
    assert [p.name for p in (tmp_path / "set").iterdir()] == ["mine.txt"]


def test_the_command_exports_the_latest_run_by_name(run, tmp_path):
    done = subprocess.run([sys.executable, "-m", "studio", "dataset", "shapes", "--out", str(run.run_dir.parent.parent),
                           "-o", str(tmp_path / "exported"), "--layout", "classes", "--label", "prompt"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 6 files" in done.stdout
    refused = subprocess.run([sys.executable, "-m", "studio", "dataset", "shapes", "--out",
                              str(run.run_dir.parent.parent), "-o", str(tmp_path / "other"), "--layout", "classes"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "needs a class per file" in refused.stderr


def test_audio_exports_in_the_audiofolder_layout(tmp_path):
    import numpy as np
    import soundfile

    rate = 16000
    t = np.arange(rate // 2) / rate
    soundfile.write(tmp_path / "tone.wav", (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate)
    result = run_yaml("""
        name: tones
        steps:
          - id: varied
            uses: audio.augment
            with: {audio: tone.wav, gain_db: 6}
            sweep: {seed: [1, 2, 3], pitch_semitones: [0, 2]}
    """, tmp_path)
    assert result.status == "done", [item.error for item in result.failed]
    folder, count = export(result.run_dir, tmp_path / "audio-set", label="pitch_semitones")
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert count == 6 and sorted(r["label"] for r in rows) == ["0", "0", "0", "2", "2", "2"]
    # the AudioFolder layout: every row names a file beside metadata.jsonl (datasets' audiofolder
    # builder needs torchcodec, which is not installed here, to read it back)
    for row in rows:
        heard, heard_rate = soundfile.read(folder / row["file_name"])
        assert heard_rate == rate and len(heard) == rate // 2
    assert sorted(p.name for p in folder.iterdir()) == sorted([r["file_name"] for r in rows] + ["metadata.jsonl"])
