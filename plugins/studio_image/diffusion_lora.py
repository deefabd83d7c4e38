"""LoRA files for image.diffusion: checked before the run, loaded into a text-to-image
pipeline with diffusers' LoRA loading (the peft backend), switched on per batch.

A LoRA is read as safetensors only. Its layers must fit the base model: every layer
whose name Studio can read (diffusers' and peft's `unet.<module>.lora_A.weight`, kohya's
`lora_unet_<module>.lora_down.weight`, and the text encoder's) is matched by name and
shape against the model's own weights, read from the safetensors headers of both, so
a LoRA made for another base model is refused by `studio validate` with the first
layers that do not fit.

Loaded adapters stay in the pipeline, named by the file's sha256: a sweep over scales
loads each file once, and a batch sets the adapters' weights (peft's set_adapters) and
fuses them into the base weights (diffusers' fuse_lora), which runs faster than peft's
separate adapter matmuls. A copy of each adapted layer's base weight is kept, and put
back when the batch that follows wants other LoRAs or none, so turning LoRA off or
unloading gives the base model back bit for bit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from studio.weights import (file_sha256, named_entry, pickled_code, safetensors_dtypes, safetensors_layout,
                            safetensors_problem, safetensors_shapes)

from studio_image.diffusion_lora_family import TITLES, family_problem, lora_family

MAX_LORAS = 8  # at once on one item; A1111 users stack two or three
# adapters kept loaded in one pipeline across batches before the unused ones are dropped
MAX_LOADED = 16
MAX_SHOWN = 3  # layers named in a message
# diffusers' / peft's names: [component.]module.lora_A[.adapter].weight (lora.down: older diffusers)
PEFT_KEY = re.compile(r"^(?:(unet|text_encoder|text_encoder_2)\.)?(.+?)\.(lora_A|lora_B|lora\.down|lora\.up)"
                      r"(?:\.[A-Za-z0-9_]+)?\.weight$")
# kohya's (A1111's and ComfyUI's usual files): lora_unet_module_with_underscores.lora_down.weight
KOHYA_KEY = re.compile(r"^lora_(unet|te|te1|te2)_(.+?)\.(lora_down|lora_up)\.weight$")
COMPONENT = {"unet": "unet", "te": "text_encoder", "te1": "text_encoder", "te2": "text_encoder_2"}
DOWN = ("lora_A", "lora.down", "lora_down")
FUSED = ("unet", "text_encoder")  # the components diffusers' Stable Diffusion LoRA loading adapts
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # what a LoRA's weights are stored as
# LoRA files are megabytes to a few hundred; a file past this is a model or a mistake, and
# validate would spend seconds hashing it
MAX_LORA_BYTES = 4 * 2**30
# validate reads a LoRA's values for NaN and Inf up to this size (a tenth of a second);
# larger files are checked when the run loads them
MAX_VALUES_CHECKED = 256 * 2**20
# dtype -> (unsigned integer of its width, the exponent bits: all set is Inf or NaN)
EXPONENT_BITS = {"F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80), "F32": ("<u4", 0x7F800000),
                 "F64": ("<u8", 0x7FF0000000000000)}


class Lora(BaseModel):
    """One LoRA file and how strongly it applies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(None, min_length=1, max_length=1000, description=(
        "A LoRA .safetensors file (diffusers, peft or kohya layout), relative to the pipeline file."))
    name: str | None = Field(None, min_length=1, max_length=1000, description=(
        "Instead of path: a LoRA in your model folders by name (`studio models list --kind lora`)."))
    scale: float = Field(1.0, ge=-10.0, le=10.0, description="How strongly it applies; 0 gives the base model.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "Filled in by Studio for the manifest and the cache key; when given, the file must have this hash."))

    @model_validator(mode="before")
    @classmethod
    def name_becomes_path(cls, data: Any, info: ValidationInfo) -> Any:
        """A `name:` is looked up in the user's model folders and recorded as the file's path."""
        return named_entry(data, info, field="path", kind="lora", fields=cls.model_fields,
                           needs="a LoRA entry needs `path:` (a file) or `name:` (a LoRA in your model folders)",
                           both="give a LoRA's `path:` or its `name:`, not both")


def checked(lora: Lora, path: Path) -> Lora:
    """The entry with its resolved path and sha256, or a ValueError saying what is wrong
    with the file."""
    where = f"lora {lora.path!r}"
    try:
        found = path.exists()
    except (OSError, ValueError):  # a NUL byte in the path, a name too long for the file system
        found = False
    if not found:
        raise ValueError(f"{where} not found (looked in {clip(str(path), 300)!r}); give a path relative to the "
                         "pipeline file")
    if not path.is_file():
        raise ValueError(f"{where} is not a file; give one LoRA .safetensors file")
    size = path.stat().st_size
    if size > MAX_LORA_BYTES:
        raise ValueError(f"{where} is {size / 2**30:.1f} GB; a LoRA file is megabytes (at most "
                         f"{MAX_LORA_BYTES // 2**30} GB here): is it a model's weights?")
    if path.suffix.lower() != ".safetensors":
        code = _pickled_code(path) if path.suffix.lower() in (".bin", ".pt", ".pth", ".ckpt") else None
        pickled = f" (its pickle would call {code})" if code else ""
        raise ValueError(f"{where} is a {path.suffix or 'suffix-less'} file{pickled}; Studio reads LoRA weights as "
                         ".safetensors only, never a pickle. Convert it where you trust it: "
                         "safetensors.torch.save_file(torch.load(path, weights_only=True), 'lora.safetensors')")
    problem = safetensors_problem(path)
    if problem:
        raise ValueError(f"{where}: {problem}")
    problem = nonfinite_problem(path)
    if problem:
        raise ValueError(f"{where} {problem}")
    digest = file_sha256(path)
    if lora.sha256 and lora.sha256 != digest:
        raise ValueError(f"{where} has sha256 {digest}, not the {lora.sha256} the pipeline pins; it was replaced "
                         "or is another file")
    return lora.model_copy(update={"path": str(path.resolve()), "sha256": digest})



def checked_all(loras: list[Lora], resolve: Callable[[str], Path], model_root: Path | None) -> list[Lora]:
    """An item's LoRA entries, each checked (see `checked`) at its path as `resolve`
    finds it, none listed twice, each fitting the pipeline in `model_root`; a ValueError
    says which does not."""
    found = [checked(lora, resolve(lora.path)) for lora in loras]
    seen: dict[str, str] = {}
    for lora in found:
        if lora.sha256 in seen:
            raise ValueError(f"lora {lora.path!r} is listed twice (also as {seen[lora.sha256]!r}); give it "
                             "once, with the scales added")
        seen[lora.sha256] = lora.path
        problem = None
        if model_root is not None and model_root.is_dir():
            problem = fit_problem(Path(lora.path), model_root)
        elif model_root is not None and model_root.is_file():  # a single file: its layers have the original names
            problem = family_problem(Path(lora.path), model_root)
        if problem:
            raise ValueError(f"lora {lora.path!r} {problem}")
    return found

MAX_PICKLE_SCANNED = 2**20  # bytes of pickle read to name the code it would call: the file is refused anyway


def _pickled_code(path: Path) -> str | None:
    """What a pickle given as a LoRA would call, for the message, when its pickle is small
    enough to read at once (the file is refused either way; millions of opcodes would
    take validate seconds)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                sizes = [i.file_size for i in archive.infolist() if i.filename.endswith("data.pkl")]
            small = bool(sizes) and sizes[0] <= MAX_PICKLE_SCANNED
        else:
            small = path.stat().st_size <= MAX_PICKLE_SCANNED
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return pickled_code(path) if small else None


def nonfinite_problem(path: Path) -> str | None:
    """Why a LoRA's weights cannot be applied: a tensor holding NaN or Inf (a training
    run that diverged, a damaged file), or None. Read from the raw bytes of each float
    tensor, by its exponent bits, a piece at a time; a file larger than
    MAX_VALUES_CHECKED, or one met once validation's time budget is spent, is left to
    the run, which checks the loaded tensors (see activate). Check the header first."""
    from studio.sniff import checks_deferred

    st = os.stat(path)
    if st.st_size > MAX_VALUES_CHECKED or checks_deferred():
        return None
    return _nonfinite_problem(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _nonfinite_problem(path: str, size: int, mtime_ns: int) -> str | None:
    import numpy as np

    from studio.sniff import checks_deferred

    with open(path, "rb") as f:
        for key, dtype, _, begin, end in safetensors_layout(Path(path)):
            if dtype not in EXPONENT_BITS:
                continue
            kind, bits = EXPONENT_BITS[dtype]
            f.seek(begin)
            for at in range(begin, end, 2**22):
                if checks_deferred():  # validation's budget ran out: the run checks the loaded tensors
                    return None
                values = np.frombuffer(f.read(min(end - at, 2**22)), dtype=kind)
                if ((values & np.array(bits, dtype=kind)) == bits).any():
                    return (f"holds NaN or Inf values (tensor {clip(key, 160)!r}, {dtype}): the file is damaged, "
                            "or was saved from a training run that diverged; use another LoRA file or train it again")
    return None


def fit_problem(lora: Path, model_root: Path) -> str | None:
    """Why a LoRA's layers do not fit the text-to-image pipeline in `model_root`, or None."""
    shapes, dtypes = safetensors_shapes(lora), safetensors_dtypes(lora)
    layers: dict[tuple[str, str], dict[str, list[int]]] = {}
    names: dict[tuple[str, str], dict[str, str]] = {}
    for key, shape in shapes.items():
        if (PEFT_KEY.match(key) or KOHYA_KEY.match(key)) and dtypes[key] not in FLOAT_DTYPES:
            return (f"holds {dtypes[key]} numbers in tensor {clip(key, 160)!r}; a LoRA's weights are floating point "
                    f"({', '.join(FLOAT_DTYPES)}): the file is damaged or not a LoRA")
        found = PEFT_KEY.match(key)
        if found:
            component, module, part = found.group(1) or "unet", found.group(2), found.group(3)
            layers.setdefault((component, module), {})["down" if part in DOWN else "up"] = shape
            names.setdefault((component, module), {})["down" if part in DOWN else "up"] = key
            continue
        found = KOHYA_KEY.match(key)
        if found:
            component, module, part = COMPONENT[found.group(1)], found.group(2), found.group(3)
            layers.setdefault((component, "_" + module), {})["down" if part in DOWN else "up"] = shape
            names.setdefault((component, "_" + module), {})["down" if part in DOWN else "up"] = key
    if not layers:
        first = ", ".join(list(shapes)[:MAX_SHOWN]) or "none"
        return (f"holds no LoRA layers (no lora_A/lora_B or lora_down/lora_up weights; its first tensors: {first}); "
                "give a LoRA file, not a model's weights")
    for layer, parts in layers.items():
        problem = _pair_problem(parts, names[layer])
        if problem:
            return problem
    bases = {name: base_modules(model_root / name) for name in {c for c, _ in layers}}
    misfits = []
    for (component, module), parts in layers.items():
        base = bases[component]
        if module.startswith("_"):  # kohya: underscores stand for the dots of the module's name
            target = base["underscored"].get(_unwrapped(module[1:], "_"))
            label = f"lora_{component}_{module[1:]}"
        else:
            target, label = base["modules"].get(_unwrapped(module, ".")), f"{component}.{module}"
        if target is None:
            misfits.append(f"{label} (the model has no such layer in {component}/)")
            continue
        down, up = parts.get("down"), parts.get("up")
        if (down and len(down) > 1 and down[1] != target[1]) or (up and up[0] != target[0]):
            misfits.append(f"{label} (maps {_dims(down, 1)} -> {_dims(up, 0)} features; the model's layer is "
                           f"{target[1]} -> {target[0]})")
    if not misfits:
        return None
    made_for = lora_family(lora)  # what it was made for, when the file says
    other = f"{TITLES[made_for[0]]} ({made_for[1]})" if made_for else "another base model"
    return (f"does not fit this model: {len(misfits)} of its {len(layers)} layers do not match, e.g. "
            f"{'; '.join(misfits[:MAX_SHOWN])}. It was made for {other}; use a LoRA trained on this one")


