"""`studio eval` (and the eval.metrics step's inputs) attacked: metadata.jsonl files that
are not what they say, --json paths that cannot be written, runs whose manifest holds
the wrong types, feature networks with absurd configs or damaged weights, MIDI whose
notes last for days, and running out of memory.

Most cases go through studio.cli.main in this process (refusals come before any model
library is imported); the few that could hang or exhaust memory if they regressed run
as subprocesses under a memory limit (test_hostile's check_case). Each checks exit 2,
no traceback, the place named (file:line, manifest.json and the field, the option), a
time bound, and that nothing was written (no --json file, no eval file in the run).
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings  # the `test` extra
from hypothesis import strategies as st

from test_hostile import cli_main, Case, check_case, midi, png, snapshot

BUDGET_S = 5.0
FEATURES = Path(__file__).resolve().parents[1] / "plugins/studio_eval/weights/features"


def main(argv: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str, float]:
    """`studio ARGV` through studio.cli.main in this process: (exit code, output, seconds)."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    return cli_main(argv, monkeypatch, capsys)


@pytest.fixture
def no_evaluation(monkeypatch):
    """Measuring anything fails the test: each refusal here must come before the work."""
    import studio_eval.measure

    def evaluate(*args, **kwargs):
        raise AssertionError("the evaluation ran before the input was refused")

    monkeypatch.setattr(studio_eval.measure, "evaluate", evaluate)


