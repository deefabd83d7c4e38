"""image.diffusion's image-to-image, inpainting, LoRA, clip_skip and weighted prompts:
each the same image as diffusers' own pipeline given the same components, seed,
strength and scale, and composing with sweeps, batching, the cache and provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from studio.errors import PipelineError
from studio.testing import run_yaml

PROMPT = "red apple"


def sketch(path: Path, size: int = 32) -> Path:
    """A rough drawing to start from: a red disc with a green stem on white."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    s = size / 32
    draw.ellipse((6 * s, 8 * s, 26 * s, 28 * s), fill=(210, 30, 30))
    draw.rectangle((15 * s, 3 * s, 17 * s, 9 * s), fill=(60, 140, 40))
    image.save(path)
    return path


def top_half_mask(path: Path, size: int = 32, mode: str = "L") -> Path:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, size - 1, size // 2 - 1), fill=255)
    mask.convert(mode).save(path)
    return path


def step(tmp_path: Path, with_: dict, sweep: dict | None = None, **kwargs):
    spec = {"id": "img", "uses": "image.diffusion", "with": with_}
    if sweep:
        spec["sweep"] = sweep
    return run_yaml(json.dumps({"name": "modes", "device": "cpu", "steps": [spec]}), tmp_path, **kwargs)


def grey(path_or_image) -> np.ndarray:
    if isinstance(path_or_image, np.ndarray):
        return path_or_image.astype(np.int16)
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def close(ours, theirs) -> bool:
    return int(np.abs(grey(ours) - grey(theirs)).max()) <= 1


