"""image.diffusion's engine for diffusers pipelines (Stable Diffusion 1.x, 2.x, XL, ...;
the embedded default is a small Stable Diffusion): its rules, its loading, and the call
into diffusers.

Any text-to-image pipeline `AutoPipelineForText2Image` knows loads, and inpainting
checkpoints (a 9-channel UNet) through `AutoPipelineForInpainting`. Image-to-image and
inpainting on an ordinary checkpoint run diffusers' own pipelines built from the loaded
components (`from_pipe`: no second load). LoRA files (diffusion_lora), weighted prompts
through compel and `clip_skip` (diffusion_prompts; SD 1.x/2.x and SDXL), and SDXL's refiner
pass (diffusion_refiner) apply here. SDXL pipelines are built without diffusers' invisible
watermark, whether or not its package is installed (watermark_off), and each SDXL item's
manifest notes say so (watermark: none). ControlNets (diffusion_control) run through
diffusers' ControlNet pipeline of each mode, made by `from_pipe` over the same components
(`control_pipeline`). A new mode is a new entry in `Mode`, its pipeline in
`mode_pipeline` and its inputs in `_call`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from studio import NonFiniteOutput, UserError, check_finite
from studio.weights import config
from studio_image.diffusion_control import (MAX_LOADED_CONTROLNETS, control_arguments, control_key, count_problem,
                                            load_controlnets)
from studio_image.diffusion_control_adapters import (adapter_arguments, adapter_key, adapter_options_problem,
                                                     load_adapters)
from studio_image.diffusion_embeddings import activate as load_embeddings
from studio_image.diffusion_engine import Engine, kept_where_asked, lora_scale_problem, scheduler, strength_of
from studio_image.diffusion_inputs import prepared_image, prepared_mask
from studio_image.diffusion_lora import activate
from studio_image.diffusion_models import PipelineFacts
from studio_image.diffusion_prompts import prompt_arguments
from studio_image.diffusion_refiner import load_refiner, prepare_refiner, record_refiner, refined, use_problem

TEXT_GUIDANCE = 7.5  # diffusers' Stable Diffusion default
MAX_CPU_PIPELINE_PIXEL_STEPS = 512 * 512 * 50
# a text-to-image pipeline's budget on a CPU: lower than a UNet2DModel's (a text encoder, a VAE)
CPU_BUDGET = {"limit": MAX_CPU_PIPELINE_PIXEL_STEPS,
              "example": "512 x 512 at 50 steps, about a native Stable Diffusion 1.5 image"}
Mode = Literal["text2img", "img2img", "inpaint"]


@dataclass(frozen=True)
class PipelineModel:
    """A loaded diffusers pipeline, and what the run keeps beside it between batches."""

    pipeline: Any
    scheduler_config: dict[str, Any]
    modes: dict[str, Any] = field(default_factory=dict)  # mode -> the pipeline from_pipe made for it
    lora_state: dict[str, Any] = field(default_factory=dict)  # diffusion_lora.activate's: what is fused
    embedding_state: dict[str, Any] = field(default_factory=dict)  # diffusion_embeddings.activate's: what is loaded
    refiner: Any = None  # the SDXL refiner pipeline on the same VAE and second text encoder (diffusion_refiner)
    refiner_scheduler: dict[str, Any] = field(default_factory=dict)  # its own scheduler's config
    control_state: dict[str, Any] = field(default_factory=dict)  # ControlNet folder -> its loaded model
    adapter_state: dict[str, Any] = field(default_factory=dict)  # T2I-Adapter folder -> its loaded model


@dataclass(frozen=True)
class PipelineEngine(Engine):
    facts: PipelineFacts
    model: PipelineModel | None = None  # the loaded pipeline, at run time

    cpu_budget = CPU_BUDGET

    @property
    def factor(self) -> int:
        return self.facts.factor

    @property
    def default_size(self) -> tuple[int, int] | None:
        return self.facts.size

    def class_label_problem(self, model: str, label: int | str | None) -> str | None:
        if label is not None:
            return f"model {model!r} is a text-to-image pipeline: use prompt, not class_label"
        return None

    def options_problem(self, params: Any) -> str | None:
        model = params.model
        if self.facts.refiner and params.image is None:
            return (f"model {model!r} is a Stable Diffusion XL refiner: it finishes an image another model began and "
                    "cannot start one from noise; use an SDXL base checkpoint as model, or give image "
                    "(image-to-image) to refine one")
        if self.facts.inpainting and (params.image is None or params.mask is None):
            return (f"model {model!r} is an inpainting checkpoint (its UNet takes 9 channels: latents, mask and "
                    "masked image); give image and mask, or use an ordinary checkpoint for text-to-image")
        problem = (lora_scale_problem(params) or use_problem(params, self.facts) or control_problem(params)
                   or adapter_options_problem(params))
        if problem:
            return problem
        return self.text_problem(params)

    def text_problem(self, params: Any) -> str | None:
        """Why clip_skip or prompt_weighting do not fit the model's text encoders."""
        xl = self.facts.sdxl
        asked = params.clip_skip is not None or params.prompt_weighting != "off"
        if asked and not (self.facts.one_text_encoder or xl):
            return (f"model {params.model!r} has neither one CLIP text encoder (Stable Diffusion 1.x/2.x) nor SDXL's "
                    "two; clip_skip and prompt_weighting apply to those")
        # SDXL conditions on the layer before the last already: clip_skip n reads hidden state -(n + 2)
        layers = self.facts.text_layers
        most = layers and layers - (2 if xl else 1)
        if params.clip_skip is not None and most is not None and params.clip_skip > most:
            whose = "the text encoders' (the fewer of SDXL's two, whose last layer is skipped already)" if xl \
                else "the text encoder's"
            fix = f"give at most {most}" if most > 0 else "drop clip_skip"
            return f"clip_skip {params.clip_skip} leaves none of {whose} {layers} layers; {fix}"
        if not xl and params.prompt_weighting != "off" and params.clip_skip is not None and params.clip_skip > 1:
            return ("with prompt_weighting, clip_skip can be 1 at most (compel reads the last or the one-before-last "
                    "layer)")
        return None

    # -- loading ----------------------------------------------------------------------

    def load(self, root: Path | None, model: str, options: dict[str, Any]) -> PipelineEngine:
        """The pipeline of a folder, a hub id or a single-file checkpoint, and its SDXL
        refiner when one is named. `options`: the from_pretrained keywords, and
        image.diffusion's config, vae, prediction and refiner."""
        refiner = options.pop("refiner", None)
        engine = self.loaded_from(self.pipeline_of(root, model, options))
        if refiner is None:
            return engine
        made = load_refiner(Path(refiner), engine.loaded.pipeline)
        loaded = replace(engine.loaded, refiner=made, refiner_scheduler=dict(made.scheduler.config))
        return replace(engine, model=loaded)

    def pipeline_of(self, root: Path | None, model: str, options: dict[str, Any]) -> Any:
        import diffusers

        config_dir, vae, prediction = (options.pop(name, None) for name in ("config", "vae", "prediction"))
        if root is not None and root.is_file():
            from studio_image.diffusion_single_file import load_single_file

            return load_single_file(root, config_dir and Path(config_dir), vae and Path(vae), prediction or "default",
                                    self.facts.inpainting)
        if vae is not None:
            from studio_image.diffusion_single_file import load_vae

            options["vae"] = load_vae(Path(vae), Path(config_dir or root or ".") / "vae")
        folder = root is not None and root.is_dir()
        index = config(root, "model_index.json") if folder else {}
        name = index.get("_class_name")
        if isinstance(name, str) and not hasattr(diffusers, name):
            raise UserError(f"model {model!r} names the pipeline class {name!r}, which diffusers "
                            f"{diffusers.__version__} does not have; Studio runs diffusers' own pipelines only")
        from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

        # a 9-channel UNet only inpaints: its own pipeline class, not a text-to-image one
        unet = config(root / "unet") if folder else {}
        auto = AutoPipelineForInpainting if unet.get("in_channels") == 9 else AutoPipelineForText2Image
        if isinstance(name, str):
            options.update(watermark_off(getattr(diffusers, name)))
        return auto.from_pretrained(str(root) if root is not None else model, **options)

    def loaded_from(self, pipe: Any) -> PipelineEngine:
        pipe.set_progress_bar_config(disable=True)
        expose_final_layer_norm(pipe)
        if getattr(pipe, "watermark", None) is not None:  # a hub id's pipeline, built before its class was known
            pipe.watermark = None
        return replace(self, model=PipelineModel(pipe, dict(pipe.scheduler.config)))

    def prepared(self, ctx) -> PipelineEngine:
        """Each of the pipeline's models on the device (its VAE guarded in fp16)."""
        from studio_diffusers.prepare import prepare_pipeline

        loaded = self.loaded
        if loaded.refiner is not None:
            prepare_refiner(loaded.refiner, loaded.pipeline, ctx)
        return replace(self, model=replace(loaded, pipeline=prepare_pipeline(loaded.pipeline, ctx)))

    @property
    def loaded(self) -> PipelineModel:
        if self.model is None:
            raise RuntimeError("PipelineEngine.run needs a loaded model (PipelineEngine.load)")
        return self.model

    # -- the run ----------------------------------------------------------------------

    def run(self, batch: list, ctxs: list) -> list:
        """The images of a batch of items that differ only in seed, prompt, init image or mask."""
        first = batch[0]
        for p in batch:
            problem = self.run_problem(p, ctxs[0].device)
            if problem:
                raise UserError(problem)
        size = self.size(first)
        mode: Mode = "inpaint" if first.mask is not None else "img2img" if first.image is not None else "text2img"
        pipe = (self.control_pipeline(mode, first, ctxs) if first.controlnets
                else self.adapter_pipeline(first, ctxs) if first.adapters else self.mode_pipeline(mode))
        pipe.scheduler = scheduler(self.loaded.scheduler_config, first)
        activate(self.loaded.pipeline, first.loras, first.lora_scale, self.loaded.lora_state,
                 on_load=lambda lora: ctxs[0].record(lora_loaded=lora.sha256))
        load_embeddings(self.loaded.pipeline, first.embeddings, self.loaded.embedding_state)
        call, images, masks = _call(pipe, mode, batch, ctxs, size)
        if first.controlnets or first.adapters:
            call.update(control_call(mode, first, size, ctxs))
        if "callback_on_step_end" not in inspect.signature(pipe.__call__).parameters:
            call = legacy_callback(pipe, call)  # the T2I-Adapter pipelines: diffusers' older callback
        if hasattr(pipe, "watermark"):  # an SDXL pipeline: Studio's decision, in the manifest
            for ctx in ctxs:
                ctx.record(watermark="none")
        try:
            result = self.sampled(pipe, call, batch, ctxs)
            check_finite(result.images, f"image.diffusion image ({first.model}, VAE {pipe.vae.dtype})")
        except NonFiniteOutput:
            blame_loras(first, pipe)
            raise
        return kept_where_asked(pipe.numpy_to_pil(result.images), batch, images, masks)

    def sampled(self, pipe: Any, call: dict[str, Any], batch: list, ctxs: list) -> Any:
        """The diffusers call; with a refiner, the base stops at refiner_switch and the
        refiner denoises the rest from its latents (diffusion_refiner)."""
        refiner = self.loaded.refiner
        if refiner is None:
            return pipe(**call)
        record_refiner(ctxs, batch[0].refiner)
        latents = pipe(**{**call, "denoising_end": batch[0].refiner_switch, "output_type": "latent"}).images
        return refined(refiner, scheduler(self.loaded.refiner_scheduler, batch[0]), latents, call, batch)

    def control_pipeline(self, mode: Mode, first: Any, ctxs: list):
        """diffusers' ControlNet pipeline of `mode` over the loaded components (from_pipe:
        nothing loads twice), with these ControlNets, each loaded once per model."""
        loaded = self.loaded
        wanted = [control_key(c) for c in first.controlnets]
        if len(loaded.control_state.keys() | set(wanted)) > MAX_LOADED_CONTROLNETS:  # a long sweep: bounded memory
            loaded.control_state.clear()
            for key in [key for key in loaded.modes if isinstance(key, tuple)]:
                del loaded.modes[key]
        nets = load_controlnets(first.controlnets, loaded.control_state, loaded.pipeline.unet,
                                on_load=lambda entry: ctxs[0].record(controlnet_loaded=entry.model))
        key = (mode, tuple(wanted))
        if key not in loaded.modes:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

            auto = {"text2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
                    "inpaint": AutoPipelineForInpainting}[mode]
            made = auto.from_pipe(loaded.pipeline, controlnet=nets, **watermark_off(type(loaded.pipeline)))
            made.set_progress_bar_config(disable=True)
            loaded.modes[key] = made
        return loaded.modes[key]

    def adapter_pipeline(self, first: Any, ctxs: list):
        """diffusers' T2I-Adapter pipeline (SD or SDXL) over the loaded components, with
        these adapters, each loaded once per model."""
        loaded = self.loaded
        adapter = load_adapters(first.adapters, loaded.adapter_state, loaded.pipeline.unet,
                                on_load=lambda entry: ctxs[0].record(adapter_loaded=entry.model))
        key = ("adapters", tuple(adapter_key(a) for a in first.adapters))
        if key not in loaded.modes:
            from diffusers import StableDiffusionAdapterPipeline, StableDiffusionXLAdapterPipeline

            if sum(isinstance(k, tuple) and k[0] == "adapters" for k in loaded.modes) >= MAX_LOADED_CONTROLNETS:
                for old in [k for k in loaded.modes if isinstance(k, tuple) and k[0] == "adapters"]:
                    del loaded.modes[old]
            cls = StableDiffusionXLAdapterPipeline if self.facts.sdxl else StableDiffusionAdapterPipeline
            made = cls.from_pipe(loaded.pipeline, adapter=adapter, **watermark_off(cls))
            made.set_progress_bar_config(disable=True)
            loaded.modes[key] = made
        return loaded.modes[key]

    def mode_pipeline(self, mode: Mode):
        """The loaded pipeline, or diffusers' image-to-image / inpainting pipeline over
        the same components (from_pipe shares the modules: nothing loads twice)."""
        base, modes = self.loaded.pipeline, self.loaded.modes
        if mode == "text2img" or (mode == "inpaint" and base.unet.config.in_channels == 9):
            return base
        if mode not in modes:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForInpainting if mode == "inpaint" else AutoPipelineForImage2Image
            derived = auto.from_pipe(base, **watermark_off(type(base)))
            derived.set_progress_bar_config(disable=True)
            modes[mode] = derived
        return modes[mode]


