"""A1111's `parameters` text for image.diffusion's images, so that A1111's "PNG Info",
ComfyUI and the model sites read how an image was made.

The format is AUTOMATIC1111's infotext: the prompt, then `Negative prompt: ...` when there
is one, then one line of `key: value` pairs joined by ", ", in A1111's order and with its
names; a value holding a comma, a colon or a newline is written as a JSON string (A1111's
`quote`). A1111 reads the pairs back from the last line only (studio.interop.a1111 parses
it the same way; tests/test_infotext.py checks the round trip).

The text is handed to the host on the image itself, `image.info["parameters"]` (where A1111
keeps it too); the PNG writer embeds it as a `parameters` text chunk beside Studio's own
provenance (docs/plugins.md).

Hashes are the ones A1111 and the model sites show: a checkpoint file's first 10 hex digits
of its sha256 (studio.weights.file_sha256: remembered across runs by real path, size and
mtime in the cache `studio models list` fills, so a 6 GB checkpoint is hashed once); a
LoRA's first 12 of the sha256 of its tensor bytes (kohya's "addnet" hash: the file past its
safetensors header); an embedding's and a refiner's first 10, as a checkpoint's. A
diffusers folder is many files with no one hash that A1111 or a model site knows, so an
image from one has no `Model hash` (A1111 leaves it out too when it has none) and `Model`
names the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from studio import __version__
from studio.weights import file_sha256, local_path

# Studio's scheduler -> A1111's sampler and its schedule type
SAMPLERS = {
    "euler": ("Euler", "Automatic"), "euler-a": ("Euler a", "Automatic"), "dpm++": ("DPM++ 2M", "Automatic"),
    "ddim": ("DDIM", "Automatic"), "heun": ("Heun", "Automatic"), "pndm": ("PLMS", "Automatic"),
    "unipc": ("UniPC", "Automatic"), "ddpm": ("DDPM", "Automatic"),  # A1111 has no DDPM: the name says what ran
    "dpm++-karras": ("DPM++ 2M", "Karras"), "euler-karras": ("Euler", "Karras"), "heun-karras": ("Heun", "Karras"),
}
# a checkpoint's own scheduler class ('default') -> Studio's name for it
CLASSES = {
    "DDIMScheduler": "ddim", "DDPMScheduler": "ddpm", "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler-a", "DPMSolverMultistepScheduler": "dpm++",
    "HeunDiscreteScheduler": "heun", "PNDMScheduler": "pndm", "UniPCMultistepScheduler": "unipc",
}
OTHER_CLASSES = {"LMSDiscreteScheduler": "LMS", "LCMScheduler": "LCM", "KDPM2DiscreteScheduler": "DPM2",
                 "KDPM2AncestralDiscreteScheduler": "DPM2 a", "DPMSolverSinglestepScheduler": "DPM++ SDE"}
TEXT_GUIDANCE, CLASS_GUIDANCE = 7.5, 2.0  # the engines' defaults when guidance_scale is not given
HEADER_BYTES = 8  # a safetensors file starts with its header's length, 8 bytes little-endian


def parameters_text(params: Any, seed: int, size: tuple[int, int], engine: Any) -> str:
    """The infotext of one image made from `params` with `seed`, `size` (width, height)
    the image's own, `engine` the loaded engine that made it (its scheduler config)."""
    config = getattr(getattr(engine, "model", None), "scheduler_config", None) or {}
    sampler, schedule = sampler_names(params.scheduler, config)
    text_model = hasattr(getattr(engine, "model", None), "pipeline")
    guidance = params.guidance_scale
    if guidance is None:
        guidance = TEXT_GUIDANCE if text_model else CLASS_GUIDANCE if params.class_label is not None else None
    strength = _strength(params)
    pairs = {
        "Steps": params.steps, "Sampler": sampler, "Schedule type": schedule, "CFG scale": guidance,
        "Seed": seed, "Size": f"{size[0]}x{size[1]}", "Model hash": model_hash(params.model),
        "Model": model_name(params.model), "Denoising strength": strength,
        # A1111 counts the last layer as 1; diffusers' clip_skip counts layers skipped
        "Clip skip": None if params.clip_skip is None else params.clip_skip + 1,
        "Lora hashes": ", ".join(f"{lora_name(lora.path)}: {lora_hash(lora.path)}" for lora in params.loras
                                 if lora.path) or None,
        # A1111 names an embedding by its file (what `studio import` resolves), its hash the first 10 hex
        # digits of the file's sha256
        "TI hashes": ", ".join(f"{lora_name(e.path)}: {e.sha256[:10]}" for e in getattr(params, "embeddings", ())
                               if e.path and e.sha256) or None,
        # A1111's SDXL refiner keys: its name and short hash, and the fraction of the steps the base ran
        "Refiner": refiner_text(params.refiner) if getattr(params, "refiner", None) else None,
        "Refiner switch at": params.refiner_switch if getattr(params, "refiner", None) else None,
        # Studio's own, when set: A1111 passes over keys it does not know
        "Timestep spacing": None if params.timestep_spacing == "default" else params.timestep_spacing,
        # not a bare version number: A1111 reads "Version" to turn on its old versions' behaviour
        "Version": f"studio {__version__}",
    }
    line = ", ".join(f"{key}: {quote(value)}" for key, value in pairs.items() if value is not None)
    # a LoRA's name is its file's (a `name:` entry has become its path by the time it runs)
    # each tag after a space, as A1111 users write them (its parser drops the tags, not the space)
    prompt = (params.prompt or "") + "".join(
        f" <lora:{lora_name(lora.path or getattr(lora, 'name', None) or 'lora')}:{lora.scale * params.lora_scale:g}>"
        for lora in params.loras)
    negative = f"\nNegative prompt: {params.negative_prompt}" if params.negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def quote(value: Any) -> str:
    """A value as A1111 writes it: a JSON string when a comma, colon or newline would
    split it when read back, else as it is."""
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def sampler_names(scheduler: str, config: dict[str, Any]) -> tuple[str, str]:
    """A1111's sampler and schedule type for Studio's scheduler name; 'default' names the
    checkpoint's own scheduler (its config) as A1111 would."""
    if scheduler != "default":
        return SAMPLERS[scheduler]
    cls = str(config.get("_class_name", ""))
    karras = "Karras" if config.get("use_karras_sigmas") else "Automatic"
    if cls == "DPMSolverMultistepScheduler" and str(config.get("algorithm_type", "")).startswith("sde-"):
        return "DPM++ 2M SDE", karras
    if cls in CLASSES:
        return SAMPLERS[CLASSES[cls]][0], karras
    return OTHER_CLASSES.get(cls, cls or "Automatic"), karras


