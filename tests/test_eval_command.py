"""`studio eval` and the eval.metrics step, as a user runs them: on a run of the digit
model against the real digits, on folders, and on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.testing import run_yaml

ROOT = Path(__file__).resolve().parent.parent
DIGITS_MODEL = ROOT / "plugins" / "studio_image" / "weights" / "digits"


def studio(*args, cwd):
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def real_digits(tmp_path_factory):
    """scikit-learn's digits as dark ink on white, 16 x 16, in one folder per class:
    the first 400 as the reference, the next 400 as a second sample of the same thing."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for part, span in (("reference", range(0, 400)), ("other", range(400, 800))):
        for i in span:
            folder = root / part / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (255 - digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((16, 16), Image.Resampling.BICUBIC).save(folder / f"{i}.png")
    return root


def collapsed_folder(root: Path, source: Path, n: int = 100) -> Path:
    """A generator that always draws the same "1": one real image, copied n times."""
    root.mkdir(parents=True, exist_ok=True)
    one = next((source / "1").glob("*.png"))
    for i in range(n):
        (root / f"{i}.png").write_bytes(one.read_bytes())
    return root


def test_two_samples_of_the_real_digits_are_close_and_a_collapsed_set_is_caught(real_digits, tmp_path):
    from studio_eval.collect import collect
    from studio_eval.measure import evaluate

    reference = collect(real_digits / "reference")
    assert reference.family() == "image" and sorted(set(reference.labels())) == [str(d) for d in range(10)]
    same = evaluate(collect(real_digits / "other"), reference)["metrics"]
    collapsed = evaluate(collect(collapsed_folder(tmp_path / "ones", real_digits / "reference")), reference)["metrics"]
    assert same["fid_studio_features"] < collapsed["fid_studio_features"] / 5
    assert same["precision"] > 0.7 and same["recall"] > 0.7 and same["class_coverage"] == 1.0
    assert not same["mode_collapse"]
    assert collapsed["mode_collapse"] and collapsed["classes_covered"] == 1 and collapsed["recall"] < 0.05
    assert collapsed["class_counts"]["1"] == 100


def test_studio_eval_on_a_run_of_the_digit_model_writes_eval_json(real_digits, tmp_path, studio_main):
    # the run is made in this process (what `studio run` is is tested elsewhere); the
    # evaluation runs as the user runs it, a `studio eval` process
    ran = run_yaml(f"""
name: digits
steps:
  - id: draw
    uses: image.diffusion
    with: {{model: {DIGITS_MODEL}, steps: 10}}
    sweep: {{class_label: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], seed: [1, 2, 3]}}
  - id: sheet
    uses: image.grid
    with: {{images: "${{steps.draw.outputs.image}}", cell_size: 16}}
""", tmp_path)
    assert ran.status == "done", [item.error for item in ran.failed]
    run = ran.run_dir
    done = studio("eval", str(run), "--against", str(real_digits / "reference"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "step 'draw'" in done.stdout and "sheet (image)" in done.stdout  # the sweep, not its contact sheet
    assert "not Inception-v3" in done.stdout
    result = json.loads((run / "eval-draw.json").read_text())
    metrics = result["metrics"]
    recorded = json.loads((run / "manifest.json").read_text())["evaluations"]["draw"]
    assert recorded["file"] == "eval-draw.json" and recorded["summary"]["fid_studio_features"] > 0
    gallery = (run / "gallery.html").read_text()
    assert gallery.count('<section class=evaluation data-name="draw">') == 1 and "<td>label_agreement</td>" in gallery
    # measured again (in this process: the command's process was checked above): replaced, not added
    again = studio_main("eval", str(run), "--against", str(real_digits / "reference"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (run / "gallery.html").read_text().count('<section class=evaluation data-name="draw">') == 1
    assert metrics["generated"] == 30 and metrics["reference"] == 400
    assert metrics["label_agreement"] > 0.5  # the digit model draws the class it is asked for
    assert metrics["class_coverage"] >= 0.8


@pytest.mark.parametrize("args, words", [
    (["nowhere"], "nowhere: not found"),
    (["{empty}"], "no files to measure"),
    (["{reference}", "--step", "draw"], "--step only picks a step of a run"),
    (["{reference}"], "image metrics compare two sets: give a reference set with --against"),
    (["{reference}", "--against", "{text}"], "no image files to measure (.png, .jpg, .jpeg, .webp, .bmp); the set "
                                             "it is compared with is image"),
    (["{reference}", "--against", "{reference}", "--features", "missing"], "'missing': no such directory"),
])
def test_bad_input_is_a_clear_error_with_exit_code_2(real_digits, tmp_path, args, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("words")
    places = {"empty": tmp_path / "empty", "reference": real_digits / "reference", "text": tmp_path / "text"}
    done = studio("eval", *[a.format(**places) for a in args], cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr


def test_the_metrics_step_measures_a_sweep_and_the_manifest_and_gallery_show_it(real_digits, tmp_path):
    (tmp_path / "real").symlink_to(real_digits / "reference")
    result = run_yaml(f"""
        name: measured
        steps:
          - id: draw
            uses: image.diffusion
            with: {{model: {DIGITS_MODEL}, steps: 10}}
            sweep: {{class_label: [3, 7], seed: [1, 2, 3, 4]}}
          - id: score
            uses: eval.metrics
            with: {{items: "${{steps.draw.outputs.image}}", reference: real}}
    """, tmp_path)
    assert result.status == "done", [item.error for item in result.failed]
    (score,) = result.step("score")
    measured = json.loads(score.artifacts["metrics"].read_text())
    assert measured["family"] == "image" and measured["metrics"]["generated"] == 8
    assert set(measured["metrics"]["class_counts"]) == {str(d) for d in range(10)}
    manifest = json.loads(result.manifest_path.read_text())
    notes = manifest["steps"]["score"]["items"][0]["notes"]
    assert notes["fid_studio_features"] > 0 and 0 <= notes["precision"] <= 1
    assert "<td>fid_studio_features</td>" in (result.run_dir / "gallery.html").read_text()


def test_text_metrics_against_a_reference_folder(tmp_path):
    from studio_eval.collect import collect
    from studio_eval.measure import evaluate

    (tmp_path / "real").mkdir()
    (tmp_path / "made").mkdir()
    (tmp_path / "real" / "a.txt").write_text("To be, or not to be, that is the question: whether 'tis nobler in "
                                             "the mind to suffer the slings and arrows of outrageous fortune.")
    for i in range(3):
        (tmp_path / "made" / f"{i}.txt").write_text("zq xv kj wq " * 20)
    result = evaluate(collect(tmp_path / "made"), collect(tmp_path / "real"))["metrics"]
    assert result["repetition_4"] > 0.9 and result["distinct_2"] < 0.1
    assert result["perplexity"] > 5 * result["reference"]["perplexity"]  # the model knows Shakespeare


def png_header(path, width, height):
    """A PNG that claims width x height pixels and holds none: its header is all a check may read."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_inputs_too_large_to_measure_are_refused_by_name_before_they_are_decoded(real_digits, tmp_path):
    from studio.errors import UserError
    from studio_eval.collect import collect
    from studio_eval.measure import evaluate

    (tmp_path / "big").mkdir()
    for i in range(4):
        png_header(tmp_path / "big" / f"{i}.png", 9000, 9000)
    with pytest.raises(UserError, match=r"0\.png: 9000 x 9000 pixels; images are measured up to 67,108,864"):
        evaluate(collect(tmp_path / "big"), collect(real_digits / "reference"))
    for i in range(4):  # past twice that, PIL itself refuses to open it: still by name, still exit 2
        png_header(tmp_path / "big" / f"{i}.png", 60_000, 60_000)
    with pytest.raises(UserError, match=r"0\.png: not an image Studio can read \(Image size \(3600000000 pixels\)"):
        evaluate(collect(tmp_path / "big"), collect(real_digits / "reference"))
    (tmp_path / "midi").mkdir()
    (tmp_path / "midi" / "huge.mid").write_bytes(b"MThd" + bytes(3 << 20))
    with pytest.raises(UserError, match="huge.mid: 3,145,732 bytes; MIDI files are measured up to 2,097,152"):
        evaluate(collect(tmp_path / "midi"), None)