def control_problem(params: Any) -> str | None:
    """Why controlnets cannot run with these options."""
    if not params.controlnets and params.control_images:
        return "control_images are the images of controlnets, and this item has none: give controlnets"
    if params.controlnets and params.refiner is not None:
        return ("controlnets steer the model's pass and the refiner has none: drop refiner, or run the refiner as "
                "an image-to-image step after this one")
    return count_problem(params.controlnets, params.control_images)


def legacy_callback(pipe: Any, call: dict[str, Any]) -> dict[str, Any]:
    """The call with its step callback in the form a pipeline without
    callback_on_step_end takes (callback(step, timestep, latents) every step)."""
    call = dict(call)
    on_step = call.pop("callback_on_step_end")
    call.update(callback=lambda step, timestep, latents: on_step(pipe, step, timestep, {"latents": latents}),
                callback_steps=1)
    return call


def control_call(mode: Mode, first: Any, size: tuple[int, int], ctxs: list) -> dict[str, Any]:
    """The ControlNet or T2I-Adapter keywords, the control images as the user gave them
    (transparency drawn over white): diffusers' pipelines size them to the output. The
    text-to-image ControlNet pipeline, and the adapter pipelines, take them as `image`."""
    given = first.control_images or first.adapter_images
    images = [prepared_image(image, None) for image in given]
    for ctx in ctxs:
        if first.controlnets:
            ctx.record(control_images=[image.sha256 for image in given],
                       controlnets=[c.model for c in first.controlnets])
        else:
            ctx.record(adapter_images=[image.sha256 for image in given], adapters=[a.model for a in first.adapters])
    # the output's size for the control images too: else diffusers sizes the output by them
    arguments = control_arguments([first], images) if first.controlnets else adapter_arguments(first, images)
    extra = {**arguments, "width": size[0], "height": size[1]}
    if mode == "text2img" and first.controlnets:
        extra["image"] = extra.pop("control_image")
    return extra


