import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.execute.artifacts import Writer, read_png_provenance, sha256_file
from studio.execute.events import Collect
from studio.generator import Generator
from studio.hookspecs import hookimpl
from studio.testing import FakeImage, run_yaml

CHAIN = """
    name: chain
    seed: 3
    steps:
      - {id: words, uses: fake.text, sweep: {prompt: [red, blue]}}
      - id: pic
        uses: fake.image
        with: {prompt: "${steps.words.outputs.text}", size: 6}
      - id: sheet
        uses: image.grid
        with: {images: "${steps.pic.outputs.image}", cell_size: 32}
"""


def test_run_directory_manifest_and_provenance(tmp_path):
    result = run_yaml(CHAIN, tmp_path)
    assert result.status == "done"
    assert result.run_dir.parent == tmp_path / "runs" / "chain"
    names = sorted(p.name for p in result.run_dir.iterdir())
    assert names == ["gallery.html", "manifest.json", "pic@prompt=blue", "pic@prompt=red", "pipeline.yaml", "sheet",
                     "words@prompt=blue", "words@prompt=red"]
    assert (result.run_dir / "words@prompt=red" / "text.txt").read_text() == "red"

    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["status"] == "done" and manifest["seed"] == 3
    assert manifest["runtime"]["device"] == "cpu"
    assert manifest["versions"]["studio"] == "0.1.0"
    assert manifest["resolved_pipeline"]["steps"][1]["id"] == "pic"
    pic = manifest["steps"]["pic"]
    assert pic["uses"] == "fake.image" and pic["plugin"] == "fake" and pic["status"] == "done"
    item = pic["items"][0]
    assert item["status"] == "done" and item["labels"] == {"prompt": "red"}
    assert item["params"]["prompt"] == "red" and item["params"]["size"] == 6
    art = item["artifacts"]["image"]
    assert art["path"] == "pic@prompt=red/image.png" and art["media_type"] == "image/png"
    assert art["sha256"] == sha256_file(result.run_dir / art["path"])
    assert art["size"] == (result.run_dir / art["path"]).stat().st_size

    prov = read_png_provenance(result.run_dir / art["path"])
    assert prov["generator"] == "fake.image" and prov["step"] == "pic" and prov["seed"] == item["seed"]
    assert prov["params"]["prompt"] == "red"
    sheet = Image.open(result.run_dir / "sheet" / "image.png")
    assert sheet.width > 2 * 32  # two cells side by side
    sheet_params = read_png_provenance(result.run_dir / "sheet" / "image.png")["params"]
    assert [i["from"] for i in sheet_params["images"]] == ["pic@prompt=red", "pic@prompt=blue"]


def test_same_seed_same_output_different_seed_different(tmp_path):
    text = "name: s\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 1000]}}\n"
    first = run_yaml(text, tmp_path / "one", use_cache=False)
    second = run_yaml(text, tmp_path / "two", use_cache=False)
    h1 = [a.sha256 for a in first.artifacts()]
    assert h1 == [a.sha256 for a in second.artifacts()]
    assert h1[0] != h1[1]


def test_cache_reuses_and_invalidates_only_what_changed(tmp_path):
    first = run_yaml(CHAIN, tmp_path)
    assert {r.status for r in first.items.values()} == {"done"}
    again = run_yaml(CHAIN, tmp_path)
    assert {r.status for r in again.items.values()} == {"cached"}
    assert again.run_dir != first.run_dir
    assert [a.sha256 for a in again.artifacts()] == [a.sha256 for a in first.artifacts()]
    assert all(a.path.is_file() and again.run_dir in a.path.parents for a in again.artifacts())

    changed = run_yaml(CHAIN.replace("size: 6", "size: 7"), tmp_path)
    status = {r.name: r.status for r in changed.items.values()}
    assert status == {"words@prompt=red": "cached", "words@prompt=blue": "cached",
                      "pic@prompt=red": "done", "pic@prompt=blue": "done", "sheet": "done"}
    fresh = run_yaml(CHAIN, tmp_path, use_cache=False)
    assert {r.status for r in fresh.items.values()} == {"done"}


