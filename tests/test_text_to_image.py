"""`studio train image.diffusion` on captioned images: a small Stable Diffusion that is
a standard diffusers pipeline folder (diffusers' own StableDiffusionPipeline loads it and
makes the same image as Studio for the same seed), resumable, and used by `model: OUT`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.testing import run_yaml
from studio.training import TrainConfig, train

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
SHAPES = ("square", "circle")


def captioned_folder(root: Path, convention: str) -> Path:
    """Twelve 16x16 images of coloured shapes, captioned "red square" ... either with a
    .txt beside each image or in a metadata.jsonl."""
    root.mkdir()
    rows = []
    for n in range(2):
        for colour, rgb in COLOURS.items():
            for shape in SHAPES:
                image = Image.new("RGB", (16, 16), "white")
                draw = ImageDraw.Draw(image)
                box = (3 + n, 3, 12 + n, 12)
                (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=rgb)
                name = f"{colour}-{shape}-{n}.png"
                image.save(root / name)
                caption = f"a {colour} {shape}"
                if convention == "txt":
                    (root / name).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
                else:
                    rows.append(json.dumps({"file_name": name, "text": caption}))
    if rows:
        (root / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def tiny_training(data: Path, out: Path, steps: int = 6, resume: bool = False, checkpoint_every: int = 3):
    from studio_image.diffusion_train import DiffusionTrainer

    config = TrainConfig(data=str(data), out=out, steps=steps, batch_size=4, lr=1e-3, device="cpu",
                         resume=resume, checkpoint_every=checkpoint_every,
                         options={"size": 16, "channels": 3, "vae_steps": 3, "vocab_size": 600, "max_tokens": 8,
                                  "text_width": 32})
    return train(DiffusionTrainer, config, show_progress=False)


@pytest.mark.parametrize("convention", ["txt", "metadata.jsonl"])
def test_captioned_training_exports_a_pipeline_diffusers_loads_and_studio_runs_the_same(tmp_path, convention):
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    data = captioned_folder(tmp_path / "data", convention)
    result = tiny_training(data, tmp_path / "model")
    out = result.out
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert "loss" in summary["final_losses"]  # the UNet's, after the autoencoder's steps
    assert {"held_out_vae_l1", "held_out_noise_mse"} <= set(summary["metrics"])
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert {"vae", "text_encoder", "tokenizer", "unet", "scheduler"} <= set(index)
    assert list(out.rglob("*.safetensors")) and not list(out.rglob("*.bin"))
    stored = load_file(next((out / "unet").glob("*.safetensors")))
    assert {t.dtype for t in stored.values()} == {torch.float16}  # weights_precision's default: half the size

    # diffusers alone, no Studio code, as a CPU user loads half-precision weights
    pipeline = StableDiffusionPipeline.from_pretrained(out, dtype=torch.float32)
    tokens = pipeline.tokenizer("a red square").input_ids
    assert "red</w>" in pipeline.tokenizer.convert_ids_to_tokens(tokens)  # the captions' own words
    run = run_yaml(f"""
        name: t2i
        steps:
          - {{id: img, uses: image.diffusion, with: {{model: "{out}", prompt: "a red square", steps: 4}}}}
    """, tmp_path)
    (item,) = run.step("img")
    assert item.status == "done", item.error
    ours = np.asarray(Image.open(item.artifacts["image"].path).convert("RGB"), dtype=np.int16)
    theirs = pipeline(prompt="a red square", num_inference_steps=4, guidance_scale=7.5,
                      generator=torch.Generator("cpu").manual_seed(item.seed)).images[0]
    theirs = np.asarray(theirs.convert("RGB"), dtype=np.int16)
    assert ours.shape == theirs.shape == (16, 16, 3)
    assert np.abs(ours - theirs).max() <= 1


class Interrupt(Exception):
    pass


def test_captioned_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from studio_image.diffusion_train import DiffusionTrainer

    data = captioned_folder(tmp_path / "data", "txt")
    whole = tiny_training(data, tmp_path / "whole", steps=7, checkpoint_every=1000).out
    original = DiffusionTrainer.train_step

    def dies_at_step_6(self, step):  # after the autoencoder's 3 steps and a checkpoint at 4
        if step == 6:
            raise Interrupt
        return original(self, step)

    monkeypatch.setattr(DiffusionTrainer, "train_step", dies_at_step_6)
    with pytest.raises(Interrupt):
        tiny_training(data, tmp_path / "parts", steps=7, checkpoint_every=2)
    monkeypatch.setattr(DiffusionTrainer, "train_step", original)
    parts = tiny_training(data, tmp_path / "parts", steps=7, checkpoint_every=2, resume=True).out
    for component in ("unet", "text_encoder", "vae"):
        a = load_file(next((whole / component).glob("*.safetensors")))
        b = load_file(next((parts / component).glob("*.safetensors")))
        assert a.keys() == b.keys()
        assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a), component


def test_the_caption_tokenizer_is_the_same_in_every_process():
    import subprocess
    import sys

    code = ("import json; from studio_image.diffusion_network import caption_tokenizer\n"
            "t = caption_tokenizer(['a red square', 'a blue circle', 'red heart', 'a green square'] * 3, 600, 8)\n"
            "print(json.dumps(sorted(t.get_vocab().items())))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120) for _ in range(3)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    vocabularies = {r.stdout for r in runs}
    assert len(vocabularies) == 1  # ties between equally frequent pairs are broken the same way
    vocab = dict(json.loads(runs[0].stdout))
    assert {"red</w>", "square</w>"} <= set(vocab)  # frequent words became single tokens


@pytest.mark.parametrize("name, scheduler_class", [("dpm++-karras", "DPMSolverMultistepScheduler"),
                                                   ("euler-karras", "EulerDiscreteScheduler")])
def test_karras_schedulers_match_diffusers_with_karras_sigmas(tmp_path, name, scheduler_class):
    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline

    from studio_image.diffusion import DEFAULT_WEIGHTS

    run = run_yaml(f"""
        name: karras
        steps:
          - {{id: img, uses: image.diffusion, with: {{prompt: "blue heart", steps: 8, seed: 3}},
             sweep: {{scheduler: ["{name}", "{name.removesuffix('-karras')}"]}}}}
    """, tmp_path)
    karras, plain = run.step("img")
    assert karras.status == plain.status == "done", (karras.error, plain.error)
    pipeline = StableDiffusionPipeline.from_pretrained(DEFAULT_WEIGHTS, dtype=torch.float32)
    pipeline.scheduler = getattr(diffusers, scheduler_class).from_config(pipeline.scheduler.config,
                                                                         use_karras_sigmas=True)
    theirs = pipeline(prompt="blue heart", num_inference_steps=8,
                      generator=torch.Generator("cpu").manual_seed(karras.seed)).images[0]
    ours = np.asarray(Image.open(karras.artifacts["image"].path).convert("RGB"), dtype=np.int16)
    assert np.abs(ours - np.asarray(theirs.convert("RGB"), dtype=np.int16)).max() <= 1
    other = np.asarray(Image.open(plain.artifacts["image"].path).convert("RGB"), dtype=np.int16)
    assert np.abs(ours - other).max() > 8  # the noise levels differ, and so does the image


def test_timestep_spacing_matches_diffusers_and_changes_the_image(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    from studio_image.diffusion import DEFAULT_WEIGHTS

    run = run_yaml("""
        name: spacing
        steps:
          - {id: img, uses: image.diffusion, with: {prompt: "cat face", steps: 6, seed: 4},
             sweep: {timestep_spacing: [trailing, default]}}
    """, tmp_path)
    trailing, default = run.step("img")
    assert trailing.status == default.status == "done", (trailing.error, default.error)
    pipeline = StableDiffusionPipeline.from_pretrained(DEFAULT_WEIGHTS, dtype=torch.float32)
    assert pipeline.scheduler.config.timestep_spacing != "trailing"  # so the option changes something
    pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, timestep_spacing="trailing")
    theirs = pipeline(prompt="cat face", num_inference_steps=6,
                      generator=torch.Generator("cpu").manual_seed(4)).images[0]
    ours = np.asarray(Image.open(trailing.artifacts["image"].path).convert("RGB"), dtype=np.int16)
    assert np.abs(ours - np.asarray(theirs.convert("RGB"), dtype=np.int16)).max() <= 1
    other = np.asarray(Image.open(default.artifacts["image"].path).convert("RGB"), dtype=np.int16)
    assert np.abs(ours - other).max() > 8


def test_lora_training_makes_a_lora_that_image_diffusion_applies_and_resumes_exactly(tmp_path, tiny_sd_dir,
                                                                                    monkeypatch):
    import torch
    from safetensors.torch import load_file

    from studio_image.diffusion_train import DiffusionTrainer

    data = captioned_folder(tmp_path / "data", "metadata.jsonl")

    def lora_training(out, checkpoint_every=1000, resume=False):
        config = TrainConfig(data=str(data), out=out, steps=4, batch_size=4, lr=1e-2, device="cpu",
                             resume=resume, checkpoint_every=checkpoint_every,
                             options={"lora_rank": 4, "base": str(tiny_sd_dir)})
        return train(DiffusionTrainer, config, show_progress=False)

    result = lora_training(tmp_path / "lora")
    lora = result.out / "pytorch_lora_weights.safetensors"
    weights = load_file(lora)
    assert weights and all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in weights)
    assert {"held_out_noise_mse", "held_out_noise_mse_base"} <= set(result.metrics)
    base_unet = load_file(next((tiny_sd_dir / "unet").glob("*.safetensors")))
    assert not any(k.removeprefix("unet.") in base_unet for k in weights)  # adapters only, not the model

    run = run_yaml(f"""
        name: lora
        steps:
          - {{id: img, uses: image.diffusion, with: {{model: "{tiny_sd_dir}", prompt: "a red square", steps: 3,
              seed: 1, loras: [{{path: "{lora}"}}]}}, sweep: {{lora_scale: [0, 1]}}}}
          - {{id: plain, uses: image.diffusion, with: {{model: "{tiny_sd_dir}", prompt: "a red square", steps: 3,
              seed: 1}}}}
    """, tmp_path)
    assert run.status == "done", run.failed
    off, on = (np.asarray(Image.open(i.artifacts["image"].path), dtype=np.int16) for i in run.step("img"))
    plain = np.asarray(Image.open(run.step("plain")[0].artifacts["image"].path), dtype=np.int16)
    assert np.array_equal(off, plain) and not np.array_equal(on, plain)

    original = DiffusionTrainer.train_step

    def dies_at_step_3(self, step):
        if step == 3:
            raise Interrupt
        return original(self, step)

    monkeypatch.setattr(DiffusionTrainer, "train_step", dies_at_step_3)
    with pytest.raises(Interrupt):
        lora_training(tmp_path / "parts", checkpoint_every=2)
    monkeypatch.setattr(DiffusionTrainer, "train_step", original)
    parts = load_file(lora_training(tmp_path / "parts", checkpoint_every=2, resume=True).out
                      / "pytorch_lora_weights.safetensors")
    assert parts.keys() == weights.keys()
    assert all(torch.allclose(parts[k], weights[k], atol=1e-6) for k in weights)
