"""What image.diffusion's engines share: the rules every kind of model follows, the
sampler names, image-to-image's strength, and putting the kept pixels back.

An engine is one kind of model (diffusion_unet: the UNet2DModel loop; diffusion_pipeline:
diffusers' pipelines). It holds the facts of its model folder (diffusion_models) and
answers, for one item, why its parameters cannot run on that model. `studio validate`
asks it field by field (so a message names the parameter), and the run asks the same
engine, built from the folder it loaded, once per item before any noise is drawn: one
rule, one place. The base class here is also the engine of a model whose configs are not
on this machine, where only the rules that need no facts apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from studio.limits import cpu_budget_problem
from studio_image.diffusion_inputs import init_problem, keep_unmasked, output_size

# width x height: 2048 x 2048, or any shape of the same area. Beyond it a UNet's attention
# over the latent grows past what a GPU holds (diffusion models are trained far below).
MAX_PIXELS = 2048 * 2048
IMG2IMG_STRENGTH, INPAINT_STRENGTH = 0.8, 1.0  # diffusers' defaults

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
SchedulerName = Literal["default", "ddim", "ddpm", "euler", "euler-a", "dpm++", "heun", "pndm", "unipc",
                        "dpm++-karras", "euler-karras", "heun-karras"]


@dataclass(frozen=True)
class Engine:
    """The rules of every model. An engine for a kind of model adds its rules by
    overriding the hooks (prompt_problem ... scale_problem), which the whole-item checks
    below combine, and runs its model: `load` returns the engine holding the loaded
    model, `prepared` that model on the step's device, `run` a batch's images."""

    # the CPU budget's arguments (studio.limits.cpu_budget_problem): the default one
    cpu_budget: ClassVar[dict[str, Any]] = {}

    @property
    def factor(self) -> int:
        """Width and height must be multiples of it."""
        return 1

    @property
    def default_size(self) -> tuple[int, int] | None:
        """The size made when neither width and height nor an init image give one
        (None: 512 x 512)."""
        return None

    # -- a kind's own rules: each says why, or None ---------------------------------

    def prompt_problem(self, model: str, text: str | None) -> str | None:
        return None

    def class_label_problem(self, model: str, label: int | str | None) -> str | None:
        return None

    def loras_problem(self, model: str) -> str | None:
        """Why this kind of model takes no LoRA (the files are checked in diffusion_lora)."""
        return None

    def options_problem(self, params: Any) -> str | None:
        """Why an option does not apply to the model."""
        return None

    def scale_problem(self, width: int, height: int) -> str | None:
        """Why width x height is too far from what the model was trained at."""
        return None

    # -- running: what an engine for a kind of model implements ---------------------

    def load(self, root: Path | None, model: str, options: dict[str, Any]) -> Engine:
        raise NotImplementedError(f"{type(self).__name__} cannot load a model whose configs it has not read")

    def prepared(self, ctx: Any) -> Engine:
        raise NotImplementedError

    def run(self, batch: list, ctxs: list) -> list:
        raise NotImplementedError

    # -- the checks of a whole item, for validate and for the run --------------------

    def size(self, params: Any) -> tuple[int, int]:
        """The size an item is sampled at: as given, else the init image's, else the
        model's (512 when unknown)."""
        return output_size(params.width, params.height, params.image, self.default_size)

    def multiple_problem(self, name: str, value: int | None) -> str | None:
        if value is not None and value % self.factor:
            return (f"{name} {value} is not a multiple of {self.factor}, as this model needs; try "
                    f"{max(self.factor, value // self.factor * self.factor)}")
        return None

    def size_problem(self, width: int, height: int, steps: int, cpu: bool) -> str | None:
        """Why width x height at `steps` is too much: for any GPU, for a CPU, for the model."""
        if width * height > MAX_PIXELS:
            return (f"{width} x {height} is {width * height / 1e6:.1f} megapixels; image.diffusion makes "
                    f"at most {MAX_PIXELS / 1e6:.1f} (2048 x 2048, or the same area in another shape)")
        problem = cpu_budget_problem(width, height, steps, **self.cpu_budget) if cpu else None
        return problem or self.scale_problem(width, height)

    def item_problem(self, params: Any, cpu: bool) -> str | None:
        """Why an item cannot run, beyond its single fields (validate checks those one by
        one): its options, its init image and mask, its size."""
        problem = self.options_problem(params) or init_problem(
            params.image, params.mask, params.strength, params.steps, params.width, params.height, self.factor)
        if problem:
            return problem
        width, height = self.size(params)
        return self.size_problem(width, height, params.steps, cpu)

    def run_problem(self, params: Any, device: str) -> str | None:
        """What the run checks before any noise is drawn: every rule of the model (an item
        may come without validation, and the device is sure now), not the input files,
        which the run reads in full anyway."""
        model = params.model
        width, height = self.size(params)
        return (self.prompt_problem(model, params.prompt) or self.prompt_problem(model, params.negative_prompt)
                or self.class_label_problem(model, params.class_label) or self.options_problem(params)
                or self.multiple_problem("width", width) or self.multiple_problem("height", height)
                or self.size_problem(width, height, params.steps, device == "cpu"))


def lora_scale_problem(params: Any) -> str | None:
    if params.lora_scale != 1.0 and not params.loras:
        return f"lora_scale {params.lora_scale} multiplies the scales of loras, and this item has none: give loras"
    return None


def strength_of(params: Any) -> float | None:
    """The strength an image-to-image item runs at (None for text-to-image)."""
    if params.image is None:
        return None
    if params.strength is not None:
        return params.strength
    return INPAINT_STRENGTH if params.mask is not None else IMG2IMG_STRENGTH


def scheduler(config: dict, params: Any):
    """The sampler an item asks for, built from the checkpoint's scheduler config."""
    import diffusers

    name = params.scheduler
    cls_name = config["_class_name"] if name == "default" else SCHEDULERS[name]
    # diffusers' own switches, set through the config as its docs do
    extra = {"use_karras_sigmas": True} if name in KARRAS else {}
    if params.timestep_spacing != "default":
        extra["timestep_spacing"] = params.timestep_spacing
    return getattr(diffusers, cls_name).from_config(config, **extra)


def kept_where_asked(made: list, batch: list, images: list | None, masks: list | None) -> list:
    """The made images, each with its init image's pixels back outside its mask when asked."""
    if masks is None:
        return made
    kept = keep_unmasked(made, images, masks)
    return [k if p.keep_unmasked else m for k, m, p in zip(kept, made, batch)]


def quiet_libraries() -> None:
    """Studio shows its own progress; diffusers' advice about `accelerate` and dtype
    casts is noise for a user of a pipeline. diffusers' pipeline modules import image
    processors that transformers warns about when torchvision is absent; none of them
    is used here."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