def refused(code: int, output: str, seconds: float, *where: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output and "internal error" not in output, output
    for phrase in where:
        assert phrase in output, (phrase, output)
    assert seconds < BUDGET_S, seconds
    assert len(output) < 3000, output


def images(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(png())
    return folder


# --- metadata.jsonl ------------------------------------------------------------------------

GOOD = b'{"file_name": "0.png", "label": "cat"}\n'
METADATA = [
    ("invalid-utf8", GOOD + b'{"file_name": "1.png", "label": "\xff\xfe"}\n', "metadata.jsonl:2: not UTF-8"),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000 + b"\n", "metadata.jsonl:1: "),
    ("deep-object", GOOD + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n", "metadata.jsonl:2: "),
    ("huge-line", b'{"file_name": "0.png", "label": "' + b"x" * (2 << 20) + b'"}\n', "metadata.jsonl:1: a line of"),
    ("label-list", b'{"file_name": "0.png", "label": ["cat"]}\n', "metadata.jsonl:1: label ['cat']"),
    ("label-float", b'{"file_name": "0.png", "label": 1.5}\n', "metadata.jsonl:1: label 1.5"),
    ("label-null", GOOD + b'{"file_name": "1.png", "label": null}\n', "metadata.jsonl:2: label None"),
    ("label-bool", b'{"file_name": "0.png", "label": true}\n', "metadata.jsonl:1: label True"),
    ("label-mapping", b'{"file_name": "0.png", "label": {"a": 1}}\n', "metadata.jsonl:1: label"),
    ("label-too-long", b'{"file_name": "0.png", "label": "' + b"y" * 5000 + b'"}\n', "metadata.jsonl:1: label"),
    ("line-is-a-list", b'[1, 2]\n', "metadata.jsonl:1: a JSON list"),
    ("line-is-a-number", GOOD + b"7\n", "metadata.jsonl:2: a JSON number"),
    ("line-not-json", GOOD + GOOD + b"{file_name: 0.png}\n", "metadata.jsonl:3: not JSON"),
    ("file-name-number", b'{"file_name": 0, "label": "cat"}\n', "metadata.jsonl:1: file_name 0"),
    ("digits-9000", b'{"file_name": "0.png", "label": ' + b"9" * 9000 + b"}\n", "metadata.jsonl:1: "),
]


@pytest.mark.parametrize("case", METADATA, ids=[c[0] for c in METADATA])
def test_a_bad_metadata_line_is_named_by_file_and_line(case, tmp_path, monkeypatch, capsys, no_evaluation):
    name, content, where = case
    (images(tmp_path / "set") / "metadata.jsonl").write_bytes(content)
    before = snapshot(tmp_path)
    refused(*main(["eval", "set", "--against", "set", "--json", "out.json"], tmp_path, monkeypatch, capsys), where)
    assert snapshot(tmp_path) == before


def test_metadata_that_is_a_folder_is_refused(tmp_path, monkeypatch, capsys, no_evaluation):
    (images(tmp_path / "set") / "metadata.jsonl").mkdir()
    refused(*main(["eval", "set", "--against", "set"], tmp_path, monkeypatch, capsys), "metadata.jsonl: a folder")


# --- --json --------------------------------------------------------------------------------


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


JSON_OUT = [
    ("root", lambda tmp: "/", "--json /: give a file name"),
    ("a-folder", lambda tmp: (tmp / "outdir").mkdir() or "outdir", "--json outdir: a folder"),
    ("missing-folder", lambda tmp: "nowhere/deeper/out.json", "the folder nowhere/deeper does not exist"),
    ("under-a-file", lambda tmp: (tmp / "afile").write_text("x") and "afile/out.json", "the folder afile"),
    ("a-fifo", lambda tmp: fifo(tmp / "pipe.json").name, "--json pipe.json: not a regular file"),
    ("a-link", lambda tmp: (tmp / "link.json").symlink_to("/etc/passwd") or "link.json", "--json link.json: a link"),
    ("dot-dot", lambda tmp: "..", "--json ..: give a file name"),
]


@pytest.mark.parametrize("case", JSON_OUT, ids=[c[0] for c in JSON_OUT])
def test_json_is_checked_before_anything_is_measured(case, tmp_path, monkeypatch, capsys, no_evaluation):
    name, make, where = case
    images(tmp_path / "set")
    target = make(tmp_path)
    before = snapshot(tmp_path)
    refused(*main(["eval", "set", "--against", "set", "--json", target], tmp_path, monkeypatch, capsys), where)
    assert snapshot(tmp_path) == before


def test_a_failed_json_write_leaves_no_file(tmp_path, monkeypatch, capsys):
    """The evaluation ran; writing --json then fails (the folder went away): exit 2, no partial file."""
    import studio_eval.measure

    monkeypatch.setattr(studio_eval.measure, "evaluate", lambda *a, **k: {
        "family": "image", "generated": "g", "reference": "r", "metrics": {"fid_studio_features": 1.0}, "note": ""})
    images(tmp_path / "set")
    (tmp_path / "out").mkdir()
    real_replace = os.replace

    def replace(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", replace)
    code, output, seconds = main(["eval", "set", "--against", "set", "--json", "out/r.json"], tmp_path, monkeypatch,
                                 capsys)
    monkeypatch.setattr(os, "replace", real_replace)
    refused(code, output, seconds, "--json out/r.json", "disk full")
    assert list((tmp_path / "out").iterdir()) == []


# --- runs whose manifest holds the wrong types ---------------------------------------------


def run_folder(root: Path, items: Any = None, steps: Any = None, **manifest: Any) -> Path:
    run = root / "run"
    for i in range(4):
        (run / "draw" / str(i)).mkdir(parents=True, exist_ok=True)
        (run / "draw" / str(i) / "image.png").write_bytes(png())
    if items is None:
        items = [artifact_item(f"draw/{i}/image.png") for i in range(4)]
    if steps is None:
        steps = {"draw": {"uses": "image.diffusion", "status": "done", "items": items}}
    (run / "manifest.json").write_text(json.dumps({"pipeline": "p", "status": "done", "steps": steps, **manifest}))
    return run


def artifact_item(path: Any = "draw/0/image.png", media_type: Any = "image/png", **changes: Any) -> dict:
    entry = {"name": "draw", "status": "done", "params": {"class_label": 1},
             "artifacts": {"image": {"path": path, "media_type": media_type}}}
    entry.update(changes)
    return entry


def link_out(root: Path) -> None:
    (root / "secret.png").write_bytes(png())
    (root / "run" / "draw" / "0" / "image.png").unlink()
    (root / "run" / "draw" / "0" / "image.png").symlink_to(root / "secret.png")


RUNS = [
    ("items-a-number", {"steps": {"draw": {"items": 5}}}, None, "steps.draw.items: 5"),
    ("step-a-string", {"steps": {"draw": "done"}}, None, "steps.draw: 'done'"),
    ("item-a-list", {"items": [["draw/0/image.png"]]}, None, "steps.draw.items[0]"),
    ("status-a-number", {"items": [artifact_item(status=1)]}, None, "steps.draw.items[0].status: 1"),
    ("params-a-string", {"items": [artifact_item(params="class_label=1")]}, None, "steps.draw.items[0].params"),
    ("artifacts-a-list", {"items": [artifact_item(artifacts=[1])]}, None, "steps.draw.items[0].artifacts"),
    ("artifact-null", {"items": [artifact_item(artifacts={"image": None})]}, None, "artifacts.image: None"),
    ("path-an-int", {"items": [artifact_item(path=3)]}, None, "artifacts.image.path: 3"),
    ("media-type-null", {"items": [artifact_item(media_type=None)]}, None, "artifacts.image.media_type: None"),
    ("path-absolute", {"items": [artifact_item(path="/etc/passwd")]}, None, "artifacts.image.path: '/etc/passwd'"),
    ("path-escapes", {"items": [artifact_item(path="draw/../../secret.png")]}, None, "artifacts.image.path"),
    ("path-links-out", {}, link_out, "links to"),
    ("manifest-a-list", {"raw": b"[1, 2, 3]"}, None, "manifest.json: not a valid manifest"),
    ("manifest-deep", {"raw": b'{"steps": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}, None, "manifest.json"),
    ("manifest-not-utf8", {"raw": b'{"steps": {"\xff": 1}}'}, None, "manifest.json"),
]


@pytest.mark.parametrize("case", RUNS, ids=[c[0] for c in RUNS])
def test_a_damaged_run_is_refused_naming_manifest_json_and_the_field(case, tmp_path, monkeypatch, capsys,
                                                                    no_evaluation):
    name, manifest, patch, field = case
    run = run_folder(tmp_path, items=manifest.get("items"), steps=manifest.get("steps"))
    if "raw" in manifest:
        (run / "manifest.json").write_bytes(manifest["raw"])
    if patch:
        patch(tmp_path)
    images(tmp_path / "real")
    before = snapshot(tmp_path)
    refused(*main(["eval", "run", "--against", "real", "--json", "out.json"], tmp_path, monkeypatch, capsys),
            "manifest.json", field)
    assert snapshot(tmp_path) == before


def test_a_run_that_cannot_take_its_eval_file_is_refused_before_measuring(tmp_path, monkeypatch, capsys,
                                                                          no_evaluation):
    run = run_folder(tmp_path)
    (run / "eval-draw.json").mkdir()
    images(tmp_path / "real")
    refused(*main(["eval", "run", "--against", "real"], tmp_path, monkeypatch, capsys), "eval-draw.json: not a regular")
    run2 = run_folder(tmp_path / "b", steps={"../x": {"items": [artifact_item(f"draw/{i}/image.png")
                                                                 for i in range(4)]}})
    refused(*main(["eval", str(run2), "--against", "real"], tmp_path, monkeypatch, capsys), "evaluation name '../x'")
    from studio.execute.manifest import this_process

    run3 = run_folder(tmp_path / "c", status="running", process=this_process())
    refused(*main(["eval", str(run3), "--against", "real"], tmp_path, monkeypatch, capsys), "still running")


def test_images_are_read_only_in_the_formats_their_names_say(tmp_path):
    """A .png that is a GIF, a TIFF of floats or PostScript (PIL would run Ghostscript) is refused by name."""
    from PIL import Image

    from studio.errors import UserError
    from studio_eval.collect import Member
    from studio_eval.measure import _small_images

    Image.new("RGB", (8, 8)).save(tmp_path / "gif.png", format="GIF")
    Image.new("F", (8, 8)).save(tmp_path / "tiff.png", format="TIFF")
    (tmp_path / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    for name in ("gif.png", "tiff.png", "eps.png"):
        with pytest.raises(UserError, match=f"{name}: not an image Studio can read"):
            _small_images([Member(tmp_path / name, "image")])


def test_recording_survives_a_damaged_evaluations_field_and_refuses_a_fifo_gallery(tmp_path):
    from studio.errors import UserError
    from studio.runs.evaluations import record_evaluation

    run = run_folder(tmp_path, evaluations=["not", "a", "mapping"])
    written = record_evaluation(run, "draw", {"metrics": {"x": 1}}, {"x": 1})
    assert written == run / "eval-draw.json"
    assert json.loads((run / "manifest.json").read_text())["evaluations"]["draw"]["summary"] == {"x": 1}
    os.mkfifo(run / "gallery.html")
    start = time.monotonic()
    with pytest.raises(UserError, match="gallery.html: not a regular file"):
        record_evaluation(run, "draw", {"metrics": {"x": 2}}, {"x": 2})
    assert time.monotonic() - start < BUDGET_S


# --- --features ----------------------------------------------------------------------------


def safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]], data: bytes | None = None) -> None:
    """A safetensors file by hand: name -> (dtype, shape, bytes); zeros unless `data`."""
    header, offset = {}, 0
    for name, (dtype, shape, size) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + (data if data is not None else bytes(offset)))


def network_weights(classes: int = 3, dtype: str = "F32", width: int = 4) -> dict:
    from studio_eval.features import expected_shapes

    out = {}
    for name, shape in expected_shapes(classes).items():
        count = 1
        for n in shape:
            count *= n
        out[name] = (dtype, shape, count * width)
    return out


def features_dir(tmp: Path, config: Any = None, weights: Any = "good") -> Path:
    folder = tmp / "net"
    folder.mkdir(exist_ok=True)
    if isinstance(config, (bytes, str)):
        (folder / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    elif callable(config):
        config(folder / "config.json")
    else:
        (folder / "config.json").write_text(json.dumps(config if config is not None else {"classes": 3}))
    if weights == "good":
        safetensors(folder / "model.safetensors", network_weights(3))
    elif callable(weights):
        weights(folder / "model.safetensors")
    return folder


FEATURE_CONFIGS = [
    ("width-1e9", {"classes": 10**9}, "classes 1000000000"),
    ("negative", {"classes": -3}, "classes -3"),
    ("zero", {"classes": 0}, "classes 0"),
    ("a-string", {"classes": "3"}, "classes '3'"),
    ("a-bool", {"classes": True}, "classes True"),
    ("a-float", {"classes": 3.0}, "classes 3.0"),
    ("nan", '{"classes": NaN}', "classes nan"),
    ("missing", {"network": "studio-features-v1"}, "classes None"),
    ("other-network", {"classes": 3, "network": "inception"}, "network 'inception'"),
    ("a-list", "[3]", "a model config is a JSON object"),
    ("not-json", "{classes: 3", "not a readable JSON config"),
    ("deep", "[" * 100_000 + "]" * 100_000, "config.json"),
    ("5-mb", lambda p: p.write_bytes(b" " * (5 << 20) + b"{}"), "is not a model config"),
]


@pytest.mark.parametrize("case", FEATURE_CONFIGS, ids=[c[0] for c in FEATURE_CONFIGS])
def test_an_absurd_feature_config_is_refused_before_anything_is_allocated(case, tmp_path, monkeypatch, capsys,
                                                                       no_evaluation):
    name, config, where = case
    features_dir(tmp_path, config)
    images(tmp_path / "set")
    refused(*main(["eval", "set", "--against", "set", "--features", "net"], tmp_path, monkeypatch, capsys),
            "--features 'net'", where)


FEATURE_WEIGHTS = [
    ("missing", lambda p: None, "model.safetensors cannot be read"),
    ("truncated", lambda p: p.write_bytes(struct.pack("<Q", 10_000) + b"{}"), "not a complete safetensors file"),
    ("header-not-json", lambda p: p.write_bytes(struct.pack("<Q", 4) + b"{{{{"), "not a complete safetensors file"),
    ("a-folder", lambda p: p.mkdir(), "not a regular file"),
    ("wrong-tensors", lambda p: safetensors(p, {"x": ("F32", [3], 12)}), "lacks body.0.bias"),
    ("head-too-wide", lambda p: safetensors(p, {**network_weights(3), "head.weight": ("F32", [2**40, 128], 4)}),
     "model.safetensors"),
    ("shape-an-int", lambda p: safetensors(p, {**network_weights(3), "head.bias": ("F32", 5, 12)}),
     "model.safetensors"),
    ("head-shape-other-classes", lambda p: safetensors(p, {**network_weights(3), "head.bias": ("F32", [7], 28)}),
     "head.bias has the shape [7], the network with 3 classes"),
]


@pytest.mark.parametrize("case", FEATURE_WEIGHTS, ids=[c[0] for c in FEATURE_WEIGHTS])
def test_damaged_feature_weights_are_refused_before_loading(case, tmp_path, monkeypatch, capsys, no_evaluation):
    name, make, where = case
    features_dir(tmp_path, weights=make)
    images(tmp_path / "set")
    refused(*main(["eval", "set", "--against", "set", "--features", "net"], tmp_path, monkeypatch, capsys),
            "--features 'net'", where)


def test_weights_that_pass_the_header_but_not_the_load_are_a_user_error(tmp_path):
    """An F16 label on F32 bytes (refused by the header check or the load), and NaN
    weights (found once loaded): still by name, exit 2."""
    import numpy as np

    from studio.errors import UserError
    from studio_eval.features import load_network

    features_dir(tmp_path, weights=lambda p: safetensors(p, network_weights(3, dtype="F16", width=4)))
    with pytest.raises(UserError, match="net"):
        load_network(tmp_path / "net")
    tensors = network_weights(3)
    nan = np.full(sum(size for _, _, size in tensors.values()) // 4, np.nan, dtype="<f4").tobytes()
    features_dir(tmp_path, weights=lambda p: safetensors(p, tensors, nan))
    with pytest.raises(UserError, match="NaN or infinite"):
        load_network(tmp_path / "net")


def test_the_metrics_step_validates_its_feature_network(tmp_path):
    from pydantic import ValidationError

    from studio_eval.metrics_step import Metrics

    features_dir(tmp_path, {"classes": 10**9})
    with pytest.raises(ValidationError, match="classes 1000000000"):
        Metrics.Params.model_validate({"items": [], "model": str(tmp_path / "net")})


# --- MIDI and memory -----------------------------------------------------------------------


def test_a_damaged_midi_is_refused_by_name(tmp_path, monkeypatch, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "ok.mid").write_bytes(midi())
    (tmp_path / "m" / "cut.mid").write_bytes(midi([(0, 96, 60), (96, 96, 62)])[:-9])
    refused(*main(["eval", "m"], tmp_path, monkeypatch, capsys), "cut.mid", "damaged MIDI")


def test_a_midi_of_many_ticks_is_measured_at_a_coarser_resolution(tmp_path, monkeypatch):
    import studio_eval.music_metrics as music

    monkeypatch.setattr(music, "MAX_ROLL_STEPS", 10_000)
    path = tmp_path / "fast.mid"
    path.write_bytes(midi([(0, 50_000, 60), (50_000, 50_000, 64)], ppq=960, tempo=10_000))  # 1 s
    metrics = music.piece_metrics(path)
    assert metrics["pitch_range"] == 4 and metrics["polyphony"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] . "
                                                                 "DefaultCPUAllocator: can't allocate memory")])
def test_running_out_of_memory_is_exit_2_with_what_to_lower(error, tmp_path, monkeypatch, capsys):
    import studio_eval.measure

    def evaluate(*args, **kwargs):
        raise error

    monkeypatch.setattr(studio_eval.measure, "evaluate", evaluate)
    images(tmp_path / "set")
    refused(*main(["eval", "set", "--against", "set", "--json", "out.json"], tmp_path, monkeypatch, capsys),
            "out of memory while measuring folder", "fewer or smaller files")
    assert not (tmp_path / "out.json").exists()


# --- through a subprocess: what could hang or exhaust memory if it regressed --------------


def _fifo(path: Path, root: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path, root: Path) -> None:
    path.symlink_to("/dev/zero")


def _good_weights(path: Path, root: Path) -> None:
    safetensors(path, network_weights(3))


SET = {f"set/{i}.png": png() for i in range(4)}
SUBPROCESS = [
    Case("features", "config-fifo", ["eval", "set", "--against", "set", "--features", "net"],
         {**SET, "net/config.json": _fifo, "net/model.safetensors": _good_weights},
         where=("--features 'net'", "config.json is not a regular file"), writes="nothing"),
    Case("features", "config-dev-zero", ["eval", "set", "--against", "set", "--features", "net"],
         {**SET, "net/config.json": _dev_zero, "net/model.safetensors": _good_weights},
         where=("--features 'net'", "config.json is not a regular file"), writes="nothing"),
    Case("metadata", "fifo", ["eval", "set", "--against", "set"], {**SET, "set/metadata.jsonl": _fifo},
         where=("set/metadata.jsonl: not a regular file",), writes="nothing"),
    Case("midi", "268-million-ticks", ["eval", "m", "--json", "out.json"],
         {"m/long.mid": midi([(0, 268_000_000, 60)]), "m/ok.mid": midi()},
         where=("m/long.mid: plays", "at most 20 minutes"), writes="nothing", budget_s=4.0),
    Case("midi", "huge-ppq-fast-tempo", ["eval", "m", "--json", "out.json"],
         {"m/long.mid": midi([(0, 2_000_000, 60)], ppq=1, tempo=1)},
         where=("m/long.mid", "beats"), writes="nothing", budget_s=8.0),
]


@pytest.mark.parametrize("case", SUBPROCESS, ids=[c.id for c in SUBPROCESS])
def test_hostile_eval_subprocess(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


# --- fuzzing: the metadata.jsonl and run-manifest readers answer anything with a UserError ---

FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)


@FUZZ
@given(lines=st.lists(st.one_of(
    st.binary(max_size=40),
    st.fixed_dictionaries({"file_name": JSON_VALUES, "label": JSON_VALUES}).map(lambda d: json.dumps(d).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode())), max_size=6))
def test_fuzzed_metadata_is_read_or_refused_by_line(tmp_path_factory, lines):
    from studio.errors import UserError
    from studio_eval.collect import _metadata_labels

    root = tmp_path_factory.mktemp("meta")
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines))
    try:
        labels = _metadata_labels(root)
    except UserError as exc:
        assert "metadata.jsonl:" in str(exc), str(exc)
    else:
        assert labels is None or all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())


@FUZZ
@given(step=JSON_VALUES, item=st.dictionaries(
    st.sampled_from(["name", "status", "params", "labels", "artifacts", "seed"]), JSON_VALUES, max_size=6))
def test_fuzzed_run_manifests_are_read_or_refused_by_field(tmp_path_factory, step, item):
    from studio.errors import UserError
    from studio.runs.dataset import RunReader

    run = tmp_path_factory.mktemp("run")
    for steps in ({"s": step}, {"s": {"items": [item]}}, {"s": {"items": [{**artifact_item(), **item}]}}):
        (run / "manifest.json").write_text(json.dumps({"status": "done", "steps": steps}))
        try:
            reader = RunReader(run)
            for step_id in reader.steps():
                for index, entry in reader.finished_items(step_id):
                    reader.param(step_id, index, entry, "class_label")
                    reader.seed(step_id, index, entry)
                    reader.name(step_id, index, entry)
                    for port, artifact in reader.artifacts(step_id, index, entry).items():
                        reader.artifact_file(step_id, index, port, artifact)
        except UserError as exc:
            assert "manifest.json" in str(exc), str(exc)
