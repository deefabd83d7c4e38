"""An artist's AUTOMATIC1111 folder, used as it is: a one-file checkpoint without a VAE,
a separate VAE, a LoRA and a textual-inversion embedding, each named by its file name in a
pipeline run with `--models`, offline. The image carries A1111's parameters naming each
of them by hash, and the run's manifest records the files the names resolved to.

The checkpoint is the embedded default model written as model sites ship a file (the
original key layout); being toy-sized, it is given its configs with `config:`, which a
real SD 1.x/2.x/XL file does not need (tests/test_single_file.py)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from studio.cli import cli
from test_hostile_lora import OUTLINE
from test_single_file import single_file_state

DEFAULT = OUTLINE.parents[1] / "diffusion"
WIDTH = 128  # the embedded model's text encoder


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    """stable-diffusion-webui/models as A1111 keeps it, and the default's configs."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("artist") / "stable-diffusion-webui"
    models = root / "models"
    for kind in ("Stable-diffusion", "VAE", "Lora"):
        (models / kind).mkdir(parents=True)
    (root / "embeddings").mkdir()  # A1111 keeps embeddings beside models/, not in it
    pipe = StableDiffusionPipeline.from_pretrained(DEFAULT, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    save_file(single_file_state(pipe, vae=False), models / "Stable-diffusion" / "emoji_v1.safetensors")
    save_file({k: v.contiguous() for k, v in pipe.vae.state_dict().items()}, models / "VAE" / "emoji_vae.safetensors")
    shutil.copy(OUTLINE, models / "Lora" / "outline.safetensors")
    vectors = torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(0)) * 0.4
    save_file({"emb_params": vectors}, root / "embeddings" / "zqstyle.safetensors")
    shutil.copytree(DEFAULT, root.parent / "configs", ignore=shutil.ignore_patterns("*.safetensors"))
    return root


def test_a_pipeline_names_checkpoint_vae_lora_and_embedding_in_an_a1111_folder(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STUDIO_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "portrait.yaml").write_text(json.dumps({"name": "portrait", "device": "cpu", "steps": [{
        "id": "art", "uses": "image.diffusion", "with": {
            "model": "emoji_v1", "config": str(webui.parent / "configs"), "vae": "emoji_vae",
            "loras": [{"name": "outline", "scale": 0.8}], "embeddings": [{"name": "zqstyle"}],
            "prompt": "a cat face, zqstyle", "steps": 2, "seed": 4, "width": 32, "height": 32}}]}))
    runner = CliRunner()
    assert runner.invoke(cli, ["validate", "portrait.yaml", "--models", str(webui)]).exit_code == 0
    ran = runner.invoke(cli, ["run", "portrait.yaml", "-q", "--models", str(webui)])
    assert ran.exit_code == 0, ran.output
    run = tmp_path / ran.stdout.strip()
    [png] = (run / "art").glob("*.png")

    def short(path, length=10):
        return hashlib.sha256(path.read_bytes()).hexdigest()[:length]

    models = webui / "models"
    text = Image.open(png).info["parameters"]
    last = text.splitlines()[-1]
    assert text.startswith("a cat face, zqstyle <lora:outline:0.8>\n")
    assert f"Model hash: {short(models / 'Stable-diffusion' / 'emoji_v1.safetensors')}" in last
    assert "Model: emoji_v1" in last
    assert 'Lora hashes: "outline: ' in last
    assert f'TI hashes: "zqstyle: {short(webui / "embeddings" / "zqstyle.safetensors")}"' in last
    manifest = json.loads((run / "manifest.json").read_text())
    recorded = json.dumps(manifest)
    for path in (models / "Stable-diffusion" / "emoji_v1.safetensors", models / "VAE" / "emoji_vae.safetensors",
                 models / "Lora" / "outline.safetensors", webui / "embeddings" / "zqstyle.safetensors"):
        assert str(path.resolve()) in recorded, path.name  # the names resolved to these files