def _strength(params: Any) -> float | None:
    if params.image is None:
        return None
    if params.strength is not None:
        return params.strength
    return 1.0 if params.mask is not None else 0.8  # diffusers' defaults, as the engines use them


def model_name(model: str) -> str:
    """What A1111 calls the checkpoint: a file's name without its suffix, a folder's
    name; 'default' and hub ids as given."""
    path = Path(model)
    if model == "default" or not path.exists():
        return model
    return path.stem if path.is_file() else path.resolve().name


def model_hash(model: str) -> str | None:
    """A1111's short hash of a one-file checkpoint; None for a folder (see the module's note)."""
    from studio_image.diffusion_models import DEFAULT_WEIGHTS

    root = local_path(model, DEFAULT_WEIGHTS)
    if root is None or not root.is_file():
        return None
    return file_sha256(root)[:10]


def refiner_text(refiner: str) -> str:
    """A1111's `Refiner` value: the name, then the short hash in brackets for a one file."""
    digest = model_hash(refiner)
    return f"{model_name(refiner)} [{digest}]" if digest else model_name(refiner)


def lora_name(path: str) -> str:
    """The name A1111 writes for a LoRA: its file name without suffix, less the commas and
    colons that would split the hashes' list."""
    return Path(path).stem.replace(":", "").replace(",", "")


def lora_hash(path: str) -> str:
    """The first 12 hex digits of the sha256 of the LoRA's tensor bytes (kohya's hash,
    which A1111 writes and model sites list), once per version of the file."""
    st = os.stat(path)
    return _tensor_sha256(str(path), st.st_size, st.st_mtime_ns)[:12]


@lru_cache(maxsize=64)
def _tensor_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(HEADER_BYTES), "little")
        f.seek(min(header, size) + HEADER_BYTES)  # the file was checked as safetensors before the run
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