def _pair_problem(parts: dict[str, list[int]], names: dict[str, str]) -> str | None:
    """Why a layer's down and up matrices cannot make a LoRA update (up @ down), or None:
    both are there, each a matrix (or a convolution's 4-D kernel), and the rank the
    down matrix maps to is the rank the up matrix maps from."""
    for half, other in (("down", "up"), ("up", "down")):
        if half not in parts:
            return (f"has {clip(names[other], 160)!r} without its {half} matrix (lora_A/lora_B or "
                    "lora_down/lora_up come in pairs): the file is incomplete or damaged")
    down, up = parts["down"], parts["up"]
    for half, shape in (("down", down), ("up", up)):
        if len(shape) not in (2, 4) or 0 in shape:
            return (f"has {clip(names[half], 160)!r} of shape {shape}; a LoRA matrix is 2-D (or a 4-D convolution "
                    "kernel) with no empty side: the file is damaged or not a LoRA")
    if down[0] != up[1]:
        return (f"has {clip(names['down'], 160)!r} of rank {down[0]} and {clip(names['up'], 160)!r} of rank {up[1]}; "
                "a layer's two matrices share one rank: the file is damaged")
    return None


def _unwrapped(module: str, dot: str) -> str:
    """A text encoder's layer name without transformers 4's `text_model.` wrapper, which
    transformers 5 dropped: files saved under either name the same layers."""
    return module.removeprefix(f"text_model{dot}")


