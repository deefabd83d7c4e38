"""image.diffusion's ControlNets: each mode the same image as diffusers' own ControlNet
pipeline over the same components (tiny models the tests build), several at once with
start and end, found by name in a ComfyUI tree, and refused before the run when made for
another family or steering backwards."""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from studio.testing import run_yaml

PROMPT = "a cat"
STEPS = 2


@pytest.fixture(scope="module")
def controlnets(tiny_sd_dir, tmp_path_factory):
    """Two ControlNet folders made from the tiny model's UNet, with random weights (a
    ControlNet made from a UNet starts with zero convolutions: it would steer nothing)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")
    root = tmp_path_factory.mktemp("controlnets")
    made = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        # the tiny VAE halves the image once: so does the control image's embedding
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.normal_(0, 0.3)
        net.save_pretrained(root / f"cn{seed}")
        made.append(root / f"cn{seed}")
    return made


def edges(path: Path, size: int = 32) -> Path:
    """A control image: white outlines on black."""
    image = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, size - 5, size - 5), outline="white", width=2)
    draw.line((0, size - 1, size - 1, 0), fill="white", width=2)
    image.save(path)
    return path


def picture(path: Path, size: int = 16) -> Path:
    image = Image.new("RGB", (size, size), (200, 40, 40))
    ImageDraw.Draw(image).rectangle((4, 4, 11, 11), fill=(40, 160, 60))
    image.save(path)
    return path


def top_mask(path: Path, size: int = 16) -> Path:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, size - 1, size // 2 - 1), fill=255)
    mask.save(path)
    return path


def grey(image) -> np.ndarray:
    image = image if isinstance(image, Image.Image) else Image.open(image)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def close(ours, theirs) -> bool:
    return int(np.abs(grey(ours) - grey(theirs)).max()) <= 1


def theirs(tiny_sd_dir, auto_name: str, nets: list, seed: int, **call):
    """diffusers' own ControlNet pipeline's image: the AutoPipeline of the mode, from_pipe
    over the tiny model with these ControlNets."""
    import diffusers
    from diffusers import ControlNetModel

    models = [ControlNetModel.from_pretrained(n) for n in nets]
    pipe = getattr(diffusers, auto_name).from_pipe(_tiny_pipeline(str(tiny_sd_dir)),
                                                   controlnet=models[0] if len(models) == 1 else models)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(seed), **call).images[0]


@lru_cache(maxsize=1)
def _tiny_pipeline(root: str):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(root, dtype=torch.float32)


def test_each_mode_and_two_controlnets_equal_diffusers(tiny_sd_dir, controlnets, tmp_path):
    cn1, cn2 = controlnets
    control, init, mask = edges(tmp_path / "edges.png"), picture(tmp_path / "init.png"), top_mask(tmp_path / "m.png")
    base = {"model": str(tiny_sd_dir), "prompt": PROMPT, "steps": STEPS, "seed": 3, "width": 16, "height": 16,
            "controlnets": [{"model": str(cn1), "scale": 0.8}], "control_images": [str(control)]}
    steps = [
        {"id": "t2i", "uses": "image.diffusion", "with": base},
        {"id": "i2i", "uses": "image.diffusion", "with": {**base, "image": str(init), "strength": 0.7}},
        {"id": "inp", "uses": "image.diffusion",
         "with": {**base, "image": str(init), "mask": str(mask), "keep_unmasked": False}},
        {"id": "two", "uses": "image.diffusion", "with": {
            **base, "controlnets": [{"model": str(cn1), "scale": 0.5, "start": 0.25},
                                    {"model": str(cn2), "scale": 1.2, "end": 0.5}],
            "control_images": [str(control), "${steps.t2i.outputs.image}"]}},
    ]
    run = run_yaml(json.dumps({"name": "cn", "device": "cpu", "steps": steps}), tmp_path)
    assert run.status == "done", run.failed
    out = {name: run.step(name)[0].artifacts["image"].path for name in ("t2i", "i2i", "inp", "two")}
    edges_image = Image.open(control).convert("RGB")  # 32 x 32: diffusers sizes it to the output
    size = {"width": 16, "height": 16}
    assert close(out["t2i"], theirs(tiny_sd_dir, "AutoPipelineForText2Image", [cn1], 3, image=edges_image,
                                    controlnet_conditioning_scale=0.8, **size))
    init_image = Image.open(init).convert("RGB")
    assert close(out["i2i"], theirs(tiny_sd_dir, "AutoPipelineForImage2Image", [cn1], 3, image=init_image,
                                    control_image=edges_image, strength=0.7, controlnet_conditioning_scale=0.8,
                                    **size))
    assert close(out["inp"], theirs(tiny_sd_dir, "AutoPipelineForInpainting", [cn1], 3, image=init_image,
                                    mask_image=Image.open(mask), control_image=edges_image,
                                    controlnet_conditioning_scale=0.8, **size))
    upstream = Image.open(out["t2i"]).convert("RGB")
    assert close(out["two"], theirs(tiny_sd_dir, "AutoPipelineForText2Image", [cn1, cn2], 3,
                                    image=[edges_image, upstream], controlnet_conditioning_scale=[0.5, 1.2],
                                    control_guidance_start=[0.25, 0.0], control_guidance_end=[1.0, 0.5], **size))
    # steering changes the image; the control images are in the manifest by hash
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    (record,) = manifest["steps"]["two"]["items"]
    assert [image.get("from", "file") for image in record["params"]["control_images"]] \
        == ["file", "t2i"]


def test_another_family_and_backwards_steering_are_refused_before_the_run(tiny_sd_dir, controlnets, tmp_path,
                                                                         studio_main):
    xl = tmp_path / "xl-controlnet"
    shutil.copytree(controlnets[0], xl)
    cfg = json.loads((xl / "config.json").read_text())
    (xl / "config.json").write_text(json.dumps({**cfg, "cross_attention_dim": 2048,
                                                "addition_embed_type": "text_time"}))
    control = edges(tmp_path / "edges.png")
    from safetensors.torch import save_file

    from studio_image.diffusion_control import LDM_ATTENTION

    sd15_file, pickle = tmp_path / "control_v11p_sd15_canny.safetensors", tmp_path / "control_sd15_canny.pth"
    save_file({LDM_ATTENTION: torch.zeros(320, 768)}, sd15_file)
    torch.save({"w": torch.zeros(1)}, pickle)
    for name, entry, expected in (
            ("family", {"model": str(xl)}, "was made for another model family: its cross_attention_dim is 2048"),
            ("backwards", {"model": str(controlnets[0]), "start": 0.6, "end": 0.4}, "start 0.6 is not before end 0.4"),
            ("count", None, "controlnets has 1 entries and control_images 2"),
            # an SD 1.5 single file, recognised from its header: Studio's shipped SD 1.5 ControlNet config
            ("sd15file", {"model": str(sd15_file)}, "its cross_attention_dim is 768"),
            ("pickle", {"model": str(pickle)}, "never a pickle")):
        images = [str(control)] * (2 if entry is None else 1)
        step = {"model": str(tiny_sd_dir), "prompt": PROMPT, "steps": 2,
                "controlnets": [entry or {"model": str(controlnets[0])}], "control_images": images}
        (tmp_path / f"{name}.yaml").write_text(json.dumps(
            {"name": name, "device": "cpu", "steps": [{"id": "a", "uses": "image.diffusion", "with": step}]}))
        result = studio_main("validate", f"{name}.yaml", cwd=tmp_path)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        text = result.stdout + result.stderr
        assert expected in text and f"{name}.yaml" in text and "Traceback" not in text, text
    assert "(a ControlNet for SDXL" in (studio_main("validate", "family.yaml", cwd=tmp_path).stderr
                                        + studio_main("validate", "family.yaml", cwd=tmp_path).stdout)


def test_a_controlnet_by_name_from_a_comfyui_tree(tiny_sd_dir, controlnets, tmp_path, monkeypatch):
    from studio import api
    from studio.pipeline.options import PipelineOptions

    monkeypatch.delenv("STUDIO_MODELS", raising=False)
    folder = tmp_path / "ComfyUI" / "models" / "controlnet"
    folder.mkdir(parents=True)
    shutil.copytree(controlnets[0], folder / "tiny_canny")
    control = edges(tmp_path / "edges.png")
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({"name": "n", "device": "cpu", "steps": [{"id": "a", "uses": "image.diffusion", "with": {
        "model": str(tiny_sd_dir), "prompt": PROMPT, "steps": 2, "controlnets": [{"name": "tiny_canny"}],
        "control_images": [str(control)]}}]}))
    run = api.load_with(path, PipelineOptions(model_dirs=(tmp_path / "ComfyUI",))).run(out=tmp_path / "runs")
    assert run.status == "done", run.failed
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    (record,) = manifest["steps"]["a"]["items"]
    assert record["params"]["controlnets"][0]["model"] == str((folder / "tiny_canny").resolve())


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    """A tiny SDXL base (test_sdxl's UNet and encoders at toy widths) and a ControlNet made
    from its UNet with random weights."""
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from studio_diffusers.clip_vocab import clip_tokenizer
    from test_sdxl import tiny_unet

    torch.manual_seed(0)
    clip = {"intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 49408,
                "max_position_embeddings": 77}
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, **clip))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=48, **clip, projection_dim=80, hidden_act="gelu"))
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       steps_offset=1, timestep_spacing="leading")
    unet = tiny_unet(80, 456, 2816)
    base = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=text, text_encoder_2=text_2,
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"), scheduler=scheduler)
    root = tmp_path_factory.mktemp("xl-cn")
    base.save_pretrained(root / "base")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.3)
    net.save_pretrained(root / "controlnet")
    return root


def test_sdxl_controlnet_equals_diffusers_and_an_sd15_one_is_refused(tiny_xl, controlnets, tmp_path, studio_main):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline

    control = edges(tmp_path / "edges.png")
    base = {"model": str(tiny_xl / "base"), "prompt": PROMPT, "steps": 2, "seed": 5, "width": 16, "height": 16,
            "controlnets": [{"model": str(tiny_xl / "controlnet"), "scale": 0.7, "end": 0.6}],
            "control_images": [str(control)]}
    steps = [{"id": "t2i", "uses": "image.diffusion", "with": base}]
    run = run_yaml(json.dumps({"name": "xl", "device": "cpu", "steps": steps}), tmp_path)
    assert run.status == "done", run.failed
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_xl / "base", add_watermarker=False)
    net = ControlNetModel.from_pretrained(tiny_xl / "controlnet")
    # Studio's guidance default, 7.5 (diffusers' SDXL pipelines default to 5)
    call = {"num_inference_steps": 2, "guidance_scale": 7.5, "width": 16, "height": 16,
            "controlnet_conditioning_scale": 0.7, "control_guidance_end": 0.6}
    edges_image = Image.open(control).convert("RGB")
    text = StableDiffusionXLControlNetPipeline.from_pipe(pipe, controlnet=net, add_watermarker=False)
    text.set_progress_bar_config(disable=True)
    made = text(PROMPT, image=edges_image, generator=torch.Generator("cpu").manual_seed(5), **call).images[0]
    assert close(run.step("t2i")[0].artifacts["image"].path, made)
    # an SD 1.x-family ControlNet (the tiny SD one) on the SDXL model
    (tmp_path / "mix.yaml").write_text(json.dumps({"name": "mix", "device": "cpu", "steps": [
        {"id": "a", "uses": "image.diffusion",
         "with": {**base, "controlnets": [{"model": str(controlnets[0])}]}}]}))
    result = studio_main("validate", "mix.yaml", cwd=tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode == 2 and "was made for another model family" in text and "a model of SDXL" in text, text


def ldm_controlnet_state(folder: Path) -> dict:
    """A diffusers ControlNet's weights in the original ControlNet layout
    (`control_model.input_blocks...`), as control_v11p_sd15_canny.safetensors has them."""
    import re

    from diffusers import ControlNetModel

    from test_single_file import ldm_unet_key

    net = ControlNetModel.from_pretrained(folder)

    def key(name: str) -> str:
        m = re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(.*)", name)
        if m:  # the hint block: conv_in, then each block after a SiLU; conv_out is always its 14th layer
            index = {"conv_in": 0, "conv_out": 14}.get(m.group(1), 2 * (int(m.group(2) or 0) + 1))
            return f"input_hint_block.{index}.{m.group(3)}"
        m = re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", name)
        if m:
            return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
        if name.startswith("controlnet_mid_block."):
            return "middle_block_out.0." + name.removeprefix("controlnet_mid_block.")
        return ldm_unet_key(name, net.config.layers_per_block, set())

    return {"control_model." + key(name): value.contiguous() for name, value in net.state_dict().items()}


def test_single_file_controlnets_equal_the_folder_they_came_from(tiny_sd_dir, controlnets, tmp_path):
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    folder = controlnets[0]
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(folder / "config.json", configs / "config.json")
    save_file(ldm_controlnet_state(folder), tmp_path / "control_tiny.safetensors")
    save_file(ControlNetModel.from_pretrained(folder).state_dict(), tmp_path / "diffusers_keys.safetensors")
    control = edges(tmp_path / "edges.png")
    base = {"model": str(tiny_sd_dir), "prompt": PROMPT, "steps": 2, "seed": 4, "control_images": [str(control)]}
    entries = {"folder": {"model": str(folder)},
               "ldm": {"model": str(tmp_path / "control_tiny.safetensors"), "config": str(configs)},
               "diffusers": {"model": str(tmp_path / "diffusers_keys.safetensors"), "config": str(configs)}}
    steps = [{"id": name, "uses": "image.diffusion", "with": {**base, "controlnets": [entry]}}
             for name, entry in entries.items()]
    run = run_yaml(json.dumps({"name": "files", "device": "cpu", "steps": steps}), tmp_path)
    assert run.status == "done", [item.error for item in run.failed]
    images = [grey(run.step(name)[0].artifacts["image"].path) for name in entries]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])


def test_t2i_adapters_equal_diffusers_and_steer_text_to_image_only(tiny_sd_dir, tmp_path, studio_main):
    from diffusers import MultiAdapter, StableDiffusionAdapterPipeline, T2IAdapter

    folders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        # the tiny UNet's block widths; the tiny VAE halves the image once
        T2IAdapter(in_channels=3, channels=[8, 16], num_res_blocks=1, downscale_factor=2,
                   adapter_type="full_adapter").save_pretrained(tmp_path / f"adapter{seed}")
        folders.append(tmp_path / f"adapter{seed}")
    control = edges(tmp_path / "edges.png")
    base = {"model": str(tiny_sd_dir), "prompt": PROMPT, "steps": 2, "seed": 6, "width": 16, "height": 16,
            "adapters": [{"model": str(folders[0]), "scale": 0.8}], "adapter_images": [str(control)]}
    two = {**base, "adapters": [{"model": str(f), "scale": 0.6} for f in folders],
           "adapter_images": [str(control), str(control)]}
    steps = [{"id": "one", "uses": "image.diffusion", "with": base},
             {"id": "two", "uses": "image.diffusion", "with": two}]
    run = run_yaml(json.dumps({"name": "adapters", "device": "cpu", "steps": steps}), tmp_path)
    assert run.status == "done", [item.error for item in run.failed]
    edges_image = Image.open(control).convert("RGB")
    nets = [T2IAdapter.from_pretrained(f) for f in folders]
    for name, adapter, scale, image in (("one", nets[0], 0.8, edges_image),
                                        ("two", MultiAdapter(nets), [0.6, 0.6], [edges_image, edges_image])):
        pipe = StableDiffusionAdapterPipeline.from_pipe(_tiny_pipeline(str(tiny_sd_dir)), adapter=adapter)
        pipe.set_progress_bar_config(disable=True)
        made = pipe(PROMPT, image=image, adapter_conditioning_scale=scale, num_inference_steps=2, width=16,
                    height=16, generator=torch.Generator("cpu").manual_seed(6)).images[0]
        assert close(run.step(name)[0].artifacts["image"].path, made), name
    (tmp_path / "i2i.yaml").write_text(json.dumps({"name": "i2i", "device": "cpu", "steps": [
        {"id": "a", "uses": "image.diffusion", "with": {**base, "image": str(picture(tmp_path / "init.png"))}}]}))
    result = studio_main("validate", "i2i.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "adapters steer text-to-image only" in result.stdout + result.stderr