def _call(pipe: Any, mode: Mode, batch: list, ctxs: list, size: tuple[int, int]):
    """The keyword arguments of the diffusers call for a batch, and the prepared init
    images and masks (None in the modes without them)."""
    first = batch[0]

    def on_step(pipeline, step, timestep, kwargs):
        total = getattr(pipeline, "_num_timesteps", None) or first.steps
        for c in ctxs:
            c.progress(step + 1, total)
        if step + 1 == total and "latents" in kwargs:  # the NaN guard, before the VAE clamps NaN away
            check_finite(kwargs["latents"], f"image.diffusion latents ({first.model}, {pipe.dtype})")
        return kwargs

    call: dict[str, Any] = {
        "num_inference_steps": first.steps,
        "guidance_scale": TEXT_GUIDANCE if first.guidance_scale is None else first.guidance_scale,
        "generator": [c.torch_generator() for c in ctxs], "callback_on_step_end": on_step, "output_type": "np"}
    call.update(prompt_arguments(pipe, batch))
    images = masks = None
    if mode == "text2img":
        call.update(width=first.width, height=first.height)
    else:
        images = [prepared_image(p.image, size) for p in batch]
        call.update(image=images, strength=strength_of(first))
    if mode == "inpaint":
        masks = [prepared_mask(p.mask, size, p.mask_blur) for p in batch]
        call.update(mask_image=masks, width=size[0], height=size[1])
    return call, images, masks


