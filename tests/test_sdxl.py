"""SDXL as artists use it: weighted and long prompts on both text encoders (compel),
clip_skip, the refiner pass, no invisible watermark, and an SDXL single file.

A tiny SDXL base (two CLIP encoders, the UNet's size-and-pooled-text conditioning at the
real widths 2816 / 2560 that recognition reads) and a tiny refiner sharing its VAE and
second encoder, 32 x 32 at 2-4 steps. Each Studio image is compared with the one
diffusers' own script makes from the same weights and seed, within 1 grey level.
"""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from test_single_file import family_shapes, ldm_unet_key, ldm_vae_key, run, sparse_file, validate

SIZE = {"width": 32, "height": 32}


def tiny_unet(cross: int, time_dim: int, conditioning: int, in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=4, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross, attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=conditioning)


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    """The base's diffusers folder and its single file, an inpainting single file, and
    the refiner's folder (configs-only copies beside them for `config:`). The
    second encoder's pooled output is 80 wide: 6 x 456 + 80 = 2816 (base), 5 x 496 + 80
    = 2560 (refiner), the widths real SDXL checkpoints have."""
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline)
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from studio_diffusers.clip_vocab import clip_tokenizer

    torch.manual_seed(0)
    clip = dict(intermediate_size=37, num_hidden_layers=3, num_attention_heads=4, vocab_size=49408,
                max_position_embeddings=77)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=16)
    # the encoders' widths differ, as CLIP ViT-L's 768 and OpenCLIP ViT-bigG's 1280 do (diffusers tells them apart so)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, **clip))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=48, **clip, projection_dim=80, hidden_act="gelu"))
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       steps_offset=1, timestep_spacing="leading")
    base = StableDiffusionXLPipeline(unet=tiny_unet(80, 456, 2816), vae=vae, text_encoder=text, text_encoder_2=text_2,
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"), scheduler=scheduler)
    refiner = StableDiffusionXLImg2ImgPipeline(
        unet=tiny_unet(48, 496, 2560), vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=text_2,
        tokenizer_2=clip_tokenizer("!"), scheduler=scheduler, requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False)
    root = tmp_path_factory.mktemp("xl")
    base.save_pretrained(root / "base")
    refiner.save_pretrained(root / "refiner")
    save_file(sdxl_single_file_state(base), root / "base.safetensors")
    shutil.copytree(root / "base", root / "configs", ignore=shutil.ignore_patterns("*.safetensors", "tokenizer*"))
    inpaint = StableDiffusionXLInpaintPipeline(**{**base.components, "unet": tiny_unet(80, 456, 2816, in_channels=9)})
    inpaint.save_pretrained(root / "inpaint")
    shutil.copytree(root / "inpaint", root / "inpaint-configs",
                    ignore=shutil.ignore_patterns("*.safetensors", "tokenizer*"))
    save_file(sdxl_single_file_state(inpaint), root / "inpaint.safetensors")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "init.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(root / "mask.png")
    return root


def sdxl_single_file_state(pipe) -> dict:
    """An SDXL pipeline's weights as model sites ship them: the UNet and VAE under the
    original names, CLIP ViT-L in conditioner.embedders.0.transformer, OpenCLIP's layout
    (q, k and v in one in_proj, the projection transposed) in conditioner.embedders.1.model."""
    unet, layers = pipe.unet, pipe.unet.config.layers_per_block
    up_attention = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    state = {}
    for k, v in unet.state_dict().items():
        name = ("label_emb.0." + ("0" if k[21] == "1" else "2") + k[22:] if k.startswith("add_embedding.linear_")
                else ldm_unet_key(k, layers, up_attention))
        state["model.diffusion_model." + name] = v
    blocks = len(pipe.vae.config.down_block_types)
    for k, v in pipe.vae.state_dict().items():
        name = ldm_vae_key(k, blocks)
        state["first_stage_model." + name] = v.reshape(*v.shape, 1, 1) if ".attn_1." in name and v.ndim == 2 else v
    for k, v in pipe.text_encoder.state_dict().items():
        state["conditioner.embedders.0.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k] = v
    state.update(open_clip_state(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    return {k: v.contiguous() for k, v in state.items()}


def open_clip_state(hf: dict, prefix: str) -> dict:
    hf = {k.removeprefix("text_model."): v for k, v in hf.items()}
    state = {"token_embedding.weight": hf.pop("embeddings.token_embedding.weight"),
             "positional_embedding": hf.pop("embeddings.position_embedding.weight"),
             "ln_final.weight": hf.pop("final_layer_norm.weight"), "ln_final.bias": hf.pop("final_layer_norm.bias"),
             "text_projection": hf.pop("text_projection.weight").T}
    for k in [k for k in hf if ".self_attn.q_proj." in k]:  # q, k and v in one in_proj
        kind = k.rsplit(".", 1)[1]
        parts = [hf.pop(k.replace("q_proj", p)) for p in ("q_proj", "k_proj", "v_proj")]
        hf[k.split(".self_attn.")[0] + f".attn.in_proj_{kind}"] = torch.cat(parts)
    renames = (("encoder.layers.", "transformer.resblocks."), (".self_attn.out_proj.", ".attn.out_proj."),
               (".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."),
               (".mlp.fc2.", ".mlp.c_proj."))
    for k, v in hf.items():
        for ours, theirs in renames:
            k = k.replace(ours, theirs)
        state[k] = v
    return {prefix + k: v for k, v in state.items()}


@pytest.fixture(scope="module")
def made(xl, tmp_path_factory):
    """Studio's images, one pipeline of several steps (the model loads once): step id ->
    (image in grey levels, the item's manifest notes)."""
    from studio.testing import run_yaml

    base, prompt = str(xl / "base"), {"prompt": "a red cat", "seed": 5, "steps": 2, **SIZE}
    steps = {"compel": {"model": base, "prompt_weighting": "a1111"},
             "skip": {"model": base, "prompt_weighting": "a1111", "clip_skip": 1},
             "refined": {"model": base, "refiner": str(xl / "refiner"), "refiner_switch": 0.5, "steps": 4},
             # the refiner's prompt through compel too, on its one (second) encoder
             "refined-weighted": {"model": base, "refiner": str(xl / "refiner"), "refiner_switch": 0.5, "steps": 4,
                                  "prompt": "a (red:1.3) cat", "prompt_weighting": "a1111"},
             "single": {"model": str(xl / "base.safetensors"), "config": str(xl / "configs")},
             "inpaint": {"model": str(xl / "inpaint.safetensors"), "config": str(xl / "inpaint-configs"),
                         "image": str(xl / "init.png"), "mask": str(xl / "mask.png"), "keep_unmasked": False}}
    pipeline = {"name": "xl", "device": "cpu",
                "steps": [{"id": name, "uses": "image.diffusion", "with": {**prompt, **with_}}
                          for name, with_ in steps.items()]}
    result = run_yaml(json.dumps(pipeline), tmp_path_factory.mktemp("run"))
    assert result.status == "done", result.failed
    # each image's manifest notes, and its A1111 parameters beside them
    images = {name: Image.open(result.artifacts(name)[0].path) for name in steps}
    return {name: (np.asarray(image).astype(np.int16),
                   {**result.step(name)[0].notes, "parameters": image.info["parameters"]})
            for name, image in images.items()}


@pytest.fixture(scope="module")
def base(xl):
    """diffusers' own pipeline of the tiny base."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(xl / "base", local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_image(pipe, **extra) -> np.ndarray:
    """The pipeline's image for the prompt and seed Studio's steps use, in grey levels."""
    call = {"num_inference_steps": 2, "guidance_scale": 7.5, "output_type": "np", **SIZE, **extra,
            "generator": extra.get("generator") or torch.Generator().manual_seed(5)}
    return (pipe("a red cat", **call).images[0] * 255).round().astype(np.int16)


def item(prompt: str, clip_skip=None):
    return SimpleNamespace(prompt=prompt, negative_prompt=None, prompt_weighting="a1111", clip_skip=clip_skip,
                           embeddings=[])


def test_compel_on_sdxl_gives_diffusers_image(base, made):
    ours, notes = made["compel"]
    assert np.abs(ours - diffusers_image(base)).max() <= 1
    assert notes["watermark"] == "none"


def test_weights_and_long_prompts_reach_both_encoders(base):
    """compel's embeddings: an unweighted prompt's are diffusers' own; a weight changes
    them (not the pooled one, which weights do not reach in diffusers either); a prompt
    past 77 tokens is encoded in two windows instead of cut."""
    from studio_image.diffusion_prompts import prompt_arguments

    embeds, _, pooled, _ = base.encode_prompt("a red cat", do_classifier_free_guidance=False)
    plain = prompt_arguments(base, [item("a red cat")])
    assert torch.allclose(plain["prompt_embeds"], embeds, atol=1e-5)
    assert torch.allclose(plain["pooled_prompt_embeds"], pooled, atol=1e-5)
    assert "negative_prompt_embeds" not in plain  # SDXL base zeroes an absent negative prompt, as for text
    weighted = prompt_arguments(base, [item("a (red:1.6) cat")])
    assert not torch.allclose(weighted["prompt_embeds"], embeds, atol=1e-3)
    assert torch.allclose(weighted["pooled_prompt_embeds"], pooled, atol=1e-5)
    long = "a red cat, " + ", ".join(["sitting on a green velvet chair in a sunny room"] * 12)
    whole = prompt_arguments(base, [item(long)])["prompt_embeds"]
    cut = base.encode_prompt(long, do_classifier_free_guidance=False)[0]
    assert whole.shape[1] == 154 and cut.shape[1] == 77


def test_clip_skip_on_sdxl_is_diffusers_clip_skip(xl, base, made, tmp_path):
    from studio_image.diffusion_prompts import prompt_arguments

    ours, _ = made["skip"]
    assert np.abs(ours - diffusers_image(base, clip_skip=1)).max() <= 1
    skipped = prompt_arguments(base, [item("a red cat", clip_skip=1)])["prompt_embeds"]
    assert torch.allclose(skipped, base.encode_prompt("a red cat", do_classifier_free_guidance=False, clip_skip=1)[0],
                          atol=1e-5)
    code, out = validate(tmp_path, {"model": str(xl / "base"), "clip_skip": 2})
    assert code == 2 and "steps[0].with" in out and "give at most 1" in out and "Traceback" not in out


def test_the_refiner_pass_is_diffusers_base_then_refiner(xl, base, made):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        xl / "refiner", text_encoder_2=base.text_encoder_2, vae=base.vae, local_files_only=True, add_watermarker=False)
    refiner.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(5)
    latents = base("a red cat", **SIZE, num_inference_steps=4, guidance_scale=7.5, denoising_end=0.5,
                   output_type="latent", generator=generator).images
    theirs = diffusers_image(refiner, image=latents, num_inference_steps=4, denoising_start=0.5, generator=generator,
                             width=None, height=None)
    ours, notes = made["refined"]
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(ours - diffusers_image(base, num_inference_steps=4)).max() > 1  # the refiner did work
    assert notes["refiner"] == str(xl / "refiner") and notes["watermark"] == "none"
    assert "Refiner: refiner, Refiner switch at: 0.5" in notes["parameters"].splitlines()[-1]  # A1111's keys
    assert np.abs(made["refined-weighted"][0] - ours).max() > 0


def test_no_watermark_whatever_is_installed(xl, monkeypatch):
    """diffusers builds its watermarker when add_watermarker is left None and the package
    reports itself installed; Studio passes False on every path that builds an SDXL pipeline."""
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl as text2img
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img as img2img

    from studio_image.diffusion import engine_for

    for module in (text2img, img2img):
        monkeypatch.setattr(module, "is_invisible_watermark_available", lambda: True)
    for model, extra in ((xl / "base", {}), (xl / "base.safetensors", {"config": str(xl / "configs")})):
        options = {"use_safetensors": True, "local_files_only": True, "refiner": str(xl / "refiner"), **extra}
        engine = engine_for(str(model), extra.get("config")).load(model, str(model), options)
        assert engine.loaded.pipeline.watermark is None and engine.loaded.refiner.watermark is None
        assert engine.mode_pipeline("img2img").watermark is None


def test_an_sdxl_single_file_gives_diffusers_own_image(xl, base, made):
    from diffusers import StableDiffusionXLPipeline

    from studio_diffusers.clip_vocab import clip_tokenizer

    pipe = StableDiffusionXLPipeline.from_single_file(
        str(xl / "base.safetensors"), config=str(xl / "configs"), local_files_only=True, add_watermarker=False,
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"))
    pipe.set_progress_bar_config(disable=True)
    theirs = diffusers_image(pipe)
    ours, _ = made["single"]
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(made["compel"][0] - theirs).max() <= 1  # the file holds the folder's weights


def test_refiner_mixes_are_refused_before_the_run(xl, tmp_path):
    sd1, refiner_file = tmp_path / "sd1.safetensors", tmp_path / "xl-refiner.safetensors"
    sparse_file(sd1, family_shapes("sd1"))
    sparse_file(refiner_file, family_shapes("sdxl-refiner"))
    base = str(xl / "base")
    cases = [({"model": base, "refiner": str(sd1)}, "steps[0].with.refiner", "is a Stable Diffusion 1.x"),
             ({"model": str(sd1), "refiner": str(refiner_file)}, "steps[0].with.refiner",
              "refiner applies to a Stable Diffusion XL base model"),
             ({"model": base, "refiner_switch": 0.6}, "steps[0].with", "has no refiner"),
             ({"model": base, "refiner": str(xl / "refiner"), "refiner_switch": 1.0}, "refiner_switch", "less than 1")]
    for with_, where, what in cases:
        code, out = validate(tmp_path, with_)
        assert code == 2 and where in out and what in out and "Traceback" not in out, out
    assert validate(tmp_path, {"model": base, "refiner": str(refiner_file), "prompt": "x"})[0] == 0


def test_an_sdxl_inpainting_single_file_gives_diffusers_own_image(xl, made):
    from diffusers import StableDiffusionXLInpaintPipeline

    from studio_diffusers.clip_vocab import clip_tokenizer

    pipe = StableDiffusionXLInpaintPipeline.from_single_file(
        str(xl / "inpaint.safetensors"), config=str(xl / "inpaint-configs"), local_files_only=True,
        add_watermarker=False, tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"))
    pipe.set_progress_bar_config(disable=True)
    theirs = diffusers_image(pipe, image=Image.open(xl / "init.png"), mask_image=Image.open(xl / "mask.png"),
                             strength=1.0)
    ours, notes = made["inpaint"]
    assert np.abs(ours - theirs).max() <= 1 and notes["watermark"] == "none"
