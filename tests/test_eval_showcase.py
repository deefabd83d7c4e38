"""`studio eval` on the showcase's outputs, one media type at a time, as the README
shows it: images against the emoji, text alone, MIDI against a MIDI folder, audio
against another step's audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def showcase(tmp_path_factory, example_run):
    """A copy of the showcase run that test_pipelines checks (made once a session, and
    only read there): `studio eval` writes its results into the run it measures."""
    ran = example_run(ROOT / "pipelines" / "showcase.yaml")
    assert ran.status == "done", [item.error for item in ran.failed]
    copy = tmp_path_factory.mktemp("showcase") / ran.run_dir.name
    shutil.copytree(ran.run_dir, copy)
    return copy


def measured(studio_main, showcase, *args):
    """`studio eval` in this process (the studio_main fixture): what it measures is the
    point here; tests/test_eval_command.py runs it as a process."""
    target = showcase.parent / f"eval-{len(list(showcase.parent.glob('eval-*.json')))}.json"
    done = studio_main("eval", str(showcase), *args, "--json", str(target), cwd=showcase.parent)
    assert done.returncode == 0, done.stderr
    return json.loads(target.read_text()), done.stdout


def test_images_against_the_emoji_they_were_trained_on(showcase, studio_main):
    result, shown = measured(studio_main, showcase, "--step", "emoji", "--against", "emoji:noto")
    metrics = result["metrics"]
    assert result["family"] == "image" and metrics["reference"] > 3000
    assert metrics["fid_studio_features"] > 0 and 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    assert metrics["classes"] == 9 and metrics["classes_covered"] >= 1
    assert "fid_studio_features" in shown and (showcase / "eval-emoji.json").is_file()


def test_text_alone(showcase, studio_main):
    metrics = measured(studio_main, showcase, "--step", "line")[0]["metrics"]
    assert metrics["texts"] >= 2 and metrics["perplexity"] > 1 and 0 < metrics["distinct_1"] <= 1
    assert "reference" not in metrics


def test_midi_against_a_folder_of_midi(showcase, studio_main):
    metrics = measured(studio_main, showcase, "--step", "tune",
                       "--against", str(ROOT / "pipelines" / "assets"))[0]["metrics"]
    assert metrics["pieces"] == 1 and metrics["reference_pieces"] == 1  # the folder's one MIDI file, not its PNGs
    assert set(metrics["compared"]) >= {"pitch_range", "scale_consistency", "polyphony"}


def test_audio_against_another_steps_audio(showcase, studio_main):
    result = measured(studio_main, showcase, "--step", "tune-variation", "--against", str(showcase),
                      "--reference-step", "tune-audio")[0]
    assert result["family"] == "audio"
    metrics = result["metrics"]
    assert metrics["log_mel_frechet"] > 0 and metrics["vae_latent_frechet"] >= 0
