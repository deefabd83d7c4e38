"""image.diffusion: diffusers models, from the embedded default to Stable Diffusion.

Two kinds of checkpoint load through the same `model:` parameter:
- a UNet2DModel with a scheduler (a DDPM/DDIM pipeline directory, unconditional or
  class-conditional; the embedded default is one), sampled by the loop below;
- any text-to-image pipeline `AutoPipelineForText2Image` knows (Stable Diffusion 1.x,
  2.x, XL, ...), called as diffusers would be.
Noise comes from `torch.Generator("cpu").manual_seed(seed)` per item, as in a diffusers
script with `generator=`, so the same seed gives the same image in both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from studio import Generator, Params, media
from studio.errors import UserError
from studio.generator import resolve_weights
from studio.runtime import check_finite

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "diffusion"

# name -> diffusers scheduler class; swapped in with from_config(), as diffusers documents
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
CLASS_GUIDANCE = 2.0  # what the embedded model was measured with
TEXT_GUIDANCE = 7.5  # diffusers' Stable Diffusion default
SchedulerName = Literal["default", "ddim", "ddpm", "euler", "euler-a", "dpm++", "heun", "pndm", "unipc"]


def resolve_model(model: str) -> str:
    return resolve_weights(model, DEFAULT_WEIGHTS)


def is_unet_checkpoint(path: str) -> bool:
    index = Path(path) / "model_index.json"
    if index.is_file():
        unet = json.loads(index.read_text()).get("unet", [None, None])
        return unet[1] == "UNet2DModel"
    return (Path(path) / "unet" / "config.json").is_file() and not (Path(path) / "text_encoder").exists()


class ImageDiffusion(Generator):
    name = "image.diffusion"
    description = ("Diffusion sampling with diffusers: the embedded class-conditional digit model, "
                   "a UNet2DModel directory, or any text-to-image pipeline (Stable Diffusion ...).")
    outputs = {"image": media.IMAGE}
    precisions = ("bf16", "fp16", "fp32")
    default_weights = DEFAULT_WEIGHTS
    batchable = True
    max_batch_size = 16

    class Params(Params):
        model: str = Field("default", max_length=500,
                           description="'default' (embedded), a local diffusers directory, or a hub id.")
        prompt: str | None = Field(None, max_length=2000, description="Text prompt (text-to-image models).")
        negative_prompt: str | None = Field(None, max_length=2000,
                                            description="What to steer away from (text-to-image models).")
        class_label: int | str | None = Field(None, description=(
            "Class to draw (class-conditional models): an index or a class name; "
            "default: a class chosen by the seed."), json_schema_extra={"maxLength": 100})
        steps: int = Field(25, ge=1, le=1000, description="Denoising steps.")
        guidance_scale: float | None = Field(None, ge=0.0, le=50.0, description=(
            "Classifier-free guidance; 1 or less turns it off. Default: 7.5 for text-to-image "
            "models, 2 for class-conditional ones."))
        width: int | None = Field(None, ge=8, le=4096, description="Width in pixels; default: the model's size.")
        height: int | None = Field(None, ge=8, le=4096, description="Height in pixels; default: the model's size.")
        scheduler: SchedulerName = Field("default", description="Sampler; 'default' keeps the checkpoint's.")

    def load(self, params: Params, ctx) -> Any:
        import diffusers
        import transformers

        # Studio shows its own progress; diffusers' advice about `accelerate` and dtype
        # casts is noise for a user of a pipeline
        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        path = resolve_model(params.model)
        try:
            if is_unet_checkpoint(path):
                from diffusers import UNet2DModel

                unet = UNet2DModel.from_pretrained(path, subfolder="unet")
                with open(Path(path) / "scheduler" / "scheduler_config.json") as f:
                    scheduler_config = json.load(f)
                info_path = Path(path) / "studio.json"
                info = json.loads(info_path.read_text()) if info_path.is_file() else {}
                return {"unet": unet, "scheduler_config": scheduler_config,
                        "classes": info.get("classes") or [], "null_class": info.get("null_class")}
            from diffusers import AutoPipelineForText2Image

            pipe = AutoPipelineForText2Image.from_pretrained(path)
            pipe.set_progress_bar_config(disable=True)
            return {"pipeline": pipe, "scheduler_config": dict(pipe.scheduler.config)}
        except (OSError, ValueError) as exc:
            raise UserError(f"model {params.model!r} could not be loaded: {exc}. Give 'default', a local "
                            "diffusers directory, or a hub id that is in your Hugging Face cache") from exc

    def generate(self, params: Params, ctx) -> dict:
        return self.generate_batch([params], [ctx])[0]

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        out: list[dict | None] = [None] * len(params)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):  # items differing only in seed, prompt or class share a batch
            key = (p.model, p.steps, p.guidance_scale, p.width, p.height, p.scheduler, p.negative_prompt)
            groups.setdefault(key, []).append(i)
        for indexes in groups.values():
            batch = [params[i] for i in indexes]
            ctx = ctxs[indexes[0]]
            model = ctx.model(self, batch[0])
            run = self._pipeline if "pipeline" in model else self._unet_loop
            for i, image in zip(indexes, run(model, batch, [ctxs[i] for i in indexes])):
                out[i] = {"image": image}
        return out

    # -- samplers -----------------------------------------------------------------

    @staticmethod
    def _scheduler(model: dict, name: str):
        import diffusers

        config = model["scheduler_config"]
        cls_name = config["_class_name"] if name == "default" else SCHEDULERS[name]
        return getattr(diffusers, cls_name).from_config(config)

    def _unet_loop(self, model: dict, batch: list[Params], ctxs: list) -> list:
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        unet, first = model["unet"], batch[0]
        for p in batch:
            if p.prompt or p.negative_prompt:
                raise UserError(self._no_prompt_message(model, p))
        size = unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        width, height = first.width or size, first.height or size
        factor = 2 ** (len(unet.config.block_out_channels) - 1)
        if width % factor or height % factor:
            raise UserError(f"`height` and `width` have to be divisible by {factor} for this model but are "
                            f"{height} and {width}")
        labels = self._class_labels(model, batch, ctxs)
        device, dtype = unet.device, unet.dtype
        scheduler = self._scheduler(model, first.scheduler)
        scheduler.set_timesteps(first.steps, device=device)
        generators = [c.torch_generator() for c in ctxs]
        shape = (len(batch), unet.config.in_channels, height, width)
        # the sample and the scheduler's arithmetic stay fp32; only the UNet runs in bf16/fp16
        sample = randn_tensor(shape, generator=generators, device=device, dtype=torch.float32)
        sample = sample * scheduler.init_noise_sigma
        guidance = CLASS_GUIDANCE if first.guidance_scale is None else first.guidance_scale
        guided = labels is not None and guidance > 1 and model["null_class"] is not None
        null = torch.full_like(labels, model["null_class"]) if guided else None
        step_kwargs = {"generator": generators} if "generator" in _step_parameters(scheduler) else {}
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.scale_model_input(sample, t).to(dtype)
            with ctxs[0].autocast():
                if guided:
                    both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
                    cond, uncond = both.chunk(2)
                    eps = uncond + guidance * (cond - uncond)
                else:
                    eps = unet(x, t, class_labels=labels).sample
            sample = scheduler.step(eps.float(), t, sample, **step_kwargs).prev_sample
            for c in ctxs:
                c.progress(i + 1, len(scheduler.timesteps))
        check_finite(sample, f"image.diffusion sample ({first.model}, {unet.dtype})")
        return _to_pil(sample)

    def _class_labels(self, model: dict, batch: list[Params], ctxs: list):
        import torch

        classes = model["classes"]
        if not classes:
            if any(p.class_label is not None for p in batch):
                raise UserError(f"model {batch[0].model!r} is unconditional: it takes no class_label")
            return None
        labels = []
        for p, c in zip(batch, ctxs):
            if p.class_label is None:
                labels.append(c.seed % len(classes))
            elif str(p.class_label) in classes:
                labels.append(classes.index(str(p.class_label)))
            elif isinstance(p.class_label, int) and 0 <= p.class_label < len(classes):
                labels.append(p.class_label)
            else:
                raise UserError(f"class_label {p.class_label!r} is not a class of model {p.model!r}; "
                                f"classes: {', '.join(classes)}")
        return torch.tensor(labels, device=model["unet"].device)

    def _no_prompt_message(self, model: dict, p: Params) -> str:
        kind = (f"a class-conditional (class_label: {', '.join(model['classes'])})" if model["classes"]
                else "an unconditional")
        return (f"model {p.model!r} is {kind} UNet; it takes no prompt or negative_prompt. "
                "Remove them, or use a text-to-image model (a Stable Diffusion directory or hub id)")

    def _pipeline(self, model: dict, batch: list[Params], ctxs: list) -> list:
        pipe, first = model["pipeline"], batch[0]
        if any(p.class_label is not None for p in batch):
            raise UserError(f"model {first.model!r} is a text-to-image pipeline: use prompt, not class_label")
        if any(not p.prompt for p in batch):
            raise UserError(f"model {first.model!r} is a text-to-image pipeline: give a prompt")
        pipe.scheduler = self._scheduler(model, first.scheduler)
        total = first.steps

        def on_step(pipeline, step, timestep, kwargs):
            for c in ctxs:
                c.progress(step + 1, total)
            if step + 1 == total and "latents" in kwargs:  # the NaN guard, before the VAE clamps NaN away
                check_finite(kwargs["latents"], f"image.diffusion latents ({first.model}, {pipe.dtype})")
            return kwargs

        result = pipe(
            prompt=[p.prompt for p in batch],
            negative_prompt=[first.negative_prompt] * len(batch) if first.negative_prompt else None,
            num_inference_steps=first.steps,
            guidance_scale=TEXT_GUIDANCE if first.guidance_scale is None else first.guidance_scale,
            width=first.width, height=first.height,
            generator=[c.torch_generator() for c in ctxs],
            callback_on_step_end=on_step, output_type="np",
        )
        check_finite(result.images, f"image.diffusion image ({first.model}, VAE {pipe.vae.dtype})")
        return pipe.numpy_to_pil(result.images)


def _step_parameters(scheduler) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def _to_pil(sample) -> list:
    """As diffusers' pipelines do: [-1, 1] -> [0, 1] -> uint8 (rounded)."""
    import numpy as np
    from PIL import Image

    images = (sample / 2 + 0.5).clamp(0, 1).float().cpu().permute(0, 2, 3, 1).numpy()
    images = (images * 255).round().astype(np.uint8)
    return [Image.fromarray(im[..., 0], mode="L") if im.shape[-1] == 1 else Image.fromarray(im) for im in images]