def diffusers_pipeline(kind: str, model=None):
    import diffusers

    from studio_image.diffusion import DEFAULT_WEIGHTS

    auto = {"img2img": diffusers.AutoPipelineForImage2Image, "inpaint": diffusers.AutoPipelineForInpainting,
            "text2img": diffusers.AutoPipelineForText2Image}[kind]
    pipe = auto.from_pretrained(model or DEFAULT_WEIGHTS, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- image-to-image -----------------------------------------------------------------


def test_image_to_image_equals_diffusers_and_a_strength_seed_sweep_batches(tmp_path, monkeypatch):
    import diffusers

    calls = []
    original = diffusers.StableDiffusionImg2ImgPipeline.__call__
    monkeypatch.setattr(diffusers.StableDiffusionImg2ImgPipeline, "__call__",
                        lambda self, *a, **k: calls.append(len(k["prompt"])) or original(self, *a, **k))
    init = sketch(tmp_path / "sketch.png")
    with_ = {"prompt": PROMPT, "image": str(init), "steps": 10}
    run = step(tmp_path / "sweep", with_, sweep={"strength": [0.3, 0.7], "seed": [1, 2]})
    assert run.status == "done", run.failed
    assert calls == [2, 2]  # one batch per strength, its two seeds together
    monkeypatch.setattr(diffusers.StableDiffusionImg2ImgPipeline, "__call__", original)
    items = run.step("img")
    pipe = diffusers_pipeline("img2img")
    for item in items:
        strength = item.labels["strength"]
        theirs = pipe(PROMPT, image=Image.open(init).convert("RGB"), strength=strength, num_inference_steps=10,
                      generator=torch.Generator("cpu").manual_seed(item.seed)).images[0]
        assert close(item.artifacts["image"].path, theirs), item.name
    # one by one (no batching) gives the same images as the batched sweep
    for item in items:
        alone = step(tmp_path / item.name, {**with_, "strength": item.labels["strength"], "seed": item.seed},
                     use_cache=False).step("img")[0]
        assert close(alone.artifacts["image"].path, item.artifacts["image"].path)
    low, high = [np.abs(grey(items[n].artifacts["image"].path) - grey(init)).mean() for n in (0, 2)]
    assert (items[0].labels["strength"], items[2].labels["strength"]) == (0.3, 0.7)
    assert high > low  # strength 0.7 moves further from the sketch than 0.3 (same seed)


def test_image_to_image_records_the_init_image_by_hash_and_takes_upstream_images(tmp_path, monkeypatch):
    import hashlib

    from studio_image.diffusion import ImageDiffusion

    loads = []
    original = ImageDiffusion.load
    monkeypatch.setattr(ImageDiffusion, "load", lambda self, p, c: loads.append(p.model) or original(self, p, c))

    init = sketch(tmp_path / "sketch.png")
    text = json.dumps({"name": "chain", "device": "cpu", "steps": [
        {"id": "first", "uses": "image.diffusion", "with": {"prompt": "red heart", "steps": 4, "seed": 1}},
        {"id": "again", "uses": "image.diffusion",
         "with": {"prompt": "blue heart", "image": "${steps.first.outputs.image}", "strength": 0.5, "steps": 4}},
        {"id": "file", "uses": "image.diffusion",
         "with": {"prompt": "red apple", "image": str(init), "strength": 0.5, "steps": 4, "width": 48, "height": 64}},
    ]})
    run = run_yaml(text, tmp_path)
    assert run.status == "done", run.failed
    assert len(loads) == 1  # text-to-image and image-to-image share one loaded model (from_pipe)
    (again,) = run.step("again")
    (file,) = run.step("file")
    recorded = json.loads(Image.open(file.artifacts["image"].path).text["studio"])["params"]["image"]
    assert recorded["sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    assert Image.open(file.artifacts["image"].path).size == (48, 64)  # resized to width x height
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    (record,) = manifest["steps"]["again"]["items"]
    assert record["params"]["image"]["from"] == "first"
    assert Image.open(again.artifacts["image"].path).size == (32, 32)  # the init image's size


def test_sdedit_on_a_unet2dmodel_runs_diffusers_image_to_image_timesteps(tmp_path):
    from types import SimpleNamespace

    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    from studio_image.diffusion import DIGITS_WEIGHTS
    from studio_image.diffusion_inputs import strength_timesteps

    config = json.loads((DIGITS_WEIGHTS / "scheduler" / "scheduler_config.json").read_text())
    for strength in (0.25, 0.5, 1.0):
        ours = strength_timesteps(DDIMScheduler.from_config(config), 20, strength)
        reference = SimpleNamespace(scheduler=DDIMScheduler.from_config(config))
        reference.scheduler.set_timesteps(20)
        theirs, count = StableDiffusionImg2ImgPipeline.get_timesteps(reference, 20, strength, "cpu")
        assert torch.equal(ours, theirs) and len(ours) == count == int(20 * strength)

    digit = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(digit).ellipse((7, 5, 21, 23), outline=255, width=3)  # a zero
    digit.save(tmp_path / "zero.png")
    run = step(tmp_path, {"model": str(DIGITS_WEIGHTS), "image": str(tmp_path / "zero.png"), "class_label": 0,
                          "steps": 20, "seed": 3}, sweep={"strength": [0.2, 0.9]})
    assert run.status == "done", run.failed
    near, far = [np.abs(grey(i.artifacts["image"].path) - grey(tmp_path / "zero.png")).mean() for i in run.step("img")]
    assert near < far  # a low strength keeps the drawing, a high one redraws it


# --- inpainting -----------------------------------------------------------------------


@pytest.mark.parametrize("keep", [False, True])
def test_inpainting_equals_diffusers_and_keeps_the_unmasked_pixels(tmp_path, keep):
    init, mask = sketch(tmp_path / "sketch.png"), top_half_mask(tmp_path / "mask.png")
    run = step(tmp_path, {"prompt": "yellow star", "image": str(init), "mask": str(mask), "steps": 10,
                          "keep_unmasked": keep}, sweep={"seed": [1, 2]})
    assert run.status == "done", run.failed
    pipe = diffusers_pipeline("inpaint")
    init_image, mask_image = Image.open(init).convert("RGB"), Image.open(mask)
    for item in run.step("img"):
        theirs = pipe("yellow star", image=init_image, mask_image=mask_image, num_inference_steps=10, width=32,
                      height=32, generator=torch.Generator("cpu").manual_seed(item.seed)).images[0]
        if keep:
            theirs = pipe.image_processor.apply_overlay(mask_image, init_image, theirs)
        ours = grey(item.artifacts["image"].path)
        assert close(ours, theirs)
        kept = np.asarray(mask_image) == 0
        if keep:  # the black part of the mask is the init image, exactly
            assert np.array_equal(ours[kept], grey(init)[kept])
        else:  # the VAE's round trip moves them a little
            assert np.abs(ours[kept] - grey(init)[kept]).max() > 0
        assert np.abs(ours[~kept] - grey(init)[~kept]).mean() > 10  # the white part was repainted


def test_a_dedicated_inpainting_checkpoint_equals_diffusers(tiny_sd_dir, tmp_path):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel

    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**{**base.unet.config, "in_channels": 9})
    model = tmp_path / "tiny-inpaint"
    StableDiffusionInpaintPipeline(**{**base.components, "unet": unet}).save_pretrained(model)
    init, mask = sketch(tmp_path / "sketch.png", 16), top_half_mask(tmp_path / "mask.png", 16)
    run = step(tmp_path, {"model": str(model), "prompt": "a cat", "image": str(init), "mask": str(mask),
                          "steps": 3, "seed": 4, "keep_unmasked": False})
    assert run.status == "done", run.failed
    pipe = diffusers_pipeline("inpaint", model)
    assert type(pipe).__name__ == "StableDiffusionInpaintPipeline" and pipe.unet.config.in_channels == 9
    theirs = pipe("a cat", image=Image.open(init).convert("RGB"), mask_image=Image.open(mask), num_inference_steps=3,
                  width=16, height=16, generator=torch.Generator("cpu").manual_seed(4)).images[0]
    assert close(run.step("img")[0].artifacts["image"].path, theirs)

    with pytest.raises(PipelineError, match="is an inpainting checkpoint .* give image and mask"):
        step(tmp_path / "t2i", {"model": str(model), "prompt": "a cat", "steps": 2})


def test_mask_blur_softens_the_edge_through_diffusers_blur(tmp_path):
    init, mask = sketch(tmp_path / "sketch.png"), top_half_mask(tmp_path / "mask.png")
    run = step(tmp_path, {"prompt": "yellow star", "image": str(init), "mask": str(mask), "steps": 6, "seed": 2},
               sweep={"mask_blur": [0, 2]})
    sharp, soft = [grey(i.artifacts["image"].path) for i in run.step("img")]
    # far from the edge (a Gaussian of radius 2 reaches about 3 radii) the image is kept as it was
    assert np.array_equal(sharp[16:], grey(init)[16:]) and np.array_equal(soft[23:], grey(init)[23:])
    edge = slice(14, 18)  # rows either side of the mask's edge blend with a blurred mask
    assert not np.array_equal(sharp[edge], soft[edge])


def test_inpainting_a_unet2dmodel_keeps_the_unmasked_pixels(tmp_path):
    from studio_image.diffusion import DIGITS_WEIGHTS

    digit = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(digit).line((14, 4, 14, 24), fill=255, width=3)
    digit.save(tmp_path / "one.png")
    mask = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(mask).rectangle((0, 14, 27, 27), fill=255)
    mask.save(tmp_path / "mask.png")
    run = step(tmp_path, {"model": str(DIGITS_WEIGHTS), "image": str(tmp_path / "one.png"),
                          "mask": str(tmp_path / "mask.png"), "class_label": 7, "steps": 10, "seed": 1})
    assert run.status == "done", run.failed
    ours = np.asarray(Image.open(run.step("img")[0].artifacts["image"].path).convert("L"))
    assert np.array_equal(ours[:14], np.asarray(digit)[:14])
    assert not np.array_equal(ours[14:], np.asarray(digit)[14:])


# --- LoRA ---------------------------------------------------------------------------------


def make_lora(model: Path, out: Path, seed: int = 0, text_encoder: bool = True) -> Path:
    """A LoRA made here with peft on the model's UNet (and text encoder), saved as
    diffusers saves one: non-zero, so it changes the image."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32)
    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = {"unet_lora_layers": get_peft_model_state_dict(pipe.unet)}
    if text_encoder:
        pipe.text_encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(pipe.text_encoder)
    StableDiffusionPipeline.save_lora_weights(out, safe_serialization=True, **layers)
    return out / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    from studio_image.diffusion import DEFAULT_WEIGHTS

    return make_lora(DEFAULT_WEIGHTS, tmp_path_factory.mktemp("lora"))


def test_lora_equals_diffusers_scale_zero_is_the_base_and_the_sweep_loads_once(tmp_path, lora_file, monkeypatch):
    import diffusers

    from studio_image.diffusion import ImageDiffusion

    loads, lora_loads = [], []
    original_load = ImageDiffusion.load
    monkeypatch.setattr(ImageDiffusion, "load", lambda self, p, c: loads.append(p.model) or original_load(self, p, c))
    original_lora = diffusers.StableDiffusionPipeline.load_lora_weights
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "load_lora_weights",
                        lambda self, *a, **k: lora_loads.append(k.get("adapter_name")) or original_lora(self, *a, **k))
    text = json.dumps({"name": "lora", "device": "cpu", "steps": [
        {"id": "base", "uses": "image.diffusion", "with": {"prompt": "red heart", "steps": 6},
         "sweep": {"seed": [1, 2]}},
        {"id": "lora", "uses": "image.diffusion",
         "with": {"prompt": "red heart", "steps": 6, "loras": [{"path": str(lora_file), "scale": 0.5}]},
         "sweep": {"lora_scale": [0, 1, 2], "seed": [1, 2]}},
    ]})
    run = run_yaml(text, tmp_path)
    assert run.status == "done", run.failed
    assert len(loads) == 1 and len(lora_loads) == 1  # one model, one LoRA file, six items
    base = {i.seed: grey(i.artifacts["image"].path) for i in run.step("base")}
    items = {(i.labels["lora_scale"], i.seed): i for i in run.step("lora")}
    for seed in (1, 2):
        assert np.array_equal(grey(items[0, seed].artifacts["image"].path), base[seed])  # scale 0: the base
        assert not np.array_equal(grey(items[1, seed].artifacts["image"].path), base[seed])

    pipe = diffusers_pipeline("text2img")
    pipe.load_lora_weights(str(lora_file), adapter_name="test")
    pipe.set_adapters(["test"], adapter_weights=[0.5 * 2])
    theirs = pipe("red heart", num_inference_steps=6, generator=torch.Generator("cpu").manual_seed(2)).images[0]
    assert close(items[2, 2].artifacts["image"].path, theirs)

    recorded = json.loads(Image.open(items[1, 1].artifacts["image"].path).text["studio"])["params"]["loras"]
    import hashlib

    assert recorded == [{"path": str(lora_file.resolve()), "name": None, "scale": 0.5,
                         "sha256": hashlib.sha256(lora_file.read_bytes()).hexdigest()}]


def test_two_loras_at_once_equal_diffusers_set_adapters(tmp_path, lora_file):
    from studio_image.diffusion import DEFAULT_WEIGHTS

    second = make_lora(DEFAULT_WEIGHTS, tmp_path / "second", seed=7, text_encoder=False)
    run = step(tmp_path, {"prompt": "cat face", "steps": 5, "seed": 6, "lora_scale": 0.5,
                          "loras": [{"path": str(lora_file), "scale": 0.8}, {"path": str(second), "scale": -0.4}]})
    assert run.status == "done", run.failed
    pipe = diffusers_pipeline("text2img")
    pipe.load_lora_weights(str(lora_file), adapter_name="one")
    pipe.load_lora_weights(str(second), adapter_name="two")
    pipe.set_adapters(["one", "two"], adapter_weights=[0.8 * 0.5, -0.4 * 0.5])
    theirs = pipe("cat face", num_inference_steps=5, generator=torch.Generator("cpu").manual_seed(6)).images[0]
    assert close(run.step("img")[0].artifacts["image"].path, theirs)


def test_kohya_named_loras_are_checked_against_the_model_too(tmp_path, tiny_sd_dir, lora_file):
    from safetensors.torch import load_file, save_file

    from studio_image.diffusion import DEFAULT_WEIGHTS
    from studio_image.diffusion_lora import fit_problem

    def as_kohya(source: Path, target: Path) -> Path:
        renamed = {}
        for key, tensor in load_file(source).items():
            component, _, rest = key.partition(".")
            module, _, part = rest.rpartition(".lora_")
            prefix = "lora_unet_" if component == "unet" else "lora_te_text_model_"
            down_up = "lora_down" if part.startswith("A") else "lora_up"
            renamed[f"{prefix}{module.replace('.', '_')}.{down_up}.weight"] = tensor
        save_file(renamed, target)
        return target

    kohya = as_kohya(lora_file, tmp_path / "kohya.safetensors")
    assert fit_problem(kohya, DEFAULT_WEIGHTS) is None
    other = as_kohya(make_lora(tiny_sd_dir, tmp_path / "other"), tmp_path / "other.safetensors")
    problem = fit_problem(other, DEFAULT_WEIGHTS)
    assert problem.startswith("does not fit this model: 36 of its 36 layers do not match, e.g. lora_")


def test_unloading_a_lora_restores_the_base_weights_byte_for_byte(lora_file, tmp_path):
    from studio_image.diffusion_lora import Lora, activate, checked

    pipe = diffusers_pipeline("text2img")
    before = {k: v.clone() for k, v in {**pipe.unet.state_dict(), **pipe.text_encoder.state_dict()}.items()}
    lora = checked(Lora(path=str(lora_file), scale=0.7), lora_file)
    state: dict = {}
    activate(pipe, [lora], 1.0, state)
    base = diffusers_pipeline("text2img")
    with_lora = pipe("red heart", num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images[0]
    activate(pipe, [], 1.0, state)  # a batch without LoRA: unfused, the base weights put back
    off = pipe("red heart", num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images[0]
    plain = base("red heart", num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(grey(off), grey(plain)) and not np.array_equal(grey(with_lora), grey(plain))
    pipe.unload_lora_weights()
    after = {**pipe.unet.state_dict(), **pipe.text_encoder.state_dict()}
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_a_changed_lora_file_is_not_served_from_the_cache(tmp_path, lora_file):
    import shutil

    copy = tmp_path / "style.safetensors"
    shutil.copy(lora_file, copy)
    with_ = {"prompt": "red heart", "steps": 3, "seed": 1, "loras": [{"path": "style.safetensors"}]}
    first = step(tmp_path, with_).step("img")[0]
    again = step(tmp_path, with_).step("img")[0]
    assert again.status == "cached"
    from studio_image.diffusion import DEFAULT_WEIGHTS

    make_lora(DEFAULT_WEIGHTS, tmp_path / "other", seed=5)
    shutil.copy(tmp_path / "other" / "pytorch_lora_weights.safetensors", copy)
    changed = step(tmp_path, with_).step("img")[0]
    assert changed.status == "done" and changed.cache_key != first.cache_key


# --- prompts --------------------------------------------------------------------------


def test_prompt_weighting_parses_a1111_syntax():
    from studio_image.diffusion_prompts import a1111_fragments

    assert a1111_fragments("a (red:1.3) heart") == [("a ", 1.0), ("red", 1.3), (" heart", 1.0)]
    # compel tokenizes each fragment apart: fragments of white space alone are dropped
    assert a1111_fragments("[blue] ((cat))") == [("blue", pytest.approx(1 / 1.1)), ("cat", pytest.approx(1.21))]
    assert a1111_fragments(r"a \(literal\) 2:1") == [("a (literal) 2:1", 1.0)]
    assert a1111_fragments("unclosed (red heart") == [("unclosed ", 1.0), ("red heart", pytest.approx(1.1))]


def test_weighted_prompts_through_compel_equal_plain_ones_at_weight_one_and_steer_otherwise(tmp_path):
    run = step(tmp_path, {"steps": 6, "seed": 3}, sweep={"prompt_weighting": ["off", "a1111"],
                                                         "prompt": ["red heart", "(red:1.6) heart"]})
    assert run.status == "done", run.failed
    by = {(i.labels["prompt_weighting"], i.labels["prompt"]): grey(i.artifacts["image"].path) for i in run.step("img")}
    assert close(by["off", "red heart"], by["a1111", "red heart"])  # compel's embeddings are diffusers' own
    assert not np.array_equal(by["a1111", "(red:1.6) heart"], by["a1111", "red heart"])
    # a long prompt is encoded in windows rather than cut at the tokenizer's length
    words = "red heart " * 30
    long = step(tmp_path / "long", {"steps": 4, "seed": 3, "prompt": words + "blue", "prompt_weighting": "compel"})
    cut = step(tmp_path / "cut", {"steps": 4, "seed": 3, "prompt": words + "green", "prompt_weighting": "compel"})
    assert not np.array_equal(grey(long.step("img")[0].artifacts["image"].path),
                              grey(cut.step("img")[0].artifacts["image"].path))


def test_clip_skip_equals_diffusers(tmp_path):
    from studio_image.diffusion_pipeline import expose_final_layer_norm

    run = step(tmp_path, {"prompt": "blue heart", "steps": 6, "seed": 2, "clip_skip": 1})
    pipe = diffusers_pipeline("text2img")
    expose_final_layer_norm(pipe)  # diffusers reads the norm where transformers 4 kept it
    theirs = pipe("blue heart", num_inference_steps=6, clip_skip=1,
                  generator=torch.Generator("cpu").manual_seed(2)).images[0]
    plain = pipe("blue heart", num_inference_steps=6, generator=torch.Generator("cpu").manual_seed(2)).images[0]
    ours = run.step("img")[0].artifacts["image"].path
    assert close(ours, theirs) and not close(ours, plain)


# --- bad inputs -----------------------------------------------------------------------


def refused(tmp_path: Path, with_: dict) -> str:
    with pytest.raises(PipelineError) as info:
        step(tmp_path, with_)
    return str(info.value)


def test_bad_image_inputs_are_refused_before_the_run(tmp_path):
    init = sketch(tmp_path / "sketch.png")
    top_half_mask(tmp_path / "small.png", 16)
    top_half_mask(tmp_path / "rgb.png", 32, "RGB")
    Image.new("RGB", (32, 32), (250, 20, 20)).save(tmp_path / "colour.png")
    Image.new("L", (32, 32), 0).save(tmp_path / "black.png")
    Image.new("RGB", (31, 31), "white").save(tmp_path / "odd.png")
    base = {"prompt": "x", "image": str(init)}
    assert ("steps[0].with (step 'img'): mask is 16 x 16 but image is 32 x 32: a mask must have its image's size"
            in refused(tmp_path, {**base, "mask": str(tmp_path / "small.png")}))
    assert "mask is a colour image (mode RGB" in refused(tmp_path, {**base, "mask": str(tmp_path / "colour.png")})
    assert "mask is black everywhere: nothing would be repainted" in refused(
        tmp_path, {**base, "mask": str(tmp_path / "black.png")})
    assert "steps[0].with.strength (step 'img'): got 1.5" in refused(tmp_path, {**base, "strength": 1.5})
    assert "got 0" in refused(tmp_path, {**base, "strength": 0})
    assert ("strength 0.02 x 25 steps runs no denoising step" in refused(tmp_path, {**base, "strength": 0.02}))
    assert "strength applies to image-to-image: give image" in refused(tmp_path, {"prompt": "x", "strength": 0.5})
    assert "mask needs the image it masks" in refused(tmp_path, {"prompt": "x", "mask": str(tmp_path / "rgb.png")})
    assert ("image is 31 x 31, and its width 31 is not a multiple of 2 as this model needs; set width (e.g. 30)"
            in refused(tmp_path, {"prompt": "x", "image": str(tmp_path / "odd.png")}))
    # a grey mask saved as RGB is fine
    ok = step(tmp_path / "ok", {**base, "mask": str(tmp_path / "rgb.png"), "steps": 2})
    assert ok.status == "done", ok.failed


def test_bad_loras_and_options_are_refused_before_the_run(tmp_path, tiny_sd_dir, lora_file):
    from studio_image.diffusion import DEFAULT_WEIGHTS, DIGITS_WEIGHTS

    torch.save({"x": torch.zeros(2)}, tmp_path / "style.bin")
    said = refused(tmp_path, {"prompt": "x", "loras": [{"path": "style.bin"}]})
    assert "steps[0].with.loras (step 'img'): lora 'style.bin' is a .bin file" in said and "never a pickle" in said
    other = make_lora(tiny_sd_dir, tmp_path / "other")  # made for another architecture
    said = refused(tmp_path, {"prompt": "x", "loras": [{"path": str(other)}]})
    assert "does not fit this model:" in said and "It was made for another base model" in said
    assert ("36 of its 36 layers do not match, e.g. text_encoder.encoder.layers.0.self_attn.k_proj (maps 16 -> 16 "
            "features; the model's layer is 128 -> 128)") in said
    unet_only = make_lora(tiny_sd_dir, tmp_path / "unet-only", text_encoder=False)
    said = refused(tmp_path, {"prompt": "x", "loras": [{"path": str(unet_only)}]})
    assert "e.g. unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_" in said
    unet = next((DEFAULT_WEIGHTS / "unet").glob("*.safetensors"))
    assert "holds no LoRA layers" in refused(tmp_path, {"prompt": "x", "loras": [{"path": str(unet)}]})
    assert "not found (looked in" in refused(tmp_path, {"prompt": "x", "loras": [{"path": "none.safetensors"}]})
    assert ("steps[0].with.loras (step 'img'): got [{'pth': 'x'}]: [0].pth: Extra inputs are not permitted. "
            "Allowed: list of mapping {path, name, scale, sha256}") in refused(
        tmp_path, {"prompt": "x", "loras": [{"pth": "x"}]})
    assert "lora_scale 0.5 multiplies the scales of loras, and this item has none" in refused(
        tmp_path, {"prompt": "x", "lora_scale": 0.5})
    assert "is listed twice" in refused(tmp_path, {"prompt": "x", "loras": [{"path": str(lora_file)}] * 2})
    assert "not the " + "0" * 64 in refused(tmp_path, {"prompt": "x", "loras": [
        {"path": str(lora_file), "sha256": "0" * 64}]})
    assert "is a UNet2DModel; loras apply to text-to-image pipelines" in refused(
        tmp_path, {"model": str(DIGITS_WEIGHTS), "loras": [{"path": str(lora_file)}]})
    assert "clip_skip applies to text-to-image pipelines" in refused(
        tmp_path, {"model": str(DIGITS_WEIGHTS), "clip_skip": 1})
    assert "clip_skip 3 leaves none of the text encoder's 3 layers; give at most 2" in refused(
        tmp_path, {"prompt": "x", "clip_skip": 3})
    assert "clip_skip can be 1 at most" in refused(
        tmp_path, {"prompt": "x", "clip_skip": 2, "prompt_weighting": "a1111"})
