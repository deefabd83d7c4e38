"""image.diffusion: diffusers models, from the embedded default to Stable Diffusion.

Two kinds of checkpoint load through the same `model:` parameter:
- a UNet2DModel with a scheduler (a DDPM/DDIM pipeline directory, unconditional or
  class-conditional; the digit model in weights/digits is one), sampled by the loop below;
- any text-to-image pipeline `AutoPipelineForText2Image` knows (Stable Diffusion 1.x,
  2.x, XL, ...; the embedded default is a small Stable Diffusion), called as diffusers
  would be, and inpainting checkpoints (a 9-channel UNet) through
  `AutoPipelineForInpainting`.
Modes: text-to-image; image-to-image with `image` + `strength`; inpainting with `mask`
as well. A pipeline runs them through diffusers' own image-to-image and inpainting
pipelines built from the loaded components (`from_pipe`: no second load); the
UNet2DModel loop runs the same algorithm (SDEdit: the scheduler's timesteps from
`strength` on, the image noised by the scheduler's `add_noise`, the kept part blended
back after each step). LoRA files (diffusion_lora), weighted prompts through compel
(diffusion_prompts) and `clip_skip` apply to text-to-image pipelines.
Noise comes from `torch.Generator("cpu").manual_seed(seed)` per item, as in a diffusers
script with `generator=`, so the same seed gives the same image in both.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from studio import (Artifact, Generator, NonFiniteOutput, Params, UserError, batch_groups, check_finite, media,
                    media_input, model_input)
from studio.weights import components, config, input_path, loading, local_path, read_config, refuse, weights_problem
from studio.limits import cpu_budget_problem, on_cpu
from studio_image.diffusion_inputs import (init_problem, keep_unmasked, output_size, prepared_image, prepared_mask,
                                           strength_timesteps)
from studio_image.diffusion_lora import MAX_LORAS, Lora, activate, checked, fit_problem

MAX_CPU_PIPELINE_PIXEL_STEPS = 512 * 512 * 50

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "diffusion"
# the class-conditional digit model shipped beside the default, named by this path
DIGITS_WEIGHTS = Path(__file__).parent / "weights" / "digits"
# width x height: 2048 x 2048, or any shape of the same area. Beyond it a UNet's attention
# over the latent grows past what a GPU holds (diffusion models are trained far below).
MAX_PIXELS = 2048 * 2048
LOAD_FIX = ("Give 'default', a diffusers directory (model_index.json, or unet/ and scheduler/, with "
            ".safetensors weights), or a hub id in your Hugging Face cache")

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
    # the same samplers on Karras et al.'s (2022) noise levels, as A1111 and ComfyUI name them
    "dpm++-karras": "DPMSolverMultistepScheduler",
    "euler-karras": "EulerDiscreteScheduler",
    "heun-karras": "HeunDiscreteScheduler",
}
KARRAS = ("dpm++-karras", "euler-karras", "heun-karras")
CLASS_GUIDANCE = 2.0  # what the digit model was measured with
IMG2IMG_STRENGTH, INPAINT_STRENGTH = 0.8, 1.0  # diffusers' defaults
TEXT_GUIDANCE = 7.5  # diffusers' Stable Diffusion default
SchedulerName = Literal["default", "ddim", "ddpm", "euler", "euler-a", "dpm++", "heun", "pndm", "unipc",
                        "dpm++-karras", "euler-karras", "heun-karras"]


def is_unet_checkpoint(path: str | Path) -> bool:
    index = read_config(Path(path) / "model_index.json")
    if index is not None:
        unet = index.get("unet")
        return isinstance(unet, list) and len(unet) == 2 and unet[1] == "UNet2DModel"
    return (Path(path) / "unet" / "config.json").is_file() and not (Path(path) / "text_encoder").exists()


def component_folders(root: Path | None) -> tuple[str, ...]:
    """The top folder and a pipeline's component folders: where its weights are."""
    if root is None or not root.is_dir():
        return ("",)
    index = read_config(root / "model_index.json") or {}
    return tuple(dict.fromkeys(["", "unet", *(name for name, _ in components(index))]))


MAX_BLOCKS = 16  # entries of block_out_channels: real models have 3 to 5
MAX_SAMPLE_SIZE = 65536  # a UNet's sample_size, in pixels or latent cells
MAX_CLASSES_SHOWN = 20
# A UNet2DModel sampled far past its trained size makes garbage, and its attention
# grows faster than the pixels: each side at most this many times the trained size.
MAX_UNET_SCALE = 8