def test_a_damaged_cache_entry_is_not_trusted(tmp_path):
    text = "name: c\nsteps:\n  - {id: a, uses: fake.image, with: {size: 4}}\n"
    first = run_yaml(text, tmp_path)
    cache_root = tmp_path / "runs" / ".cache" / "steps"
    (cached,) = [p for p in cache_root.rglob("image.png")]
    cached.write_bytes(cached.read_bytes()[:20])  # truncated, as by a crash or a disk error
    again = run_yaml(text, tmp_path)
    assert again.items["a"].status == "done"
    assert again.artifacts()[0].sha256 == first.artifacts()[0].sha256


class Interrupting(Generator):
    name = "test.interrupt"
    description = "Writes half a file, then the user presses Ctrl-C."
    outputs = {"image": "image/png"}

    def generate(self, params, ctx):
        return {"image": "not used"}


class HalfWritePlugin:
    """A writer that dies halfway, as on Ctrl-C during a save."""

    @hookimpl
    def register_generators(self, register):
        register(Interrupting)

    @hookimpl
    def run_step(self, step):
        if step.uses == "test.interrupt":
            raise KeyboardInterrupt


STOPPED = """
    name: stop
    steps:
      - {id: first, uses: fake.image, with: {size: 4}}
      - {id: second, uses: test.interrupt}
      - {id: third, uses: fake.image, with: {size: 5}}
"""