def _dims(shape: list[int] | None, axis: int) -> str:
    return str(shape[axis]) if shape and len(shape) > axis else "?"


def base_modules(folder: Path) -> dict[str, dict[str, list[int]]]:
    """A component's layers with weights, from the headers of its safetensors files:
    {"modules": name -> weight shape, "underscored": the same with dots as underscores}."""
    modules: dict[str, list[int]] = {}
    if folder.is_dir():
        for file in sorted(folder.glob("*.safetensors"))[:64]:
            if safetensors_problem(file):
                continue  # the model's own check names it
            for key, shape in safetensors_shapes(file).items():
                if key.endswith(".weight") and len(shape) >= 2:
                    modules[_unwrapped(key[: -len(".weight")], ".")] = shape
    return {"modules": modules, "underscored": {name.replace(".", "_"): s for name, s in modules.items()}}


def adapter_name(lora: Lora) -> str:
    return f"lora_{lora.sha256[:16]}"


def activate(pipe: Any, loras: list[Lora], lora_scale: float, state: dict, on_load=None) -> None:
    """Make `loras` at their scales (times `lora_scale`) the pipeline's adapters, fused
    into the base weights for the batch (one matmul a layer instead of three: faster
    wherever a batch outweighs the fuse), loading each file the first time it is asked
    for; with no loras, the base weights exactly as loaded. `state` is kept with the
    loaded model between batches: what is fused, and the base weights to go back to."""
    wanted = [(adapter_name(lora), lora.scale * lora_scale) for lora in loras]
    if state.get("fused") == wanted:
        return  # fused as this batch asks already (a sweep's next batch at the same scale)
    _unfuse(pipe, state)
    loaded = {name for names in pipe.get_list_adapters().values() for name in names}
    if not wanted:
        if loaded:
            pipe.disable_lora()
        return
    names = [name for name, _ in wanted]
    _forget_unused(pipe, loaded, set(names))
    for lora, name in zip(loras, names):
        if name not in loaded:
            # read as tensors here, so diffusers is handed no path it could read another way
            tensors = load_tensors(lora)
            try:
                pipe.load_lora_weights(tensors, adapter_name=name)
            except Exception as exc:
                from studio import UserError
                from studio.weights import short

                if _out_of_memory(exc):
                    raise
                raise UserError(f"lora {lora.path!r} could not be loaded into the model: {short(exc)}") from None
            if on_load is not None:
                on_load(lora)
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=[weight for _, weight in wanted])
    _fuse(pipe, state, names)
    state["fused"] = wanted


