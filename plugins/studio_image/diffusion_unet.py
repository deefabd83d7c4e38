"""image.diffusion's engine for UNet2DModel checkpoints (a DDPM/DDIM pipeline folder,
unconditional or class-conditional; the digit model in weights/digits is one): its
rules, its loading, and the sampling loop.

The loop is diffusers' own algorithm written out, since diffusers has no pipeline for
a class-conditional UNet2DModel: the scheduler's timesteps (from `strength` on for
image-to-image: SDEdit), noise from each item's CPU generator, classifier-free guidance
against studio.json's null class, and for inpainting the kept part, noised to the next
step's level by the scheduler's `add_noise`, blended back after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from studio import UserError, check_finite
from studio.weights import config, read_config
from studio_image.diffusion_engine import Engine, kept_where_asked, lora_scale_problem, scheduler, strength_of
from studio_image.diffusion_inputs import prepared_image, prepared_mask, strength_timesteps
from studio_image.diffusion_models import UnetFacts, class_index, classes_text
from studio_imagedata.images import to_pil

CLASS_GUIDANCE = 2.0  # what the digit model was measured with
FALLBACK_SIZE = (64, 64)  # a UNet2DModel whose config has no sample_size
# A UNet2DModel sampled far past its trained size makes garbage, and its attention
# grows faster than the pixels: each side at most this many times the trained size.
MAX_UNET_SCALE = 8


@dataclass(frozen=True)
class UnetModel:
    """A loaded UNet2DModel checkpoint."""

    unet: Any
    scheduler_config: dict[str, Any]
    null_class: Any  # studio.json's class index of "no class", for guidance (None: no guidance)


@dataclass(frozen=True)
class UnetEngine(Engine):
    facts: UnetFacts
    model: UnetModel | None = None  # the loaded checkpoint, at run time

    @property
    def factor(self) -> int:
        return self.facts.factor

    @property
    def default_size(self) -> tuple[int, int]:
        return self.facts.size or FALLBACK_SIZE

    def prompt_problem(self, model: str, text: str | None) -> str | None:
        if not text:
            return None
        classes = self.facts.classes
        kind = f"a class-conditional (class_label: {', '.join(classes)})" if classes else "an unconditional"
        return (f"model {model!r} is {kind} UNet; it takes no prompt or negative_prompt. "
                "Remove them, or use a text-to-image model (a Stable Diffusion directory or hub id)")

    def class_label_problem(self, model: str, label: int | str | None) -> str | None:
        classes = self.facts.classes
        if label is None:
            return None
        if not classes:
            return f"model {model!r} is unconditional: it takes no class_label"
        if class_index(label, classes, self.facts.index) is None:
            return (f"class_label {str(label)[:100]!r} is not a class of model {model!r}; classes: "
                    f"{classes_text(classes)} (or their index, 0 to {len(classes) - 1})")
        return None

    def loras_problem(self, model: str) -> str | None:
        return f"model {model!r} is a UNet2DModel; loras apply to text-to-image pipelines (their UNet and text encoder)"

    def options_problem(self, params: Any) -> str | None:
        problem = lora_scale_problem(params)
        if problem:
            return problem
        for name, on in (("clip_skip", params.clip_skip is not None),
                         ("prompt_weighting", params.prompt_weighting != "off")):
            if on:
                return (f"model {params.model!r} is a UNet2DModel without a text encoder; {name} applies to "
                        "text-to-image pipelines")
        return None

    def scale_problem(self, width: int, height: int) -> str | None:
        trained = self.facts.size
        if not trained:
            return None
        limit = trained[0] * MAX_UNET_SCALE
        if width > limit or height > limit:
            return (f"{width} x {height} is far past the size this UNet was trained at ({trained[0]} x "
                    f"{trained[1]}); image.diffusion samples a UNet2DModel at most {MAX_UNET_SCALE}x its trained "
                    f"size, {limit} pixels a side (beyond that it draws noise, slowly)")
        return None

    # -- loading ----------------------------------------------------------------------

    def load(self, root: Path | None, model: str, options: dict[str, Any]) -> UnetEngine:
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(root, subfolder="unet", **options)
        scheduler_config = read_config(root / "scheduler" / "scheduler_config.json")
        if scheduler_config is None:
            raise UserError(f"model {str(root)!r} has a unet/ but no scheduler/scheduler_config.json; save the "
                            "whole pipeline (DDIMPipeline.save_pretrained) or copy its scheduler/ folder")
        null_class = config(root, "studio.json").get("null_class")
        return replace(self, model=UnetModel(unet, scheduler_config, null_class))

    def with_unet(self, unet: Any) -> UnetEngine:
        """This engine sampling another UNet of the same shape (an untrained one, to compare)."""
        return replace(self, model=replace(self.loaded, unet=unet))

    def prepared(self, ctx) -> UnetEngine:
        """The UNet on the step's device in its precision, as Generator.prepare moves any module."""
        unet = ctx.runtime.prepare(self.loaded.unet, ctx.precision, compile=ctx.compile)
        return replace(self, model=replace(self.loaded, unet=unet))

    @property
    def loaded(self) -> UnetModel:
        if self.model is None:
            raise RuntimeError("UnetEngine.run needs a loaded model (UnetEngine.load)")
        return self.model

    # -- the run ----------------------------------------------------------------------

    def run(self, batch: list, ctxs: list) -> list:
        """The images of a batch of items that differ only in seed, class, init image or mask."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        first, unet = batch[0], self.loaded.unet
        for p in batch:
            problem = self.run_problem(p, ctxs[0].device)
            if problem:
                raise UserError(problem)
        width, height = self.size(first)
        labels = self._class_labels(batch, ctxs)
        sampler = scheduler(self.loaded.scheduler_config, first)
        strength = strength_of(first)
        timesteps = _timesteps(sampler, first.steps, strength, unet.device)
        generators = [c.torch_generator() for c in ctxs]
        shape = (len(batch), unet.config.in_channels, height, width)
        # the sample and the scheduler's arithmetic stay fp32; only the UNet runs in bf16/fp16
        noise = randn_tensor(shape, generator=generators, device=unet.device, dtype=torch.float32)
        start = _Start.of(batch, (width, height), strength, unet)
        if start.init is None or (start.mask is not None and strength == 1.0):
            sample = noise * sampler.init_noise_sigma  # diffusers' inpainting: pure noise at full strength
        else:
            sample = sampler.add_noise(start.init, noise, timesteps[:1].repeat(len(batch)))
        sample = self._denoise(sample, labels, sampler, timesteps, noise, start, generators, first, ctxs)
        check_finite(sample, f"image.diffusion sample ({first.model}, {unet.dtype})")
        return kept_where_asked(to_pil(sample), batch, start.images, start.masks)

    def _denoise(self, sample, labels, sampler, timesteps, noise, start: _Start, generators, first, ctxs):
        """The sampling loop: guided by the null class when the model has one."""
        import torch

        unet, null_class = self.loaded.unet, self.loaded.null_class
        guidance = CLASS_GUIDANCE if first.guidance_scale is None else first.guidance_scale
        guided = labels is not None and guidance > 1 and null_class is not None
        null = torch.full_like(labels, null_class) if guided else None
        step_kwargs = {"generator": generators} if "generator" in _step_parameters(sampler) else {}
        for i, t in enumerate(timesteps):
            x = sampler.scale_model_input(sample, t).to(unet.dtype)
            with ctxs[0].autocast():
                if guided:
                    both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
                    cond, uncond = both.chunk(2)
                    eps = uncond + guidance * (cond - uncond)
                else:
                    eps = unet(x, t, class_labels=labels).sample
            sample = sampler.step(eps.float(), t, sample, **step_kwargs).prev_sample
            if start.mask is not None and i + 1 < len(timesteps):
                # the kept part: the image noised to the next step's level, as diffusers' inpainting does
                kept = sampler.add_noise(start.init, noise, timesteps[i + 1:i + 2].repeat(len(sample)))
                sample = (1 - start.mask) * kept + start.mask * sample
            for c in ctxs:
                c.progress(i + 1, len(timesteps))
        return sample

    def _class_labels(self, batch: list, ctxs: list):
        """Each item's class index (its class_label, else one chosen by its seed), or None
        for an unconditional model."""
        import torch

        classes = self.facts.classes
        if not classes:
            return None
        labels = [c.seed % len(classes) if p.class_label is None else class_index(p.class_label, classes,
                                                                                   self.facts.index)
                  for p, c in zip(batch, ctxs)]
        return torch.tensor(labels, device=self.loaded.unet.device)


@dataclass(frozen=True)
class _Start:
    """What image-to-image and inpainting start from: the init images as a [-1, 1] tensor,
    the masks binarized (1 = repaint), and both as prepared images for the overlay."""

    init: Any = None
    mask: Any = None
    images: list | None = None
    masks: list | None = None

    @classmethod
    def of(cls, batch: list, size: tuple[int, int], strength: float | None, unet: Any) -> _Start:
        init = mask = images = masks = None
        if strength is not None:
            channels = "L" if unet.config.in_channels == 1 else "RGB"
            images = [prepared_image(p.image, size, channels) for p in batch]
            init = _from_pil(images, unet.device)
        if batch[0].mask is not None:
            masks = [prepared_mask(p.mask, size, p.mask_blur) for p in batch]
            # binarized at 0.5, as diffusers' mask processor does
            mask = (_from_pil(masks, unet.device) > 0).float()
        return cls(init, mask, images, masks)


def _timesteps(sampler, steps: int, strength: float | None, device):
    """All of the scheduler's timesteps, or image-to-image's last int(steps x strength)."""
    if strength is None:
        sampler.set_timesteps(steps, device=device)
        return sampler.timesteps
    return strength_timesteps(sampler, steps, strength, device)


def _step_parameters(sampler) -> set[str]:
    import inspect

    return set(inspect.signature(sampler.step).parameters)


def _from_pil(images: list, device):
    """PIL images (L or RGB) -> a [-1, 1] float tensor, as diffusers' image processor does."""
    import numpy as np
    import torch

    arrays = [np.asarray(im, dtype=np.float32)[..., None] if im.mode == "L" else np.asarray(im, dtype=np.float32)
              for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device) / 127.5 - 1

