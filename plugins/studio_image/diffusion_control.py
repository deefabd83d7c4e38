"""ControlNets for image.diffusion: the `controlnets:` entries, their checks before the
run, and their loading (once per folder, kept beside the loaded pipeline).

A ControlNet is a diffusers ControlNet folder (config.json and
diffusion_pytorch_model.safetensors), given by `model:` (a path) or `name:` (a
ControlNet in the user's model folders). Its control image is not in the entry: media
inside a list of mappings is not resolved by the host (a `${steps...}` reference there is
refused), so the images are the parallel media list `control_images:`, one per entry and
in the same order. That keeps the control image a real media input: a file, or the output
of an upstream step (a preprocessor), checked and hashed as every media input is.

Checked before the run: the folder holds a ControlNetModel's config and safetensors
weights, the file is whole, and it was made for the model's family: its
cross_attention_dim, block_out_channels and additional conditioning (SDXL's text_time)
must be the UNet's, since its outputs are added to that UNet's blocks. An SDXL
ControlNet on an SD 1.5 model is refused saying what each is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from studio.weights import config, named_model, safetensors_problem, weights_fingerprint

MAX_CONTROLNETS = 4  # at once on one item; artists stack two or three
WEIGHTS = "diffusion_pytorch_model.safetensors"
# what must agree between a ControlNet and the UNet it steers
FAMILY_KEYS = ("cross_attention_dim", "block_out_channels", "addition_embed_type")


class ControlNet(BaseModel):
    """One ControlNet and how it steers; its image is control_images' entry at its index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, min_length=1, max_length=1000, description=(
        "A diffusers ControlNet folder (config.json, diffusion_pytorch_model.safetensors), relative to the "
        "pipeline file."))
    name: str | None = Field(None, min_length=1, max_length=1000, description=(
        "Instead of model: a ControlNet in your model folders by name (`studio models list --kind controlnet`)."))
    scale: float = Field(1.0, ge=0.0, le=5.0, description=(
        "How strongly it steers (diffusers' controlnet_conditioning_scale); 0 leaves the image unsteered."))
    start: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "The fraction of the steps after which it begins to steer (diffusers' control_guidance_start)."))
    end: float = Field(1.0, gt=0.0, le=1.0, description=(
        "The fraction of the steps after which it stops (diffusers' control_guidance_end); after start."))
    fingerprint: str | None = Field(None, max_length=2000, description=(
        "Filled in by Studio for the cache key: the weights' size and time."))

    @model_validator(mode="before")
    @classmethod
    def name_becomes_model(cls, data: Any, info: ValidationInfo) -> Any:
        """A `name:` is looked up in the user's model folders (the host passes them in the
        validation context) and recorded as the folder's path."""
        if not isinstance(data, dict) or set(data) - set(cls.model_fields):
            return data  # pydantic names the unknown key
        if data.get("model") is None and data.get("name") is None:
            raise ValueError("a ControlNet entry needs `model:` (a ControlNet folder) or `name:` (a ControlNet in "
                             "your model folders)")
        if data.get("name") is not None and data.get("model") is not None:
            raise ValueError("give a ControlNet's `model:` or its `name:`, not both")
        if isinstance(data.get("name"), str) and info.context is not None:
            data = {**data, "model": str(named_model(data["name"], "controlnet", info)), "name": None}
        return data

    @model_validator(mode="after")
    def starts_before_it_ends(self):
        if self.start >= self.end:
            raise ValueError(f"start {self.start} is not before end {self.end}: a ControlNet steers from start to end "
                             "(fractions of the steps); give start < end")
        return self


def controlnet_problem(path: Path, where: str) -> str | None:
    """Why the folder at `path` is not a ControlNet Studio loads, or None."""
    try:
        found = path.exists()
    except (OSError, ValueError):
        found = False
    if not found:
        return f"{where} not found (looked in {str(path)[:300]!r}); give a path relative to the pipeline file"
    if path.is_file():
        return (f"{where} is a file; give a diffusers ControlNet folder (config.json and {WEIGHTS}), as "
                "ControlNetModel.save_pretrained writes it")
    cfg = config(path)
    if cfg.get("_class_name") != "ControlNetModel":
        return (f"{where}: its config.json is not a ControlNetModel's (_class_name "
                f"{str(cfg.get('_class_name'))[:80]!r}); give a diffusers ControlNet folder")
    weights = path / WEIGHTS
    if not weights.is_file():
        return (f"{where} has no {WEIGHTS}; Studio reads ControlNet weights as safetensors only, never a pickle: "
                "convert them where you trust them (ControlNetModel.save_pretrained(..., safe_serialization=True))")
    problem = safetensors_problem(weights)
    return f"{where}: {problem}" if problem else None