def model_facts(model: str) -> dict[str, Any] | None:
    """What the configs of `model` say, read without loading weights (None when there is
    nothing local to read): kind ("unet" or "pipeline"), classes (and "index", name ->
    index), default size, "trained" (a UNet2DModel's sample_size) and the factor width
    and height must be multiples of. Cached per version of the configs; a ValueError
    says which config value is out of range."""
    root = local_path(model, DEFAULT_WEIGHTS)
    if root is None or not root.is_dir():
        return None
    stamps = []
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "studio.json", "text_encoder"):
        try:
            st = os.stat(root / name)
            stamps.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return _model_facts(str(root), tuple(stamps))


@lru_cache(maxsize=64)
def _model_facts(path: str, stamps: tuple) -> dict[str, Any]:
    root = Path(path)
    if is_unet_checkpoint(root):
        unet = config(root / "unet")
        info = config(root, "studio.json")
        classes = info.get("classes") if isinstance(info.get("classes"), list) else []
        classes = [str(c)[:100] for c in classes[:1_000_000]]
        size = _size(unet.get("sample_size"), "unet/config.json")
        return {"kind": "unet", "classes": classes, "index": {c: i for i, c in reversed(list(enumerate(classes)))},
                "size": size, "trained": size, "inpainting": False, "one_text_encoder": False, "text_layers": None,
                "factor": 2 ** (_blocks(unet.get("block_out_channels"), "unet/config.json") or 1) // 2}
    blocks = _blocks(config(root / "vae").get("block_out_channels"), "vae/config.json")
    scale = 2 ** (blocks - 1) if blocks else 8
    unet = config(root / "unet")
    unet_size = _size(unet.get("sample_size"), "unet/config.json")
    index = read_config(root / "model_index.json") or {}
    layers = config(root / "text_encoder").get("num_hidden_layers")
    return {"kind": "pipeline", "classes": [], "index": {}, "trained": None,
            "size": unet_size and (unet_size[0] * scale, unet_size[1] * scale),
            # a dedicated inpainting checkpoint: latents, mask and masked image in
            "inpainting": unet.get("in_channels") == 9,
            # one CLIP text encoder (SD 1.x/2.x): what compel and clip_skip serve here
            "one_text_encoder": "text_encoder" in index and "text_encoder_2" not in index,
            "text_layers": layers if isinstance(layers, int) else None,
            # SD 1.x/2.x/XL: the latent is width/scale x height/scale; other pipelines say their own rules
            "factor": scale if (root / "unet").is_dir() else 1}


def _blocks(value: Any, where: str) -> int:
    """How many entries block_out_channels has (0 when it is not a list), at most MAX_BLOCKS."""
    if not isinstance(value, list):
        return 0
    if len(value) > MAX_BLOCKS:
        raise ValueError(f"{where}: config value block_out_channels is out of range ({len(value):,} entries; "
                         f"a diffusers model has at most {MAX_BLOCKS})")
    return len(value)


def _size(sample_size: Any, where: str = "unet config") -> tuple[int, int] | None:
    """A UNet config's sample_size as (width, height): square, its first entry when it
    is a list, as Studio has always sampled it."""
    side = sample_size[0] if isinstance(sample_size, (list, tuple)) and sample_size else sample_size
    if not (isinstance(side, int) and not isinstance(side, bool) and side > 0):
        return None
    if side > MAX_SAMPLE_SIZE:
        raise ValueError(f"{where}: config value sample_size is out of range ({clip_number(side)}; "
                         f"at most {MAX_SAMPLE_SIZE:,})")
    return (side, side)


def clip_number(value: int) -> str:
    """A number for a message: never hundreds of digits."""
    text = str(value)
    return text if len(text) <= 12 else f"a {len(text)}-digit number"


def classes_text(classes: list[str]) -> str:
    """The class list for a message: the first few and how many more."""
    shown = ", ".join(classes[:MAX_CLASSES_SHOWN])
    more = len(classes) - MAX_CLASSES_SHOWN
    return shown + (f" and {more:,} more" if more > 0 else "")


def class_index(label: int | str, classes: list[str], index: dict[str, int] | None = None) -> int | None:
    """A class_label as the model's index: a class name, or an index into the classes."""
    found = (index if index is not None else {c: i for i, c in reversed(list(enumerate(classes)))}).get(str(label))
    if found is not None:
        return found
    if isinstance(label, int) and 0 <= label < len(classes):
        return label
    return None


def unet_scale_problem(width: int, height: int, trained: tuple[int, int] | None) -> str | None:
    """Why width x height is too far past a UNet2DModel's trained sample_size, or None."""
    if not trained:
        return None
    limit = trained[0] * MAX_UNET_SCALE
    if width > limit or height > limit:
        return (f"{width} x {height} is far past the size this UNet was trained at ({trained[0]} x {trained[1]}); "
                f"image.diffusion samples a UNet2DModel at most {MAX_UNET_SCALE}x its trained size, "
                f"{limit} pixels a side (beyond that it draws noise, slowly)")
    return None


def _facts(info: ValidationInfo) -> dict[str, Any] | None:
    """The model facts for a field validator (None when `model` itself was refused)."""
    model = info.data.get("model")
    return model_facts(model) if isinstance(model, str) else None


class ImageDiffusion(Generator):
    name = "image.diffusion"
    description = ("Diffusion with diffusers: text-to-image, image-to-image, inpainting and LoRA on Stable Diffusion "
                   "pipelines (the embedded default draws emoji), and UNet2DModel checkpoints (the digit model).")
    outputs = {"image": media.IMAGE}
    precisions = ("bf16", "fp16", "fp32")
    default_weights = DEFAULT_WEIGHTS
    batchable = True
    max_batch_size = 16

    class Params(Params):
        model: str = model_input(
            "default", files=("model_index.json", "unet/config.json"), hub=True,
            description="'default' (embedded: a small text-to-image Stable Diffusion that draws 32x32 emoji "
                        "from their names), a local diffusers directory (safetensors weights), or a hub id in the "
                        "local Hugging Face cache.")
        prompt: str | None = Field(None, max_length=2000, description=(
            "Text prompt (text-to-image models); absent: the empty prompt, as diffusers, A1111 and ComfyUI sample "
            "(an unconditioned image; the embedded model was trained with caption dropout for it)."))
        negative_prompt: str | None = Field(None, max_length=2000,
                                            description="What to steer away from (text-to-image models).")
        class_label: int | str | None = Field(None, description=(
            "Class to draw (class-conditional models): an index or a class name; "
            "default: a class chosen by the seed."), json_schema_extra={"maxLength": 100})
        steps: int = Field(25, ge=1, le=1000, description="Denoising steps.")
        guidance_scale: float | None = Field(None, ge=0.0, le=50.0, description=(
            "Classifier-free guidance; 1 or less turns it off. Default: 7.5 for text-to-image "
            "models, 2 for class-conditional ones."))
        width: int | None = Field(None, ge=8, le=4096, description=(
            "Width in pixels; default: the model's size. width x height is at most 2048 x 2048 "
            "(4.2 megapixels); a UNet2DModel at most 8x its trained size a side; on a CPU width x height x "
            "steps at most 1024 x 1024 x 50 (512 x 512 x 50 for a text-to-image pipeline)."))
        height: int | None = Field(None, ge=8, le=4096, description="Height in pixels; default: the model's size.")
        scheduler: SchedulerName = Field("default", description=(
            "Sampler; 'default' keeps the checkpoint's. The -karras ones step through Karras et al.'s noise "
            "levels (diffusers' use_karras_sigmas), often better at few steps."))
        timestep_spacing: Literal["default", "linspace", "leading", "trailing"] = Field("default", description=(
            "Which of the trained timesteps the steps visit (diffusers' timestep_spacing): 'default' keeps "
            "the checkpoint's; 'trailing' starts from the last one, which helps at few steps."))
        image: Artifact | None = media_input("image/*", None, description=(
            "Image-to-image: the picture to start from (an upstream image or a file). The output has its size "
            "unless width and height are given; it is resized to them (Lanczos), transparency drawn over white."))
        strength: float | None = Field(None, gt=0.0, le=1.0, description=(
            "How much of the image is redrawn: near 0 keeps it, 1 starts from noise. Runs int(steps x strength) "
            "steps. Default: 0.8, or 1.0 with a mask (diffusers' defaults)."))
        mask: Artifact | None = media_input("image/*", None, description=(
            "Inpainting: white where the image is repainted, black where it is kept; greys, the image's size. "
            "Works with ordinary checkpoints (the kept part blended back each step) and inpainting ones "
            "(9-channel UNet)."))
        mask_blur: int = Field(0, ge=0, le=64, description=(
            "Soften the mask's edge by this many pixels (a Gaussian blur, diffusers' mask blur) so the repainted "
            "part blends in."))
        keep_unmasked: bool = Field(True, description=(
            "With a mask: put the image's own pixels back where the mask is black (diffusers' apply_overlay), "
            "as A1111 does; false gives diffusers' raw output, where the VAE shifts them slightly."))
        loras: list[Lora] = Field(default_factory=list, max_length=MAX_LORAS, description=(
            "LoRA files to apply, each {path, scale} (.safetensors: diffusers, peft or kohya layout; "
            "text-to-image pipelines). Checked against the model's layers before the run."))
        lora_scale: float = Field(1.0, ge=-10.0, le=10.0, description=(
            "Multiplies every LoRA's scale: the axis to sweep (the model and the files load once)."))
        clip_skip: int | None = Field(None, ge=1, le=48, description=(
            "Condition on the text encoder's layer this many before the last (diffusers' clip_skip; A1111's "
            "'clip skip 2' is 1 here). Text-to-image pipelines with a CLIP text encoder."))
        prompt_weighting: Literal["off", "a1111", "compel"] = Field("off", description=(
            "Weighted prompts through compel: 'a1111' reads (word:1.3), (word) = 1.1x, [word] = 1/1.1x; "
            "'compel' reads compel's own syntax (word+, (word)1.3, .blend()). Either way prompts longer than the "
            "text encoder's window are encoded in windows instead of cut."))

        @field_validator("model")
        @classmethod
        def weights_are_plain(cls, value: str) -> str:
            root = local_path(value, DEFAULT_WEIGHTS)
            problem = weights_problem(value, root, component_folders(root))
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("prompt", "negative_prompt")
        @classmethod
        def prompt_fits_the_model(cls, value: str | None, info: ValidationInfo) -> str | None:
            facts = _facts(info)
            if value and facts and facts["kind"] == "unet":
                raise ValueError(_no_prompt_message(info.data["model"], facts["classes"]))
            return value

        @field_validator("class_label")
        @classmethod
        def class_label_is_a_class(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
            facts = _facts(info)
            if value is None or facts is None:
                return value
            model = info.data["model"]
            if facts["kind"] == "pipeline":
                raise ValueError(f"model {model!r} is a text-to-image pipeline: use prompt, not class_label")
            if not facts["classes"]:
                raise ValueError(f"model {model!r} is unconditional: it takes no class_label")
            if class_index(value, facts["classes"], facts["index"]) is None:
                raise ValueError(f"class_label {str(value)[:100]!r} is not a class of model {model!r}; "
                                 f"classes: {classes_text(facts['classes'])} (or their index, 0 to "
                                 f"{len(facts['classes']) - 1})")
            return value

        @field_validator("width", "height")
        @classmethod
        def size_fits_the_model(cls, value: int | None, info: ValidationInfo) -> int | None:
            facts = _facts(info)
            if value is not None and facts and value % facts["factor"]:
                raise ValueError(f"{info.field_name} {value} is not a multiple of {facts['factor']}, as this model "
                                 f"needs; try {max(facts['factor'], value // facts['factor'] * facts['factor'])}")
            return value

        @field_validator("loras")
        @classmethod
        def loras_fit_the_model(cls, value: list[Lora], info: ValidationInfo) -> list[Lora]:
            facts = _facts(info)
            if not value or facts is None:
                return value
            model = info.data["model"]
            if facts["kind"] == "unet":
                raise ValueError(f"model {model!r} is a UNet2DModel; loras apply to text-to-image pipelines "
                                 "(their UNet and text encoder)")
            loras = [checked(lora, input_path(lora.path, info)) for lora in value]
            seen: dict[str, str] = {}
            for lora in loras:
                if lora.sha256 in seen:
                    raise ValueError(f"lora {lora.path!r} is listed twice (also as {seen[lora.sha256]!r}); give it "
                                     "once, with the scales added")
                seen[lora.sha256] = lora.path
                root = local_path(model, DEFAULT_WEIGHTS)
                problem = fit_problem(Path(lora.path), root) if root is not None and root.is_dir() else None
                if problem:
                    raise ValueError(f"lora {lora.path!r} {problem}")
            return loras

        @model_validator(mode="after")
        def fits(self, info: ValidationInfo):
            facts = model_facts(self.model)
            factor = (facts or {"factor": 1})["factor"]
            problem = _mode_problem(self, facts) or init_problem(
                self.image, self.mask, self.strength, self.steps, self.width, self.height, factor)
            if problem:
                raise ValueError(problem)
            width, height = image_size(self, facts)
            if width * height > MAX_PIXELS:
                raise ValueError(f"{width} x {height} is {width * height / 1e6:.1f} megapixels; image.diffusion makes "
                                 f"at most {MAX_PIXELS / 1e6:.1f} (2048 x 2048, or the same area in another shape)")
            problem = cpu_budget_problem(width, height, self.steps, **_budget(facts)) if on_cpu(info) else None
            problem = problem or unet_scale_problem(width, height, facts and facts["trained"])
            if problem:
                raise ValueError(problem)
            return self

    def load(self, params: Params, ctx) -> Any:
        import diffusers
        import transformers

        # Studio shows its own progress; diffusers' advice about `accelerate` and dtype
        # casts is noise for a user of a pipeline
        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        # diffusers' pipeline modules import image processors that transformers warns
        # about when torchvision is absent; none of them is used here
        transformers.utils.logging.set_verbosity_error()
        root = local_path(params.model, DEFAULT_WEIGHTS)
        refuse(params.model, root, component_folders(root))
        # local files only, safetensors only: nothing is downloaded and no pickle is read
        options = {"use_safetensors": True, "local_files_only": True}
        with loading(params.model, "a diffusers model", LOAD_FIX):
            if root is not None and root.is_dir() and is_unet_checkpoint(root):
                return self._load_unet(root, options)
            index = config(root, "model_index.json") if root is not None and root.is_dir() else {}
            name = index.get("_class_name")
            if isinstance(name, str) and not hasattr(diffusers, name):
                raise UserError(f"model {params.model!r} names the pipeline class {name!r}, which diffusers "
                                f"{diffusers.__version__} does not have; Studio runs diffusers' own pipelines only")
            from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

            # a 9-channel UNet only inpaints: its own pipeline class, not a text-to-image one
            unet = config(root / "unet") if root is not None and root.is_dir() else {}
            auto = AutoPipelineForInpainting if unet.get("in_channels") == 9 else AutoPipelineForText2Image
            pipe = auto.from_pretrained(str(root) if root is not None else params.model, **options)
            pipe.set_progress_bar_config(disable=True)
            _expose_final_layer_norm(pipe)
            return {"pipeline": pipe, "scheduler_config": dict(pipe.scheduler.config), "modes": {}, "lora_state": {}}

    def prepare(self, model: dict, ctx) -> dict:
        """A text-to-image pipeline's models each on the device (its VAE guarded in
        fp16); a class-conditional UNet as any module."""
        if "pipeline" not in model:
            return super().prepare(model, ctx)
        from studio_diffusers.prepare import prepare_pipeline

        return {**model, "pipeline": prepare_pipeline(model["pipeline"], ctx)}

    @staticmethod
    def _load_unet(root: Path, options: dict) -> dict:
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(root, subfolder="unet", **options)
        scheduler_config = read_config(root / "scheduler" / "scheduler_config.json")
        if scheduler_config is None:
            raise UserError(f"model {str(root)!r} has a unet/ but no scheduler/scheduler_config.json; save the "
                            "whole pipeline (DDIMPipeline.save_pretrained) or copy its scheduler/ folder")
        info = config(root, "studio.json")
        classes = info.get("classes") if isinstance(info.get("classes"), list) else []
        return {"unet": unet, "scheduler_config": scheduler_config, "classes": [str(c) for c in classes],
                "null_class": info.get("null_class")}

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        out: list[dict | None] = [None] * len(params)
        # items differing only in seed, prompt, class, init image or mask share a batch
        keys = [(p.model, p.steps, p.guidance_scale, image_size(p, None) if p.image else (p.width, p.height),
                 p.scheduler, p.timestep_spacing, p.negative_prompt, strength_of(p), p.mask is None,
                 tuple((lora.sha256, lora.scale) for lora in p.loras), p.lora_scale, p.clip_skip,
                 p.prompt_weighting) for p in params]
        for indexes in batch_groups(keys):
            batch = [params[i] for i in indexes]
            ctx = ctxs[indexes[0]]
            model = ctx.model(self, batch[0])
            run = self._pipeline if "pipeline" in model else self._unet_loop
            for i, image in zip(indexes, run(model, batch, [ctxs[i] for i in indexes])):
                out[i] = {"image": image}
        return out

    # -- samplers -----------------------------------------------------------------

    @staticmethod
    def _scheduler(model: dict, params: Params):
        import diffusers

        config = model["scheduler_config"]
        name = params.scheduler
        cls_name = config["_class_name"] if name == "default" else SCHEDULERS[name]
        # diffusers' own switches, set through the config as its docs do
        extra = {"use_karras_sigmas": True} if name in KARRAS else {}
        if params.timestep_spacing != "default":
            extra["timestep_spacing"] = params.timestep_spacing
        return getattr(diffusers, cls_name).from_config(config, **extra)

    def _unet_loop(self, model: dict, batch: list[Params], ctxs: list) -> list:
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        unet, first = model["unet"], batch[0]
        for p in batch:
            if p.prompt or p.negative_prompt:
                raise UserError(_no_prompt_message(p.model, model["classes"]))
        try:
            size = _size(unet.config.sample_size)
            factor = 2 ** (_blocks(list(unet.config.block_out_channels), "unet/config.json") or 1) // 2
        except ValueError as exc:
            raise UserError(f"model {first.model!r}: {exc}") from None
        width, height = output_size(first.width, first.height, first.image, size or (64, 64))
        check_budget(width, height, first.steps, ctxs[0].device)
        problem = unet_scale_problem(width, height, size)
        if problem:
            raise UserError(problem)
        if width % factor or height % factor:
            raise UserError(f"`height` and `width` have to be divisible by {factor} for this model but are "
                            f"{height} and {width}")
        labels = self._class_labels(model, batch, ctxs)
        device, dtype = unet.device, unet.dtype
        scheduler = self._scheduler(model, first)
        strength = strength_of(first)
        if strength is None:
            scheduler.set_timesteps(first.steps, device=device)
            timesteps = scheduler.timesteps
        else:
            timesteps = strength_timesteps(scheduler, first.steps, strength, device)
        generators = [c.torch_generator() for c in ctxs]
        shape = (len(batch), unet.config.in_channels, height, width)
        # the sample and the scheduler's arithmetic stay fp32; only the UNet runs in bf16/fp16
        noise = randn_tensor(shape, generator=generators, device=device, dtype=torch.float32)
        init = mask = images = masks = None
        if strength is not None:
            channels = "L" if unet.config.in_channels == 1 else "RGB"
            images = [prepared_image(p.image, (width, height), channels) for p in batch]
            init = _from_pil(images, device)
        if first.mask is not None:
            masks = [prepared_mask(p.mask, (width, height), p.mask_blur) for p in batch]
            # binarized at 0.5, as diffusers' mask processor does
            mask = (_from_pil(masks, device) > 0).float()
        if init is None or (mask is not None and strength == 1.0):  # diffusers' inpainting: pure noise at full strength
            sample = noise * scheduler.init_noise_sigma
        else:
            sample = scheduler.add_noise(init, noise, timesteps[:1].repeat(len(batch)))
        guidance = CLASS_GUIDANCE if first.guidance_scale is None else first.guidance_scale
        guided = labels is not None and guidance > 1 and model["null_class"] is not None
        null = torch.full_like(labels, model["null_class"]) if guided else None
        step_kwargs = {"generator": generators} if "generator" in _step_parameters(scheduler) else {}
        for i, t in enumerate(timesteps):
            x = scheduler.scale_model_input(sample, t).to(dtype)
            with ctxs[0].autocast():
                if guided:
                    both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
                    cond, uncond = both.chunk(2)
                    eps = uncond + guidance * (cond - uncond)
                else:
                    eps = unet(x, t, class_labels=labels).sample
            sample = scheduler.step(eps.float(), t, sample, **step_kwargs).prev_sample
            if mask is not None and i + 1 < len(timesteps):
                # the kept part: the image noised to the next step's level, as diffusers' inpainting does
                kept = scheduler.add_noise(init, noise, timesteps[i + 1:i + 2].repeat(len(batch)))
                sample = (1 - mask) * kept + mask * sample
            for c in ctxs:
                c.progress(i + 1, len(timesteps))
        check_finite(sample, f"image.diffusion sample ({first.model}, {unet.dtype})")
        return self._keep_unmasked(_to_pil(sample), batch, images, masks)

    def _class_labels(self, model: dict, batch: list[Params], ctxs: list):
        import torch

        classes = model["classes"]
        if not classes:
            if any(p.class_label is not None for p in batch):
                raise UserError(f"model {batch[0].model!r} is unconditional: it takes no class_label")
            return None
        labels = []
        for p, c in zip(batch, ctxs):
            index = c.seed % len(classes) if p.class_label is None else class_index(p.class_label, classes)
            if index is None:
                raise UserError(f"class_label {str(p.class_label)[:100]!r} is not a class of model {p.model!r}; "
                                f"classes: {classes_text(classes)}")
            labels.append(index)
        return torch.tensor(labels, device=model["unet"].device)

    def _pipeline(self, model: dict, batch: list[Params], ctxs: list) -> list:
        first = batch[0]
        if any(p.class_label is not None for p in batch):
            raise UserError(f"model {first.model!r} is a text-to-image pipeline: use prompt, not class_label")
        try:
            facts = model_facts(first.model)
        except ValueError as exc:
            raise UserError(f"model {first.model!r}: {exc}") from None
        width, height = image_size(first, facts)
        check_budget(width, height, first.steps, ctxs[0].device, **_budget(facts))
        mode = "inpaint" if first.mask is not None else "img2img" if first.image is not None else "text2img"
        pipe = self._mode_pipeline(model, mode)
        pipe.scheduler = self._scheduler(model, first)
        activate(model["pipeline"], first.loras, first.lora_scale, model["lora_state"],
                 on_load=lambda lora: ctxs[0].record(lora_loaded=lora.sha256))

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
        if first.prompt_weighting != "off":
            from studio_image.diffusion_prompts import embeddings

            call["prompt_embeds"], call["negative_prompt_embeds"] = embeddings(
                pipe, [p.prompt or "" for p in batch], first.negative_prompt, first.prompt_weighting, first.clip_skip)
        else:
            call["prompt"] = [p.prompt or "" for p in batch]  # absent: the empty prompt, as diffusers samples
            call["negative_prompt"] = [first.negative_prompt] * len(batch) if first.negative_prompt else None
            if first.clip_skip is not None:
                call["clip_skip"] = first.clip_skip
        images = masks = None
        if mode == "text2img":
            call.update(width=first.width, height=first.height)
        else:
            images = [prepared_image(p.image, (width, height)) for p in batch]
            call.update(image=images, strength=strength_of(first))
        if mode == "inpaint":
            masks = [prepared_mask(p.mask, (width, height), p.mask_blur) for p in batch]
            call.update(mask_image=masks, width=width, height=height)
        try:
            result = pipe(**call)
            check_finite(result.images, f"image.diffusion image ({first.model}, VAE {pipe.vae.dtype})")
        except NonFiniteOutput:
            _blame_loras(first, pipe)
            raise
        made = pipe.numpy_to_pil(result.images)
        return self._keep_unmasked(made, batch, images, masks)

    @staticmethod
    def _keep_unmasked(made: list, batch: list[Params], images: list | None, masks: list | None) -> list:
        """The made images, each with its init image's pixels back outside its mask when asked."""
        if masks is None:
            return made
        kept = keep_unmasked(made, images, masks)
        return [k if p.keep_unmasked else m for k, m, p in zip(kept, made, batch)]

    @staticmethod
    def _mode_pipeline(model: dict, mode: str):
        """The loaded pipeline, or diffusers' image-to-image / inpainting pipeline over
        the same components (from_pipe shares the modules: nothing loads twice)."""
        base = model["pipeline"]
        if mode == "text2img" or (mode == "inpaint" and base.unet.config.in_channels == 9):
            return base
        if mode not in model["modes"]:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForInpainting if mode == "inpaint" else AutoPipelineForImage2Image
            derived = auto.from_pipe(base)
            derived.set_progress_bar_config(disable=True)
            model["modes"][mode] = derived
        return model["modes"][mode]


def _expose_final_layer_norm(pipe: Any) -> None:
    """diffusers' clip_skip and compel's penultimate-layer embeddings reach the CLIP text
    encoder's last norm as `text_encoder.text_model.final_layer_norm`; transformers 5
    flattened CLIPTextModel, so that norm is `text_encoder.final_layer_norm` there. A
    plain attribute (not a submodule: nothing is registered twice) gives both the path
    they read."""
    from types import SimpleNamespace

    encoder = getattr(pipe, "text_encoder", None)
    if encoder is not None and not hasattr(encoder, "text_model") and hasattr(encoder, "final_layer_norm"):
        object.__setattr__(encoder, "text_model", SimpleNamespace(final_layer_norm=encoder.final_layer_norm))


def _blame_loras(params: Params, pipe: Any) -> None:
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


def _no_prompt_message(model: str, classes: list[str]) -> str:
    kind = f"a class-conditional (class_label: {', '.join(classes)})" if classes else "an unconditional"
    return (f"model {model!r} is {kind} UNet; it takes no prompt or negative_prompt. "
            "Remove them, or use a text-to-image model (a Stable Diffusion directory or hub id)")


def image_size(params: Params, facts: dict[str, Any] | None) -> tuple[int, int]:
    """The size an item is sampled at: as given, else the init image's, else the model's
    (512 when unknown)."""
    return output_size(params.width, params.height, params.image, (facts or {}).get("size"))


def strength_of(params: Params) -> float | None:
    """The strength an image-to-image item runs at (None for text-to-image)."""
    if params.image is None:
        return None
    if params.strength is not None:
        return params.strength
    return INPAINT_STRENGTH if params.mask is not None else IMG2IMG_STRENGTH


def _mode_problem(params: Params, facts: dict[str, Any] | None) -> str | None:
    """Why an option does not apply to the model, or None."""
    if facts is None:
        return None
    model = params.model
    if facts["inpainting"] and (params.image is None or params.mask is None):
        return (f"model {model!r} is an inpainting checkpoint (its UNet takes 9 channels: latents, mask and masked "
                "image); give image and mask, or use an ordinary checkpoint for text-to-image")
    if params.lora_scale != 1.0 and not params.loras:
        return f"lora_scale {params.lora_scale} multiplies the scales of loras, and this item has none: give loras"
    if facts["kind"] == "unet":
        for name, on in (("clip_skip", params.clip_skip is not None),
                         ("prompt_weighting", params.prompt_weighting != "off")):
            if on:
                return (f"model {model!r} is a UNet2DModel without a text encoder; {name} applies to text-to-image "
                        "pipelines")
        return None
    if (params.clip_skip is not None or params.prompt_weighting != "off") and not facts["one_text_encoder"]:
        return (f"model {model!r} does not have one CLIP text encoder (Stable Diffusion 1.x/2.x); clip_skip and "
                "prompt_weighting apply to those")
    layers = facts["text_layers"]
    if params.clip_skip is not None and layers is not None and params.clip_skip >= layers:
        return (f"clip_skip {params.clip_skip} leaves none of the text encoder's {layers} layers; "
                f"give at most {layers - 1}")
    if params.prompt_weighting != "off" and params.clip_skip is not None and params.clip_skip > 1:
        return "with prompt_weighting, clip_skip can be 1 at most (compel reads the last or the one-before-last layer)"
    return None


def _budget(facts: dict[str, Any] | None) -> dict[str, Any]:
    """The CPU budget's arguments for a model: text-to-image pipelines get the lower one."""
    if facts and facts["kind"] == "pipeline":
        return {"limit": MAX_CPU_PIPELINE_PIXEL_STEPS, "example": "512 x 512 at 50 steps, about a native Stable "
                                                                  "Diffusion 1.5 image"}
    return {}


def check_budget(width: int, height: int, steps: int, device: str, **budget: Any) -> None:
    """Refuse, before any tensor exists, sampling that would run for days on a CPU."""
    problem = cpu_budget_problem(width, height, steps, **budget) if device == "cpu" else None
    if problem:
        raise UserError(problem)


def _step_parameters(scheduler) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def _from_pil(images: list, device):
    """PIL images (L or RGB) -> a [-1, 1] float tensor, as diffusers' image processor does."""
    import numpy as np
    import torch

    arrays = [np.asarray(im, dtype=np.float32)[..., None] if im.mode == "L" else np.asarray(im, dtype=np.float32)
              for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device) / 127.5 - 1


def _to_pil(sample) -> list:
    """As diffusers' pipelines do: [-1, 1] -> [0, 1] -> uint8 (rounded)."""
    import numpy as np
    from PIL import Image

    images = (sample / 2 + 0.5).clamp(0, 1).float().cpu().permute(0, 2, 3, 1).numpy()
    images = (images * 255).round().astype(np.uint8)
    return [Image.fromarray(im[..., 0], mode="L") if im.shape[-1] == 1 else Image.fromarray(im) for im in images]