def load_tensors(lora: Lora) -> dict[str, Any]:
    """A LoRA file's tensors (safetensors, on the CPU), each float tensor checked for NaN
    and Inf before anything is applied: a UserError names the file and the tensor."""
    import torch
    from safetensors.torch import load_file

    from studio import UserError
    from studio.weights import short

    try:
        tensors = load_file(lora.path)
    except Exception as exc:  # changed on disk since it was checked: a damaged file, in words
        if _out_of_memory(exc):
            raise
        raise UserError(f"lora {lora.path!r} could not be read as safetensors: {short(exc)}; copy or save it "
                        "again") from None
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"lora {lora.path!r} holds NaN or Inf values (tensor {clip(key, 160)!r}, "
                            f"{str(tensor.dtype).removeprefix('torch.')}): the file is damaged, or was saved from a "
                            "training run that diverged; use another LoRA file or train it again")
    return tensors


def _out_of_memory(exc: BaseException) -> bool:
    """Running out of memory is not the file's fault: it propagates (Studio halves the batch)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def clip(text: str, limit: int = 80) -> str:
    """A name from a user's file for a message: never thousands of characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _lora_layers(pipe: Any) -> dict[str, Any]:
    """The layers peft wrapped, by component and name."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = {}
    for component in FUSED:
        module = getattr(pipe, component, None)
        if module is not None:
            layers |= {f"{component}.{name}": layer for name, layer in module.named_modules()
                       if isinstance(layer, BaseTunerLayer)}
    return layers


def _fuse(pipe: Any, state: dict, names: list[str]) -> None:
    """Fuse the active adapters at their weights, first keeping a copy of each wrapped
    layer's base weight: unfusing subtracts what was added, which is not exact in
    floating point, and the copy is."""
    import torch

    saved = state.setdefault("base", {})
    with torch.no_grad():
        for key, layer in _lora_layers(pipe).items():
            if key not in saved:
                saved[key] = layer.get_base_layer().weight.detach().clone()
    pipe.fuse_lora(components=[c for c in FUSED if getattr(pipe, c, None) is not None], lora_scale=1.0,
                   adapter_names=names)


def _unfuse(pipe: Any, state: dict) -> None:
    """Back to the base weights, bit for bit."""
    import torch

    if not state.get("fused"):
        return
    pipe.unfuse_lora(components=[c for c in FUSED if getattr(pipe, c, None) is not None])
    with torch.no_grad():
        for key, layer in _lora_layers(pipe).items():
            if key in state["base"]:
                layer.get_base_layer().weight.copy_(state["base"][key])
    state["fused"] = None


def _forget_unused(pipe: Any, loaded: set[str], wanted: set[str]) -> None:
    """Drop adapters no batch asked for lately once more than MAX_LOADED are kept."""
    unused = sorted(loaded - wanted)
    if len(loaded | wanted) > MAX_LOADED and unused:
        pipe.delete_adapters(unused)
