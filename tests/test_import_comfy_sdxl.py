"""`studio import` of ComfyUI's standard SDXL graph, base then refiner: one image.diffusion
step with refiner and refiner_switch; what the refiner does that Studio's pass cannot,
listed by node id; pairs that are not one schedule split at one step refused, located."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.errors import UserError
from studio.interop.comfyui import from_graph
from studio.interop.comfyui_switch import base_steps, switch_for, timesteps

PROMPT, NEGATIVE = "evening sunset scenery blue sky nature, glass bottle", "text, watermark"


def sdxl_graph(steps: int = 25, end: int = 20) -> dict:
    """ComfyUI's SDXL example workflow in API format (its node ids and values)."""
    def sampler(**inputs) -> dict:
        return {"class_type": "KSamplerAdvanced", "inputs": {
            "noise_seed": 721897303308196, "steps": steps, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
            "end_at_step": 10000, **inputs}}

    def encode(text: str, clip: str) -> dict:
        return {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": [clip, 1]}}

    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "6": encode(PROMPT, "4"), "7": encode(NEGATIVE, "4"),
        "10": sampler(add_noise="enable", start_at_step=0, end_at_step=end, return_with_leftover_noise="enable",
                      model=["4", 0], positive=["6", 0], negative=["7", 0], latent_image=["5", 0]),
        "11": sampler(add_noise="disable", noise_seed=0, start_at_step=end, return_with_leftover_noise="disable",
                      model=["12", 0], positive=["15", 0], negative=["16", 0], latent_image=["10", 0]),
        "12": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_refiner_1.0.safetensors"}},
        "15": encode(PROMPT, "12"), "16": encode(NEGATIVE, "12"),
        "17": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["12", 2]}},
        "19": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["17", 0]}},
    }


def _import(graph: dict, tmp_path: Path):
    return from_graph(json.dumps(graph), "g.json", "g", tmp_path)


def test_comfyuis_sdxl_base_and_refiner_graph_imports_as_one_step(tmp_path):
    done = _import(sdxl_graph(), tmp_path)
    assert done.pipeline["steps"][0]["with"] == {
        "steps": 25, "guidance_scale": 8.0, "seed": 721897303308196, "scheduler": "euler",
        "model": "sd_xl_base_1.0", "prompt": PROMPT, "negative_prompt": NEGATIVE, "width": 1024, "height": 1024,
        "refiner": "sd_xl_refiner_1.0", "refiner_switch": 0.8}
    assert done.dropped == [] and any("refiner 'sd_xl_refiner_1.0'" in note for note in done.notes)
    # another split: 30 steps, the base's 20: SDXL's leading spacing makes 20/30 give diffusers' base 19 steps
    made = _import(sdxl_graph(30, 20), tmp_path)
    switch = made.pipeline["steps"][0]["with"]["refiner_switch"]
    assert switch == 0.669 and base_steps(switch, timesteps(30, "euler")) == 20
    assert any("not 20/30" in note for note in made.notes)
    assert _import(sdxl_graph(40, 30), tmp_path).pipeline["steps"][0]["with"]["refiner_switch"] == 0.75


# Studio's scheduler -> diffusers' class, as image.diffusion makes them
CLASSES = {"default": "EulerDiscreteScheduler", "euler": "EulerDiscreteScheduler",
           "euler-a": "EulerAncestralDiscreteScheduler", "heun": "HeunDiscreteScheduler",
           "dpm++": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler", "unipc": "UniPCMultistepScheduler",
           "ddpm": "DDPMScheduler", "dpm++-karras": "DPMSolverMultistepScheduler",
           "euler-karras": "EulerDiscreteScheduler", "heun-karras": "HeunDiscreteScheduler"}
SDXL_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "steps_offset": 1, "timestep_spacing": "leading"}