def stopped_run(tmp_path) -> tuple[Path, dict]:
    """The STOPPED pipeline's run folder and manifest, checked to say it was interrupted
    at its second step, after the first finished."""
    (run_dir,) = [p for p in (tmp_path / "runs" / "stop").iterdir() if p.name != "latest"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    statuses = {k: s["items"][0]["status"] for k, s in manifest["steps"].items()}
    assert statuses == {"first": "done", "second": "interrupted", "third": "interrupted"}
    return run_dir, manifest


def test_interrupted_run_keeps_finished_work_and_no_partial_files(tmp_path):
    text = STOPPED
    with pytest.raises(KeyboardInterrupt):
        run_yaml(text, tmp_path, plugins=[("half", HalfWritePlugin())])
    run_dir, _ = stopped_run(tmp_path)
    assert (run_dir / "first" / "image.png").is_file()
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    # the next run trusts what finished and makes the rest
    again = run_yaml(text.replace("test.interrupt", "fake.image"), tmp_path)
    assert again.items["first"].status == "cached"
    assert again.items["second"].status == "done"


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    from studio.execute.artifacts import atomic_write

    def explode(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.png", explode)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_generator_keeps_other_work_and_skips_dependents(tmp_path):
    result = run_yaml("""
        name: f
        steps:
          - {id: ok, uses: fake.image}
          - {id: bad, uses: fake.fail, with: {message: "model exploded"}}
          - {id: after, uses: fake.text, with: {prompt: "${steps.bad.outputs.text}"}}
    """, tmp_path)
    assert result.status == "failed"
    assert result.items["ok"].status == "done" and result.items["ok"].artifacts["image"].path.is_file()
    assert result.items["bad"].error == "fake.fail (plugin 'fake') raised ValueError: model exploded"
    assert result.items["after"].status == "skipped"
    assert "ValueError: model exploded" in (result.run_dir / "errors.log").read_text()
    assert not (result.run_dir / "bad").exists()


def test_sweep_items_run_in_batches_with_their_own_seeds(tmp_path):
    text = "name: b\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 2, 3, 4, 5, 6]}}\n"
    batched = run_yaml(text, tmp_path / "b", use_cache=False)
    assert FakeImage.calls == [4, 2]  # max_batch_size is 4
    colours = [Image.open(a.path).getpixel((0, 0)) for a in batched.artifacts()]
    assert colours == [(s, 0, 7) for s in range(1, 7)]


class TightMemory(FakeImage):
    """Runs out of device memory on batches larger than `fits`."""

    name = "test.tight"
    max_batch_size = 8
    fits = 2
    calls: list[int] = []

    def generate_batch(self, params, ctxs):
        import torch

        TightMemory.calls.append(len(params))
        if len(params) > TightMemory.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [self._one(p, c) for p, c in zip(params, ctxs)]

    def generate(self, params, ctx):
        return self.generate_batch([params], [ctx])[0]


class TightPlugin:
    @hookimpl
    def register_generators(self, register):
        register(TightMemory)


def test_a_batch_that_runs_out_of_memory_is_halved_and_every_item_is_made(tmp_path):
    TightMemory.calls, TightMemory.fits = [], 2
    events = Collect()
    text = "name: b\nsteps:\n  - {id: a, uses: test.tight, sweep: {seed: [1, 2, 3, 4, 5, 6, 7, 8]}}\n"
    result = run_yaml(text, tmp_path, plugins=[("tight", TightPlugin())], events=events, use_cache=False)
    assert result.status == "done"
    assert TightMemory.calls == [8, 4, 2, 2, 2, 2]  # halved until it fits, then kept
    colours = [Image.open(a.path).getpixel((0, 0)) for a in result.artifacts()]
    assert colours == [(s, 0, 7) for s in range(1, 9)]
    shrunk = [e for e in events.events if e["event"] == "batch_shrunk"]
    assert [(e["tried"], e["now"]) for e in shrunk] == [(8, 4), (4, 2)]
    runtime = json.loads(result.manifest_path.read_text())["runtime"]
    assert runtime["batch_size_after_out_of_memory"] == {"a": 2}


def test_an_item_that_runs_out_of_memory_alone_fails_with_the_message(tmp_path):
    TightMemory.calls, TightMemory.fits = [], 0
    text = "name: b\nsteps:\n  - {id: a, uses: test.tight, sweep: {seed: [1, 2]}}\n"
    result = run_yaml(text, tmp_path, plugins=[("tight", TightPlugin())], use_cache=False)
    assert result.status == "failed" and TightMemory.calls == [2, 1, 1]
    assert all("CUDA out of memory" in item.error for item in result.failed)


class NaNGen(Generator):
    name = "test.nan"
    description = "Returns an array with a NaN."
    outputs = {"array": "application/x-npy"}

    def generate(self, params, ctx):
        return {"array": np.array([1.0, float("nan")])}


class NaNPlugin:
    @hookimpl
    def register_generators(self, register):
        register(NaNGen)

    @hookimpl
    def register_artifact_writers(self, register):
        register(Writer("application/x-npy", "npy", lambda value, path, prov: np.save(open(path, "wb"), value)))


def test_nan_output_is_caught_and_named(tmp_path):
    result = run_yaml("name: n\nsteps:\n  - {id: a, uses: test.nan}\n", tmp_path, plugins=[("nan", NaNPlugin())])
    assert result.status == "failed"
    assert result.items["a"].error.startswith(
        "test.nan (plugin 'nan'): step 'a' item 'a' output 'array' contains NaN or Inf values. "
        "This usually means an overflow in half precision: run again with `precision: fp32`")
    assert not (result.run_dir / "a" / "array.npy").exists()


def test_events_tell_the_story(tmp_path):
    events = Collect()
    run_yaml("name: e\nsteps:\n  - {id: a, uses: fake.image, sweep: {seed: [1, 2]}}\n", tmp_path, events=events)
    kinds = [e["event"] for e in events.events]
    assert kinds == ["run_start", "step_start", "item_done", "item_done", "step_done", "run_done"]
    assert events.events[-1]["status"] == "done"


def test_text_flows_into_media_and_files(tmp_path):
    Image.new("RGB", (10, 6), "red").save(tmp_path / "photo.png")
    result = run_yaml("""
        name: m
        steps:
          - {id: cap, uses: fake.caption, with: {image: photo.png}}
          - id: small
            uses: image.resize
            with: {image: photo.png, width: 5}
          - {id: cap2, uses: fake.caption, with: {image: "${steps.small.outputs.image}"}}
    """, tmp_path)
    assert result.items["cap"].artifacts["text"].read_text() == "10x6 {}"
    assert result.items["cap2"].artifacts["text"].read_text() == "5x3 {}"


def test_gallery_shows_every_item_escaped(tmp_path):
    result = run_yaml("""
        name: g
        steps:
          - {id: t, uses: fake.text, with: {prompt: "<script>x</script>"}}
          - {id: i, uses: fake.image}
          - {id: bad, uses: fake.fail}
    """, tmp_path)
    page = (result.run_dir / "gallery.html").read_text()
    assert '<img src="i/image.png"' in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
    assert page.count("<script>") == 1  # the page's own filters, nothing from an output
    assert "failed: fake.fail (plugin &#x27;fake&#x27;) raised ValueError: boom" in page


def test_the_gallery_shows_a_lora_scale_only_beside_loras():
    from studio.runs.report import _params_html

    assert "lora_scale" not in _params_html({"steps": 10, "lora_scale": 1.0})
    shown = _params_html({"steps": 10, "lora_scale": 0.5, "loras": [{"path": "/x/outline.safetensors", "scale": 1}]})
    assert "<td>lora_scale</td><td>0.5</td>" in shown


class Tone(Generator):
    name = "test.tone"
    description = "A sine tone and a one-note MIDI file."
    outputs = {"audio": "audio/wav", "midi": "audio/midi"}

    def generate(self, params, ctx):
        import pretty_midi

        t = np.arange(8000) / 16000
        midi = pretty_midi.PrettyMIDI()
        piano = pretty_midi.Instrument(program=0)
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=60, start=0.0, end=0.5))
        midi.instruments.append(piano)
        from studio.media import Audio

        ctx.record(tone_hz=440, made_by="<b>sine</b>")
        return {"audio": Audio(0.5 * np.sin(2 * np.pi * 440 * t), 16000), "midi": midi}