def family_problem(controlnet: dict[str, Any], unet: dict[str, Any], where: str, model: str) -> str | None:
    """Why a ControlNet's config does not fit the UNet's (None when it does, or when the
    model's UNet config is not known here)."""
    if not unet:
        return None
    for key in FAMILY_KEYS:
        theirs, ours = controlnet.get(key), unet.get(key)
        if theirs != ours:
            return (f"{where} was made for another model family: its {key} is {_shown(theirs)}, model {model!r}'s "
                    f"UNet has {_shown(ours)} (a ControlNet for {family_name(controlnet)}, a model of "
                    f"{family_name(unet)}); give a ControlNet made for this model's family")
    return None


def family_name(cfg: dict[str, Any]) -> str:
    """SD 1.x, SD 2.x or SDXL, as a reader knows them, from a UNet's or ControlNet's config."""
    if cfg.get("addition_embed_type") == "text_time":
        return "SDXL"
    width = cfg.get("cross_attention_dim")
    return {768: "SD 1.x", 1024: "SD 2.x"}.get(width, f"cross-attention width {_shown(width)}")


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)[:80]


def checked_all(controlnets: list[ControlNet], resolve: Callable[[str], Path], unet: dict[str, Any],
                model: str) -> list[ControlNet]:
    """The entries with their resolved folders and fingerprints; a ValueError says which
    does not fit and why."""
    out = []
    for index, entry in enumerate(controlnets):
        path = resolve(entry.model)
        where = f"controlnets[{index}] {entry.model!r}"
        problem = controlnet_problem(path, where) or family_problem(config(path), unet, where, model)
        if problem:
            raise ValueError(problem)
        resolved = str(path.resolve())
        out.append(entry.model_copy(update={"model": resolved, "fingerprint": weights_fingerprint(resolved, path)}))
    return out


def model_unet_config(model: str, config_dir: str | None, default_dir: Path) -> dict[str, Any]:
    """The UNet config of `model` (a folder's, a single file's config folder's or its
    recognised family's; {} when none is known here)."""
    from studio.weights import local_path

    root = local_path(model, default_dir)
    if root is None:
        return {}
    if root.is_dir():
        return config(root / "unet")
    if config_dir is not None:
        return config(Path(config_dir) / "unet")
    from studio_image.diffusion_single_file import family_config, recognise

    try:
        return config(family_config(recognise(root)) / "unet") if root.suffix.lower() == ".safetensors" else {}
    except ValueError:
        return {}


def load_controlnets(entries: list[ControlNet], state: dict[str, Any], unet: Any, on_load: Callable) -> Any:
    """The ControlNet (one) or MultiControlNetModel (several) for these entries, each
    folder loaded once per loaded model (kept in `state`) on the UNet's device and dtype."""
    from diffusers import ControlNetModel

    models = []
    for entry in entries:
        key = f"{entry.model}|{entry.fingerprint}"
        if key not in state:
            loaded = ControlNetModel.from_pretrained(entry.model, use_safetensors=True, local_files_only=True)
            state[key] = loaded.to(device=unet.device, dtype=unet.dtype).eval()
            on_load(entry)
        models.append(state[key])
    return models[0] if len(models) == 1 else models


def control_arguments(batch: list, images: list) -> dict[str, Any]:
    """The ControlNet keywords of a diffusers call: one image and one value per ControlNet
    (a batch shares them: they are in its key)."""
    entries = batch[0].controlnets
    one = len(entries) == 1
    return {"controlnet_conditioning_scale": entries[0].scale if one else [e.scale for e in entries],
            "control_guidance_start": [e.start for e in entries], "control_guidance_end": [e.end for e in entries],
            "control_image": images[0] if one else images}


def count_problem(controlnets: list, control_images: list) -> str | None:
    """Why the ControlNets and their images do not pair up."""
    if len(controlnets) != len(control_images):
        return (f"controlnets has {len(controlnets)} entries and control_images {len(control_images)}: give one "
                "control image per ControlNet, in the same order")
    return None