def test_the_switch_gives_diffusers_base_exactly_comfyuis_steps():
    """The timesteps worked out without diffusers are diffusers' own, for each Studio
    scheduler; the switch makes diffusers' SDXL base run exactly end_at_step steps."""
    import diffusers

    for scheduler, name in CLASSES.items():
        made = getattr(diffusers, name).from_config({**SDXL_CONFIG, "use_karras_sigmas": scheduler.endswith("karras")})
        for steps in (4, 25, 30, 33, 50):
            made.set_timesteps(steps)
            theirs = [float(t) for t in made.timesteps[::made.order]]
            assert max(abs(a - b) for a, b in zip(theirs, timesteps(steps, scheduler))) < 1e-3, (scheduler, steps)
            for end in {1, steps // 2, steps * 4 // 5, steps - 1}:
                switch = switch_for(steps, end, scheduler)
                if switch is None:  # Euler's and Heun's Karras end on timestep 1 +- rounding: that cut is refused
                    assert scheduler in ("euler-karras", "heun-karras") and end == steps - 1, (scheduler, steps, end)
                    continue
                # diffusers' StableDiffusionXLPipeline's own rule for denoising_end
                cutoff = int(round(1000 - switch * 1000))
                assert 0 < switch < 1 and sum(t >= cutoff for t in theirs) == end, (scheduler, steps, end)


def test_what_the_refiner_does_apart_is_listed_by_node(tmp_path):
    graph = sdxl_graph()
    graph["11"]["inputs"].update(cfg=5, sampler_name="dpmpp_2m")
    graph["15"] = {"class_type": "CLIPTextEncodeSDXLRefiner",
                   "inputs": {"ascore": 6, "width": 1024, "height": 1024, "text": "a bottle", "clip": ["12", 1]}}
    graph["6"] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "width": 4096, "height": 4096, "crop_w": 0, "crop_h": 0, "target_width": 1024, "target_height": 1024,
        "text_g": PROMPT, "text_l": "glass bottle", "clip": ["4", 1]}}
    graph["13"] = {"class_type": "LoraLoader", "inputs": {"lora_name": "x.safetensors", "strength_model": 1,
                                                          "strength_clip": 1, "model": ["12", 0], "clip": ["12", 1]}}
    graph["11"]["inputs"]["model"] = ["13", 0]
    done = _import(graph, tmp_path)
    with_ = done.pipeline["steps"][0]["with"]
    assert with_["prompt"] == PROMPT and with_["refiner"] == "sd_xl_refiner_1.0"
    dropped = "\n".join(done.dropped)
    for words in ("node 11 cfg: 5 (the refiner's own; Studio's refiner pass uses the base's 8)",
                  "node 11 sampler_name: dpmpp_2m", "node 15 (CLIPTextEncodeSDXLRefiner) positive text: 'a bottle'",
                  "node 6 (CLIPTextEncodeSDXL) text_l: 'glass bottle'", "node 6 (CLIPTextEncodeSDXL) width: 4096",
                  "node 13 (LoraLoader)"):
        assert words in dropped, dropped
    assert "height: 1024" not in dropped and "ascore" not in dropped
    assert "(CLIPTextEncodeSDXLRefiner) width" not in dropped
    # sizes are the image's own: a 832 x 1216 image conditioned on ComfyUI's 1024 defaults is listed
    graph["5"]["inputs"].update(width=832, height=1216)
    graph["15"]["inputs"]["ascore"] = 9
    dropped = "\n".join(_import(graph, tmp_path).dropped)
    for words in ("node 6 (CLIPTextEncodeSDXL) target_width: 1024 (Studio conditions SDXL on the image's own size, "
                  "uncropped: 832)", "node 15 (CLIPTextEncodeSDXLRefiner) height: 1024", "node 15 "
                  "(CLIPTextEncodeSDXLRefiner) ascore: 9 (Studio's refiner is conditioned on diffusers' aesthetic "
                  "score for the positive prompt, 6)"):
        assert words in dropped, dropped


def test_pairs_studio_cannot_express_are_refused_located(tmp_path):
    steps = sdxl_graph()
    steps["11"]["inputs"]["steps"] = 30
    start = sdxl_graph()
    start["11"]["inputs"]["start_at_step"] = 18
    early = sdxl_graph()
    early["11"]["inputs"]["end_at_step"] = 24
    last = sdxl_graph(50, 49)  # Euler with Karras' noise levels: the last timestep is 1, on the cut it would need
    for node in ("10", "11"):
        last[node]["inputs"]["scheduler"] = "karras"
    cases = [(steps, "run 25 and 30 steps", "Give both samplers the same steps"),
             (last, "stops at step 49 of 50", "euler-karras scheduler no refiner_switch",
              "Set end_at_step and start_at_step to one of 46, 47, 48"),
             (start, "refiner starts at step 18", "Set node 11's start_at_step to 20"),
             (early, "refiner stops at end_at_step 24 of 25", "end_at_step to 10000")]
    for graph, *words in cases:
        with pytest.raises(UserError) as info:
            _import(graph, tmp_path)
        message = str(info.value)
        assert message.startswith("g.json: ComfyUI nodes 10 (the base's KSamplerAdvanced) and 11"), message
        assert all(word in message for word in words), message


def test_the_imported_pair_validates_with_names_through_the_model_folders(tmp_path):
    from click.testing import CliRunner

    from studio.cli import cli
    from test_single_file import family_shapes, sparse_file

    folder = tmp_path / "ComfyUI" / "models" / "checkpoints"  # ComfyUI's layout; header-only (sparse) files
    folder.mkdir(parents=True)
    sparse_file(folder / "sd_xl_base_1.0.safetensors", family_shapes("sdxl"))
    sparse_file(folder / "sd_xl_refiner_1.0.safetensors", family_shapes("sdxl-refiner"))
    graph = sdxl_graph()
    graph["5"]["inputs"].update(width=512, height=512)  # within what a CPU is allowed
    (tmp_path / "workflow_api.json").write_text(json.dumps(graph), encoding="utf-8")
    out = CliRunner().invoke(cli, ["import", str(tmp_path / "workflow_api.json"), "-o", str(tmp_path / "p.yaml")])
    assert out.exit_code == 0, out.output
    assert "refiner: sd_xl_refiner_1.0\n" in (tmp_path / "p.yaml").read_text()
    checked = CliRunner().invoke(cli, ["validate", str(tmp_path / "p.yaml"), "--models", str(tmp_path / "ComfyUI")])
    assert checked.exit_code == 0, checked.output
