"""Models a run loads are freed when the run ends: running a pipeline of every model
family three times in one process leaves nothing behind."""

import gc
import json
import weakref

from pathlib import Path

import torch

from studio.execute.runtime import Runtime
from studio.testing import run_yaml

DIGITS = Path(__file__).resolve().parents[1] / "plugins/studio_image/weights/digits"
PIPELINE = {"name": "families", "device": "cpu", "steps": [
    {"id": "digit", "uses": "image.diffusion", "with": {"steps": 2, "class_label": 3, "model": str(DIGITS)}},
    {"id": "gan", "uses": "image.gan"},
    {"id": "tune", "uses": "music.transformer", "with": {"duration_s": 1}},
    {"id": "sound", "uses": "audio.vae", "with": {"mode": "sample", "duration_s": 0.5}},
    {"id": "words", "uses": "text.gpt", "with": {"max_new_tokens": 5}},
    {"id": "styled", "uses": "style.cyclegan", "with": {"image": "${steps.gan.outputs.image}"}},
]}


def test_three_runs_in_one_process_free_every_model(tmp_path, monkeypatch):
    loaded: list[weakref.ref] = []
    prepare = Runtime.prepare

    def tracking_prepare(self, model, precision, **kwargs):
        model = prepare(self, model, precision, **kwargs)
        parts = model.values() if isinstance(model, dict) else [model]
        loaded.extend(weakref.ref(p) for p in parts if isinstance(p, torch.nn.Module))
        return model

    monkeypatch.setattr(Runtime, "prepare", tracking_prepare)
    for i in range(3):
        result = run_yaml(json.dumps(PIPELINE), tmp_path / str(i), use_cache=False)
        assert result.status == "done", result.failed
        del result
        gc.collect()
        assert loaded and all(ref() is None for ref in loaded), "a model outlived its run"
    assert len(loaded) >= 3 * 6  # every family loaded a module in every run
