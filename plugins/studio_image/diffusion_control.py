"""ControlNets for image.diffusion: the `controlnets:` entries, their checks before the
run, and their loading (once per folder, kept beside the loaded pipeline).

A ControlNet is a diffusers ControlNet folder (config.json and
diffusion_pytorch_model.safetensors) or a single file, given by `model:` (a path) or
`name:` (a ControlNet in the user's model folders). Its control image is not in the entry: media
inside a list of mappings is not resolved by the host (a `${steps...}` reference there is
refused), so the images are the parallel media list `control_images:`, one per entry and
in the same order. That keeps the control image a real media input: a file, or the output
of an upstream step (a preprocessor), checked and hashed as every media input is.

Single files as model sites ship them (`control_v11p_sd15_canny.safetensors`: the original
`control_model.input_blocks...` layout, or diffusers' own keys) load through diffusers'
ControlNetModel.from_single_file with a configuration folder: the entry's `config:`, else
the one Studio ships (single_file_configs/controlnet-sd1, controlnet-sdxl) for the family
its header shows (the cross-attention width of its first attention layer).

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

from studio.weights import config, named_entry, safetensors_problem, weights_fingerprint

MAX_CONTROLNETS = 4  # at once on one item; artists stack two or three
# ControlNets kept loaded beside one model across batches; past it they are dropped and reload
MAX_LOADED_CONTROLNETS = 8
WEIGHTS = "diffusion_pytorch_model.safetensors"
# what must agree between a ControlNet and the UNet it steers
FAMILY_KEYS = ("cross_attention_dim", "block_out_channels", "addition_embed_type")
SHIPPED = Path(__file__).parent / "single_file_configs"  # controlnet-sd1/, controlnet-sdxl/: configs only
# the first cross-attention's key projection: [320, cross-attention width] (the original layout, diffusers')
LDM_ATTENTION = "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
DIFFUSERS_ATTENTION = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"


class ControlNet(BaseModel):
    """One ControlNet and how it steers; its image is control_images' entry at its index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, min_length=1, max_length=1000, description=(
        "A diffusers ControlNet folder (config.json, diffusion_pytorch_model.safetensors), or a single "
        ".safetensors file as model sites ship it (SD 1.x and SDXL recognised from the file), relative to the "
        "pipeline file."))
    name: str | None = Field(None, min_length=1, max_length=1000, description=(
        "Instead of model: a ControlNet in your model folders by name (`studio models list --kind controlnet`)."))
    config: str | None = Field(None, min_length=1, max_length=1000, description=(
        "With a single file: a folder holding its ControlNet config.json, for a file Studio does not recognise "
        "(SD 2.x, a cut-down one)."))
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
        """A `name:` is looked up in the user's model folders and recorded as the folder's path."""
        return named_entry(data, info, field="model", kind="controlnet", fields=cls.model_fields,
                           needs="a ControlNet entry needs `model:` (a ControlNet folder) or `name:` (a ControlNet in "
                                 "your model folders)",
                           both="give a ControlNet's `model:` or its `name:`, not both")

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
        if path.suffix.lower() != ".safetensors":
            return (f"{where} is a {path.suffix or 'suffix-less'} file; Studio reads ControlNet weights as "
                    ".safetensors only, never a pickle: convert it where you trust it, or use the .safetensors release")
        return safetensors_problem(path) and f"{where}: {safetensors_problem(path)}"
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
        problem = controlnet_problem(path, where)
        folder = None if problem else config_folder(path, entry.config and resolve(entry.config), where)
        problem = problem or family_problem(config(folder), unet, where, model)
        if problem:
            raise ValueError(problem)
        resolved = str(path.resolve())
        out.append(entry.model_copy(update={"model": resolved, "config": str(folder) if path.is_file() else None,
                                            "fingerprint": weights_fingerprint(resolved, path)}))
    return out


def config_folder(path: Path, given: Path | None, where: str) -> Path:
    """The folder of a ControlNet's config.json: its own (a folder), the `config:` given,
    or the one Studio ships for the family a single file's header shows. A ValueError
    says why there is none."""
    if path.is_dir():
        if given is not None:
            raise ValueError(f"{where} is a folder with its own config.json: config applies to a single file; drop "
                             "config")
        return path
    if given is not None:
        if not (given / "config.json").is_file():
            raise ValueError(f"{where}: its config {str(given)[:300]!r} holds no config.json; give the folder of a "
                             "ControlNet's config.json")
        return given
    family = single_file_family(path)
    if family is None:
        raise ValueError(f"{where}: Studio does not recognise this single file as an SD 1.x or SDXL ControlNet (no "
                         f"{LDM_ATTENTION!r} or {DIFFUSERS_ATTENTION!r} with a width of 768 or 2048); give config: "
                         "a folder with its ControlNet config.json")
    return SHIPPED / family


def single_file_family(path: Path) -> str | None:
    """The shipped config folder's name for a single-file ControlNet, from its header."""
    from studio.weights import safetensors_shapes

    shapes = safetensors_shapes(path)
    shape = shapes.get(LDM_ATTENTION) or shapes.get(DIFFUSERS_ATTENTION)
    width = shape[1] if shape and len(shape) == 2 else None
    return {768: "controlnet-sd1", 2048: "controlnet-sdxl"}.get(width)


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
    """The ControlNet (one) or a list of them (several: diffusers' pipelines make a
    MultiControlNetModel of it) for these entries, each loaded once per loaded model (kept
    in `state` under control_key) on the UNet's device and dtype."""
    models = []
    for entry in entries:
        key = control_key(entry)
        if key not in state:
            try:
                loaded = loaded_controlnet(Path(entry.model), entry.config)
            except (ValueError, RuntimeError, KeyError, OSError) as exc:  # weights that do not fit their config
                from studio import UserError

                raise UserError(f"ControlNet {entry.model!r} does not load on its config "
                                f"{entry.config or entry.model!r}: {str(exc)[:400]}; give config: the folder of the "
                                "config it was made with") from None
            state[key] = loaded.eval()
            on_load(entry)
        # on the UNet's device and dtype now (a later step may have moved the model: a no-op otherwise)
        models.append(state[key].to(device=unet.device, dtype=unet.dtype))
    return models[0] if len(models) == 1 else models


def control_key(entry: ControlNet) -> str:
    """What identifies a loaded ControlNet: its weights, their version and its config."""
    return f"{entry.model}|{entry.fingerprint}|{entry.config}"


def loaded_controlnet(path: Path, config_dir: str | None) -> Any:
    """A ControlNet folder, or a single file on its config folder: the original layout
    through diffusers' from_single_file, diffusers' own keys loaded as they are."""
    from diffusers import ControlNetModel

    if path.is_dir():
        return ControlNetModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
    if config_dir is None:
        raise ValueError(f"ControlNet {str(path)!r} needs its config folder (checked before the run)")
    from studio.weights import safetensors_shapes

    if any(key.startswith("control_model.") for key in safetensors_shapes(path)):
        return ControlNetModel.from_single_file(str(path), config=config_dir, local_files_only=True)
    from safetensors.torch import load_file

    model = ControlNetModel.from_config(ControlNetModel.load_config(config_dir))
    model.load_state_dict(load_file(path), strict=True)
    return model


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
