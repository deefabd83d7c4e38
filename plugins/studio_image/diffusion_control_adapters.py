"""T2I-Adapters for image.diffusion: the `adapters:` entries, their checks before the run,
and their loading (once per folder, kept beside the loaded pipeline).

A T2I-Adapter is a small network that turns a control image into features added to the
UNet's down blocks: lighter than a ControlNet, text-to-image only in diffusers
(StableDiffusionAdapterPipeline and its SDXL twin, made here with from_pipe over the
loaded components). As with ControlNets (diffusion_control), the images are a parallel
media list, `adapter_images:`, one per entry in the same order. An adapter is a diffusers
T2IAdapter folder (config.json and diffusion_pytorch_model.safetensors), by `model:` or
by `name:` among the ControlNets of the model folders (where ComfyUI keeps adapters too).

Checked before the run: a T2IAdapter config with safetensors weights, made for the model's
family: its channels are the UNet's first block widths, and an SDXL adapter
(full_adapter_xl) goes with an SDXL UNet only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from studio.weights import config, named_entry, safetensors_problem, weights_fingerprint

MAX_ADAPTERS = 4
MAX_LOADED_ADAPTERS = 8  # kept loaded beside one model across batches; past it they are dropped and reload
WEIGHTS = "diffusion_pytorch_model.safetensors"


class Adapter(BaseModel):
    """One T2I-Adapter and how strongly it steers; its image is adapter_images' entry at its index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, min_length=1, max_length=1000, description=(
        "A diffusers T2IAdapter folder (config.json, diffusion_pytorch_model.safetensors), relative to the "
        "pipeline file."))
    name: str | None = Field(None, min_length=1, max_length=1000, description=(
        "Instead of model: an adapter in your model folders' ControlNet folders, by name."))
    scale: float = Field(1.0, ge=0.0, le=5.0, description=(
        "How strongly it steers (diffusers' adapter_conditioning_scale); 0 leaves the image unsteered."))
    fingerprint: str | None = Field(None, max_length=2000, description=(
        "Filled in by Studio for the cache key: the weights' size and time."))

    @model_validator(mode="before")
    @classmethod
    def name_becomes_model(cls, data: Any, info: ValidationInfo) -> Any:
        """A `name:` is looked up in the user's model folders (their ControlNet folders)."""
        return named_entry(data, info, field="model", kind="controlnet", fields=cls.model_fields,
                           needs="an adapter entry needs `model:` (a T2IAdapter folder) or `name:` (one in your model "
                                 "folders)",
                           both="give an adapter's `model:` or its `name:`, not both")


def adapter_problem(path: Path, where: str) -> str | None:
    """Why the folder at `path` is not a T2I-Adapter Studio loads, or None."""
    try:
        found = path.is_dir()
    except (OSError, ValueError):
        found = False
    if not found:
        return (f"{where} is not a folder (looked in {str(path)[:300]!r}); give a diffusers T2IAdapter folder "
                f"(config.json and {WEIGHTS}) relative to the pipeline file")
    cfg = config(path)
    if cfg.get("_class_name") != "T2IAdapter":
        return (f"{where}: its config.json is not a T2IAdapter's (_class_name {str(cfg.get('_class_name'))[:80]!r}); "
                "give a diffusers T2IAdapter folder")
    if not (path / WEIGHTS).is_file():
        return f"{where} has no {WEIGHTS}; Studio reads adapter weights as safetensors only, never a pickle"
    problem = safetensors_problem(path / WEIGHTS)
    return f"{where}: {problem}" if problem else None


def family_problem(adapter: dict[str, Any], unet: dict[str, Any], where: str, model: str) -> str | None:
    """Why an adapter's config does not fit the UNet's (None when it does or is unknown)."""
    if not unet:
        return None
    channels, blocks = adapter.get("channels"), unet.get("block_out_channels")
    xl_adapter = adapter.get("adapter_type") == "full_adapter_xl"
    xl_model = unet.get("addition_embed_type") == "text_time"
    if not (isinstance(channels, list) and isinstance(blocks, list) and channels == blocks[:len(channels)]):
        return (f"{where} was made for another model family: its channels are {str(channels)[:80]}, model {model!r}'s "
                f"UNet blocks are {str(blocks)[:80]}; give an adapter made for this model's family")
    if xl_adapter != xl_model:
        return (f"{where} is {'an SDXL' if xl_adapter else 'an SD 1.x/2.x'} adapter and model {model!r} "
                f"{'is' if xl_model else 'is not'} SDXL; give an adapter made for this model's family")
    return None


def checked_all(adapters: list[Adapter], resolve: Callable[[str], Path], unet: dict[str, Any],
                model: str) -> list[Adapter]:
    """The entries with their resolved folders and fingerprints; a ValueError says which
    does not fit and why."""
    out = []
    for index, entry in enumerate(adapters):
        path = resolve(entry.model)
        where = f"adapters[{index}] {entry.model!r}"
        problem = adapter_problem(path, where) or family_problem(config(path), unet, where, model)
        if problem:
            raise ValueError(problem)
        resolved = str(path.resolve())
        out.append(entry.model_copy(update={"model": resolved, "fingerprint": weights_fingerprint(resolved, path)}))
    return out


def adapter_options_problem(params: Any) -> str | None:
    """Why adapters cannot run with these options."""
    if not params.adapters:
        return ("adapter_images are the images of adapters, and this item has none: give adapters"
                if params.adapter_images else None)
    if params.image is not None:
        return ("adapters steer text-to-image only (diffusers' adapter pipelines); drop image and mask, or use "
                "controlnets, which steer image-to-image and inpainting too")
    if params.controlnets:
        return "give controlnets or adapters on one item, not both (diffusers has no pipeline that takes both)"
    if params.refiner is not None:
        return "adapters steer the model's pass and the refiner has none: drop refiner"
    if len(params.adapters) != len(params.adapter_images):
        return (f"adapters has {len(params.adapters)} entries and adapter_images {len(params.adapter_images)}: give "
                "one image per adapter, in the same order")
    return None


def adapter_key(entry: Adapter) -> str:
    return f"{entry.model}|{entry.fingerprint}"


def load_adapters(entries: list[Adapter], state: dict[str, Any], unet: Any, on_load: Callable) -> Any:
    """The T2IAdapter (one) or MultiAdapter (several) for these entries, each loaded once
    per loaded model (kept in `state`) on the UNet's device and dtype."""
    from diffusers import MultiAdapter, T2IAdapter

    if len(state.keys() | {adapter_key(e) for e in entries}) > MAX_LOADED_ADAPTERS:
        state.clear()
    models = []
    for entry in entries:
        key = adapter_key(entry)
        if key not in state:
            loaded = T2IAdapter.from_pretrained(entry.model, use_safetensors=True, local_files_only=True)
            state[key] = loaded.eval()
            on_load(entry)
        # on the UNet's device and dtype now (a later step may have moved the model: a no-op otherwise)
        models.append(state[key].to(device=unet.device, dtype=unet.dtype))
    return models[0] if len(models) == 1 else MultiAdapter(models)


def adapter_arguments(first: Any, images: list) -> dict[str, Any]:
    """The adapter keywords of the diffusers call (a batch shares them: they are in its key)."""
    entries = first.adapters
    one = len(entries) == 1
    return {"image": images[0] if one else images,
            "adapter_conditioning_scale": entries[0].scale if one else [e.scale for e in entries]}