class TonePlugin:
    @hookimpl
    def register_generators(self, register):
        register(Tone)


def test_wav_and_midi_carry_provenance(tmp_path):
    import pretty_midi
    import soundfile

    from studio.execute.artifacts import read_provenance

    result = run_yaml("name: a\nsteps:\n  - {id: t, uses: test.tone}\n", tmp_path, plugins=[("tone", TonePlugin())])
    wav, mid = result.items["t"].artifacts["audio"].path, result.items["t"].artifacts["midi"].path
    samples, rate = soundfile.read(wav)
    assert rate == 16000 and len(samples) == 8000
    assert abs(np.abs(samples).max() - 0.5) < 1e-3  # level kept, no normalisation by the writer
    assert read_provenance(wav)["generator"] == "test.tone"
    notes = pretty_midi.PrettyMIDI(str(mid)).instruments[0].notes
    assert [(n.pitch, n.velocity) for n in notes] == [(60, 90)]
    assert read_provenance(mid)["step"] == "t"
    page = (result.run_dir / "gallery.html").read_text()  # what the generator recorded, escaped
    assert "<table class=notes><tr><td>tone_hz</td><td>440</td></tr><tr><td>made_by</td><td>&lt;b&gt;sine" in page


class SwallowingPlugin:
    """Ctrl-C arrives while a library imports, and the library reports it as another
    error (as transformers' lazy modules do: "Could not import module ...")."""

    @hookimpl
    def register_generators(self, register):
        register(Interrupting)

    @hookimpl
    def run_step(self, step):
        import os
        import signal

        if step.uses == "test.interrupt":
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the signal interrupts this at once
            except BaseException as exc:
                raise ModuleNotFoundError("Could not import module 'GPT2LMHeadModel'") from exc


def test_ctrl_c_that_a_library_turned_into_another_error_still_interrupts_the_run(tmp_path):
    import signal

    from studio.execute import interrupts

    previous = signal.getsignal(signal.SIGINT)
    interrupts.install()  # as the `studio` command does
    try:
        with pytest.raises(KeyboardInterrupt):
            run_yaml(STOPPED, tmp_path, plugins=[("swallow", SwallowingPlugin())])
    finally:
        signal.signal(signal.SIGINT, previous)
    stopped_run(tmp_path)


def test_an_evaluation_joins_a_finished_runs_manifest_and_gallery(tmp_path):
    from studio import record_evaluation
    from studio.errors import UserError

    result = run_yaml("name: g\nsteps:\n  - {id: i, uses: fake.image}\n", tmp_path)
    written = record_evaluation(result.run_dir, "i", {"metrics": {"fid": 1.5}}, {"fid": 1.5, "note": "<b>"})
    assert json.loads(written.read_text()) == {"metrics": {"fid": 1.5}}
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["evaluations"]["i"]["summary"] == {"fid": 1.5, "note": "<b>"}
    assert manifest["steps"]["i"]["items"][0]["status"] == "done"  # the rest of the manifest as it was
    page = (result.run_dir / "gallery.html").read_text()
    assert "<td>fid</td><td>1.5</td>" in page and "&lt;b&gt;" in page and '<a href="eval-i.json">' in page
    record_evaluation(result.run_dir, "i", {}, {"fid": 2.0})
    page = (result.run_dir / "gallery.html").read_text()
    assert page.count("data-name=\"i\"") == 1 and "<td>fid</td><td>2</td>" in page
    with pytest.raises(UserError, match="evaluation name '../x'"):
        record_evaluation(result.run_dir, "../x", {}, {})
