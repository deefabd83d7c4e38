"""The SDXL refiner pass of image.diffusion (`refiner:`, `refiner_switch:`), as A1111 and
ComfyUI run it: the base model denoises the first `refiner_switch` of the schedule and
hands its latents over; the refiner (an SDXL refiner, or another SDXL base) denoises the
rest. In diffusers' words: the base with denoising_end=x and output_type="latent", then
StableDiffusionXLImg2ImgPipeline with denoising_start=x on those latents, sharing the
base's VAE and second text encoder as diffusers' documentation does (the released
refiner's are the base's; sharing them loads and holds them once).

The refiner is loaded by the engine's load, beside the model, and cached with it: the
model key names it (ImageDiffusion.model_key). One cache entry for the pair is the
simplest correct choice: the refiner is built on two of the base's modules, so it cannot
outlive or be shared apart from that base; a sweep over refiner_switch, prompts or seeds
reuses both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REFINER_SWITCH = 0.8  # A1111's "Refiner switch at" default


def kind_of(facts: Any) -> str:
    """What a pipeline's facts say it is, in words for a message."""
    if not getattr(facts, "sdxl", False):
        one_encoder = getattr(facts, "one_text_encoder", False)
        return "a Stable Diffusion 1.x/2.x checkpoint (one CLIP text encoder)" if one_encoder else \
            "not a Stable Diffusion XL pipeline"
    if facts.refiner:
        return "a Stable Diffusion XL refiner"
    return "a Stable Diffusion XL inpainting checkpoint" if facts.inpainting else "a Stable Diffusion XL base"


def described(model: str, facts: Any) -> str:
    """What a model is, for a message: a single file's family as its header shows it
    (Stable Diffusion 1.x, 2.x, ...), else what its facts say."""
    from studio_image.diffusion_single_file import recognise

    path = Path(model)
    if path.suffix.lower() == ".safetensors" and path.is_file():
        try:
            found = recognise(path)
        except ValueError:
            found = None
        if found is not None and found.family is not None:
            return f"a {found.family.title} checkpoint"
    return kind_of(facts)


def use_problem(params: Any, model_facts: Any) -> str | None:
    """Why this item's refiner cannot finish its image, or None: refiner_switch without
    a refiner, a refiner on image-to-image, and refiner_problem. `model_facts`: the
    model's (None when unknown here)."""
    if params.refiner is None:
        if "refiner_switch" in params.model_fields_set and params.refiner_switch != REFINER_SWITCH:
            return (f"refiner_switch {params.refiner_switch:g} is where a refiner takes over, and this item has no "
                    "refiner: give refiner (an SDXL refiner checkpoint), or drop refiner_switch")
        return None
    if params.image is not None:
        return ("refiner finishes a text-to-image sample (the model stops at refiner_switch, the refiner denoises "
                "the rest); this item starts from image: drop refiner, or give the refiner as model to refine the "
                "image (image-to-image)")
    return refiner_problem(params.refiner, params.model, model_facts)


def refiner_problem(refiner: str, model: str, model_facts: Any) -> str | None:
    """Why `refiner` cannot finish `model`'s image: a file or folder that is no SDXL
    model, a model that is no SDXL base (the family mix A1111 would run into garbage)."""
    problem = refiner_file_problem(refiner)
    if problem:
        return problem
    facts = facts_of(refiner)
    if facts is not None and (not facts.sdxl or facts.inpainting):
        return (f"refiner {refiner!r} is {described(refiner, facts)}; a refiner pass needs a Stable Diffusion XL refiner (or "
                "an SDXL base) to finish an SDXL base's image: give one, or drop refiner")
    if model_facts is not None and (not model_facts.sdxl or model_facts.refiner or model_facts.inpainting):
        return (f"refiner applies to a Stable Diffusion XL base model; model {model!r} is "
                f"{described(model, model_facts)}: give an SDXL base as model (the refiner finishes what the model began), or drop "
                "refiner")
    return None


def refiner_file_problem(refiner: str) -> str | None:
    """single_file_problem or weights_problem for the refiner, in its name."""
    from studio.weights import local_path, weights_problem
    from studio_image.diffusion_models import DEFAULT_WEIGHTS, component_folders
    from studio_image.diffusion_single_file import single_file_problem

    root = local_path(refiner, DEFAULT_WEIGHTS)
    if root is not None and root.is_file():
        problem = single_file_problem(refiner, root, None)
    else:
        problem = weights_problem(refiner, root, component_folders(root))
    return problem and "refiner" + problem.removeprefix("model")


def facts_of(refiner: str) -> Any:
    """The refiner's facts; None when they cannot be read here (the file's own problem
    says why)."""
    from studio_image.diffusion_models import model_facts

    try:
        return model_facts(refiner)
    except ValueError:
        return None


# -- loading and running -------------------------------------------------------------


def load_refiner(path: Path, base: Any) -> Any:
    """The refiner as StableDiffusionXLImg2ImgPipeline on the base's VAE and second text
    encoder: a single file (its family's shipped configs) or a diffusers folder, local
    files only, no invisible watermark."""
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline

    shared = {"text_encoder_2": base.text_encoder_2, "tokenizer_2": base.tokenizer_2, "vae": base.vae}
    if path.is_file():
        from studio_image.diffusion_single_file import load_single_file

        pipe = load_single_file(path, None, None, "default", False, shared=shared)
    else:
        pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(
            str(path), use_safetensors=True, local_files_only=True, torch_dtype=torch.float32,
            add_watermarker=False, **shared)
    if not isinstance(pipe, StableDiffusionXLImg2ImgPipeline):  # an SDXL base used as the refiner
        pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare_refiner(refiner: Any, base: Any, ctx: Any) -> None:
    """The refiner's own modules on the device (the shared ones came with the base)."""
    import torch

    shared = {id(part) for part in base.components.values()}
    for part in refiner.components.values():
        if isinstance(part, torch.nn.Module) and id(part) not in shared:
            ctx.runtime.prepare(part, ctx.precision, compile=ctx.compile)


def refined(refiner: Any, refiner_scheduler: Any, latents: Any, call: dict[str, Any], batch: list) -> Any:
    """The refiner's pass over the base's latents: the rest of the same schedule, the
    same guidance, prompts and noise generators; images as numbers in 0..1."""
    from studio_image.diffusion_prompts import prompt_arguments

    refiner.scheduler = refiner_scheduler
    kept = ("num_inference_steps", "guidance_scale", "generator", "callback_on_step_end")
    rest = {name: call[name] for name in kept}
    rest.update(prompt_arguments(refiner, batch), image=latents, denoising_start=batch[0].refiner_switch,
                output_type="np")
    return refiner(**rest)


def record_refiner(ctxs: list, refiner: str) -> None:
    """The refiner in each item's manifest notes: its path, and a file's sha256."""
    from studio.weights import file_sha256

    path = Path(refiner)
    notes = {"refiner": str(path), **({"refiner_sha256": file_sha256(path)} if path.is_file() else {})}
    for ctx in ctxs:
        ctx.record(**notes)