def watermark_off(pipeline_class: Any) -> dict[str, Any]:
    """add_watermarker=False for a pipeline class that takes it (SDXL's): diffusers'
    default adds an invisible watermark only when the invisible-watermark package happens
    to be installed. Studio decides instead: none (marking outputs is Studio's own job)."""
    init = getattr(pipeline_class, "__init__", None)
    try:
        takes = init is not None and "add_watermarker" in inspect.signature(init).parameters
    except (TypeError, ValueError):
        takes = False
    return {"add_watermarker": False} if takes else {}


def expose_final_layer_norm(pipe: Any) -> None:
    """diffusers' clip_skip and compel's penultimate-layer embeddings reach the CLIP text
    encoder's last norm as `text_encoder.text_model.final_layer_norm`; transformers 5
    flattened CLIPTextModel, so that norm is `text_encoder.final_layer_norm` there. A
    plain attribute (not a submodule: nothing is registered twice) gives both the path
    they read."""
    from types import SimpleNamespace

    encoder = getattr(pipe, "text_encoder", None)
    if encoder is not None and not hasattr(encoder, "text_model") and hasattr(encoder, "final_layer_norm"):
        object.__setattr__(encoder, "text_model", SimpleNamespace(final_layer_norm=encoder.final_layer_norm))


def blame_loras(params: Any, pipe: Any) -> None:
    """NaN or Inf out of a full-precision run with LoRAs is the LoRAs' doing (their
    values are finite, checked when loaded, but too large for this model at these
    scales): a UserError naming them, instead of the advice to run in fp32."""
    import torch

    if not params.loras or pipe.unet.dtype != torch.float32:
        return
    files = ", ".join(f"{lora.path!r} at scale {lora.scale * params.lora_scale:g}" for lora in params.loras)
    raise UserError(f"image.diffusion made NaN or Inf values in fp32 with loras {files}: their weights are too large "
                    "for this model at these scales. Lower scale or lora_scale, or use LoRA files trained on this "
                    "model") from None
