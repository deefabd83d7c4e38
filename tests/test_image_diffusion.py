"""image.diffusion on tiny checkpoints the tests build and save themselves, loaded
through the same code path as a user's."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from studio.testing import run_yaml


@pytest.fixture(scope="module")
def tiny_unet_dir(tmp_path_factory):
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    path = tmp_path_factory.mktemp("models") / "tiny-ddim"
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100)).save_pretrained(path)
    return path


def run(tmp_path, with_, sweep=None, **kwargs):
    step = {"id": "img", "uses": "image.diffusion", "with": with_}
    if sweep:
        step["sweep"] = sweep
    text = json.dumps({"name": "d", "device": "cpu", "steps": [step]})  # JSON is YAML
    return run_yaml(text, tmp_path, **kwargs)


def refused(tmp_path, with_) -> str:
    """What `studio validate` says about an image.diffusion step (before anything runs)."""
    from studio.errors import PipelineError

    with pytest.raises(PipelineError) as info:
        run(tmp_path, with_)
    return str(info.value)


def pixels(result):
    return [np.asarray(Image.open(a.path)) for a in result.artifacts()]


def test_same_seed_same_image_as_the_diffusers_pipeline(tiny_unet_dir, tmp_path):
    from diffusers import DDIMPipeline

    result = run(tmp_path, {"model": str(tiny_unet_dir), "steps": 4, "seed": 42})
    assert result.status == "done", result.failed
    (ours,) = pixels(result)
    pipe = DDIMPipeline.from_pretrained(tiny_unet_dir)
    theirs = pipe(generator=torch.Generator("cpu").manual_seed(42), num_inference_steps=4, output_type="np").images[0]
    theirs = (theirs * 255).round().astype(np.uint8)
    assert ours.shape == (8, 8, 3)
    assert np.array_equal(ours, theirs)


def test_a_batched_sweep_gives_the_images_of_one_by_one(tiny_unet_dir, tmp_path):
    with_ = {"model": str(tiny_unet_dir), "steps": 3}
    batched = run(tmp_path / "b", with_, sweep={"seed": [1, 2, 3]}, use_cache=False)
    single = [pixels(run(tmp_path / f"s{s}", {**with_, "seed": s}, use_cache=False))[0] for s in (1, 2, 3)]
    for a, b in zip(pixels(batched), single):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(single[0], single[1])


def test_schedulers_swap_by_name(tiny_unet_dir, tmp_path):
    images = {}
    for name in ("ddim", "euler-a", "dpm++", "ddpm", "dpm++-karras", "euler-karras", "heun-karras"):
        result = run(tmp_path / name, {"model": str(tiny_unet_dir), "steps": 3, "seed": 5, "scheduler": name})
        assert result.status == "done", (name, result.failed)
        images[name] = pixels(result)[0]
    assert not np.array_equal(images["ddim"], images["euler-a"])


@pytest.mark.parametrize("with_,message", [
    ({"prompt": "a cat"}, "steps[0].with.prompt (step 'img'): model '{model}' is an unconditional UNet; it takes "
                          "no prompt or negative_prompt"),
    ({"class_label": 3}, "steps[0].with.class_label (step 'img'): model '{model}' is unconditional: it takes no "
                         "class_label"),
    ({"width": 9}, "steps[0].with.width (step 'img'): width 9 is not a multiple of 2, as this model needs; try 8"),
])
def test_parameters_that_do_not_apply_are_refused(tiny_unet_dir, tmp_path, with_, message):
    said = refused(tmp_path, {"model": str(tiny_unet_dir), "steps": 2, **with_})
    assert message.format(model=tiny_unet_dir) in said


def test_a_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    said = refused(tmp_path, {"model": "no-such-org/no-such-model", "steps": 2})
    assert ("steps[0].with.model (step 'img'): model 'no-such-org/no-such-model' is neither a local path "
            f"(looked in {tmp_path}/no-such-org/no-such-model) nor in the Hugging Face cache") in said
    assert "Studio never downloads" in said


def test_text_to_image_matches_diffusers_and_takes_upstream_text(tiny_sd_dir, tmp_path):
    from diffusers import AutoPipelineForText2Image

    text = json.dumps({"name": "t2i", "device": "cpu", "steps": [
        {"id": "words", "uses": "text.template", "with": {"template": "a cat"}},
        {"id": "img", "uses": "image.diffusion",
         "with": {"model": str(tiny_sd_dir), "prompt": "${steps.words.outputs.text}", "steps": 2,
                  "guidance_scale": 5.0, "negative_prompt": "dog"},
         "sweep": {"seed": [1, 2]}},
    ]})
    result = run_yaml(text, tmp_path)
    assert result.status == "done", result.failed
    ours = [np.asarray(Image.open(a.path)) for a in result.artifacts("img")]
    pipe = AutoPipelineForText2Image.from_pretrained(tiny_sd_dir)
    for seed, image in zip((1, 2), ours):
        theirs = pipe(prompt="a cat", negative_prompt="dog", num_inference_steps=2, guidance_scale=5.0,
                      generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        theirs = (theirs * 255).round().astype(np.uint8)
        assert image.shape == (16, 16, 3)
        assert np.abs(image.astype(int) - theirs.astype(int)).max() <= 1  # batched vs alone


def test_text_to_image_without_a_prompt_samples_the_empty_prompt_as_diffusers_does(tiny_sd_dir, tmp_path):
    from diffusers import AutoPipelineForText2Image

    result = run(tmp_path, {"model": str(tiny_sd_dir), "steps": 2, "seed": 3})
    assert result.status == "done", result.failed
    (ours,) = pixels(result)
    pipe = AutoPipelineForText2Image.from_pretrained(tiny_sd_dir)
    theirs = pipe(prompt="", num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(3),
                  output_type="np").images[0]
    assert np.abs(ours.astype(int) - (theirs * 255).round().astype(int)).max() <= 1


def test_validate_and_the_run_ask_the_same_engine():
    """The folder picks the engine, and a rule lives in it once: a prompt on a UNet2DModel
    is refused with the same words by validation and by a run given unvalidated params."""
    from pydantic import ValidationError

    from studio import UserError
    from studio.testing import make_context
    from studio_image.diffusion import DIGITS_WEIGHTS, ImageDiffusion, engine_for
    from studio_image.diffusion_pipeline import PipelineEngine
    from studio_image.diffusion_unet import UnetEngine

    digits = str(DIGITS_WEIGHTS)
    assert isinstance(engine_for(digits), UnetEngine) and isinstance(engine_for("default"), PipelineEngine)
    problem = engine_for(digits).prompt_problem(digits, "a cat")
    assert problem.startswith(f"model {digits!r} is a class-conditional (class_label: 0, 1, 2")
    with pytest.raises(ValidationError, match="it takes no prompt"):
        ImageDiffusion.Params(model=digits, prompt="a cat")
    params = ImageDiffusion.Params(model=digits, steps=1).model_copy(update={"prompt": "a cat"})
    with pytest.raises(UserError) as info:
        ImageDiffusion().generate(params, make_context())
    assert str(info.value) == problem
