"""Which Stable Diffusion family a LoRA was made for, and whether a single-file
checkpoint is of that family, decided from the safetensors headers of both before the run.

A diffusers model folder has its layers checked one by one (diffusion_lora.fit_problem
reads the model's weights by diffusers' names). A single file keeps the original
(ldm/sgm) names, which few LoRA layers share, so there the check is by family: the
model's from its UNet (diffusion_single_file.recognise), the LoRA's from what its
tensors prove (a cross-attention layer's input width is the text encoder's: 768 for
SD 1.x, 1024 for SD 2.x, 2048 for SDXL, 1280 for SDXL's refiner; layers of a second text
encoder exist only in SDXL), else from kohya's `ss_base_model_version` or the
`modelspec.architecture` its header's metadata names. A LoRA that shows no family (a
tiny test model, a file without metadata) is let through: the run loads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from studio.weights import safetensors_problem, safetensors_shapes

TITLES = {"SD1": "Stable Diffusion 1.x", "SD2": "Stable Diffusion 2.x", "SDXL": "Stable Diffusion XL",
          "SDXL refiner": "the Stable Diffusion XL refiner"}
# a checkpoint family (diffusion_single_file.FAMILIES) -> the LoRAs it takes
MODEL_GROUPS = {"sd1": "SD1", "sd1-inpaint": "SD1", "sd2": "SD2", "sd2-inpaint": "SD2", "sdxl": "SDXL",
                "sdxl-inpaint": "SDXL", "sdxl-refiner": "SDXL refiner"}
CROSS_WIDTHS = {768: "SD1", 1024: "SD2", 2048: "SDXL", 1280: "SDXL refiner"}
# a cross-attention key or value projection's down matrix, in peft's, diffusers' or kohya's names
CROSS_DOWN = re.compile(r"attn2[._]to_[kv]\.(lora_A|lora\.down|lora_down)(\.[A-Za-z0-9_]+)?\.weight$")
SECOND_TEXT = ("lora_te2_", "text_encoder_2.")
# metadata prefixes -> family; the more specific first
KOHYA_BASES = (("sdxl", "SDXL"), ("sd_v1", "SD1"), ("sd_v2", "SD2"))
MODELSPEC_BASES = (("stable-diffusion-xl-v1-refiner", "SDXL refiner"), ("stable-diffusion-xl", "SDXL"),
                   ("stable-diffusion-v1", "SD1"), ("stable-diffusion-v2", "SD2"))
MAX_METADATA_HEADER = 16 * 2**20  # as studio.weights bounds a header (safetensors_problem checked it)


def family_problem(lora: Path, model: Path) -> str | None:
    """Why the LoRA at `lora` cannot apply to the single-file checkpoint at `model`
    (a LoRA of another family), or None when they match or either family is unknown.
    Both files' headers are checked before this is asked."""
    from studio_image.diffusion_single_file import recognise

    if model.suffix.lower() != ".safetensors":
        return None  # a .ckpt's tensors are read only when the run loads it
    try:
        found = recognise(model)
    except ValueError:
        return None  # the model's own check says what is wrong with it
    model_group = MODEL_GROUPS.get(found.family.name) if found.family is not None else None
    made_for = lora_family(lora)
    if model_group is None or made_for is None or made_for[0] == model_group:
        return None
    family, evidence = made_for
    return (f"was made for {TITLES[family]} ({evidence}), and model {model.name!r} is a {found.family.title} "
            f"checkpoint: a LoRA applies only to the family it was trained on. Use an {model_group} LoRA with this "
            f"model, or this LoRA with an {family} checkpoint")


def lora_family(path: Path) -> tuple[str, str] | None:
    """(family, the evidence in words) for a LoRA file, or None when it shows none."""
    if safetensors_problem(path):
        return None
    shapes = safetensors_shapes(path)
    for key, shape in shapes.items():
        if CROSS_DOWN.search(key) and len(shape) >= 2 and shape[1] in CROSS_WIDTHS:
            return CROSS_WIDTHS[shape[1]], f"its cross-attention layers read {shape[1]}-wide text, e.g. {key[:120]!r}"
    for key in shapes:
        if key.startswith(SECOND_TEXT):
            return "SDXL", f"it has layers for a second text encoder, e.g. {key[:120]!r}"
    metadata = _metadata(path)
    for field, bases in (("ss_base_model_version", KOHYA_BASES), ("modelspec.architecture", MODELSPEC_BASES)):
        value = metadata.get(field)
        if isinstance(value, str):
            for prefix, family in bases:
                if value.startswith(prefix):
                    return family, f"its metadata says {field}: {value[:80]!r}"
    return None


def _metadata(path: Path) -> dict[str, Any]:
    """The header's `__metadata__` (kohya's training facts), {} when there is none."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > MAX_METADATA_HEADER:
            return {}
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (ValueError, RecursionError):
            return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}
