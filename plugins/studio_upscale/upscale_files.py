"""An upscaler's weights file: checked before the run, read safely at run time.

Checked before anything loads (`studio validate` too, without importing torch or
spandrel): a regular file of a bounded size with a weights suffix; a .safetensors whose
header fits its bytes and whose tensor names are not another kind of model (a Stable
Diffusion checkpoint, a LoRA, ...); a .pth whose pickle would call nothing but torch's
tensor rebuilders (its opcodes are read, never run). At run time the tensors are read
with safetensors, or torch.load(weights_only=True), and only then handed to spandrel
as a state dict (never spandrel's own file loader, which may unpickle).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from studio import UserError
from studio.weights import load_pth, pickled_code, safetensors_problem, safetensors_shapes

SAFETENSORS = ".safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")
SUFFIXES = (SAFETENSORS, *PICKLE_SUFFIXES)
# the largest spandrel architectures (HAT-L, DAT-2) are a few hundred MB; a file many
# times that is a model of another kind, and never read
MAX_UPSCALER_BYTES = 2 * 2**30
WHAT_WORKS = ("give an ESRGAN-family upscaler as model sites ship them (ESRGAN, Real-ESRGAN, SwinIR, "
              "HAT, SPAN, ... : the architectures spandrel recognises) in a .pth or .safetensors file")

# tensor-name marks of the other kinds of model people keep beside their upscalers, in
# the order they are looked for: the first whose mark a key carries names the file
OTHER_KINDS = (
    ("a Stable Diffusion checkpoint", ("model.diffusion_model.",)),
    ("a ControlNet", ("control_model.", "controlnet_cond_embedding.", "input_hint_block.")),
    ("a LoRA", ("lora_down", "lora_up", "lora_A.", "lora_B.", "lora_unet_", "lora_te")),
    ("a textual-inversion embedding", ("emb_params", "string_to_param", "clip_l", "clip_g")),
    ("a diffusers UNet", ("down_blocks.0.resnets.", "mid_block.attentions.")),
    ("a text encoder", ("text_model.", "transformer.resblocks.")),
    ("a VAE", ("post_quant_conv.",)),  # not encoder.down.: RestoreFormer has those
)


def other_kind(keys: list[str]) -> str | None:
    """What a state dict with these tensor names seems to be when it is a model of
    another kind than an upscaler, or None."""
    for what, marks in OTHER_KINDS:
        if any(mark in key for key in keys[:20000] for mark in marks):
            return what
    return None


def file_problem(path: Path) -> str | None:
    """Why the file at `path` cannot be an upscaler's weights, or None. Bounded: only
    the safetensors header, or the pickle's opcodes, are read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file; " + WHAT_WORKS
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        return f"has the suffix {suffix or '(none)'!r}; allowed: {', '.join(SUFFIXES)}"
    if st.st_size > MAX_UPSCALER_BYTES:
        return (f"is {st.st_size / 2**30:.1f} GB; upscalers are at most a few hundred MB (the limit is "
                f"{MAX_UPSCALER_BYTES // 2**30} GB): this is another kind of model")
    if suffix == SAFETENSORS:
        problem = safetensors_problem(path)
        if problem:
            return f"is damaged: {problem}"
        kind = other_kind(list(safetensors_shapes(path)))
        if kind:
            return f"seems to be {kind}, not an upscaler; {WHAT_WORKS}"
        return None
    code = pickled_code(path)
    if code:
        return (f"contains pickled code (loading it would call {code}), refused without running it; Studio loads "
                "only weights: convert it to safetensors where you trust it")
    return None


def read_state_dict(path: Path, model: str) -> dict[str, Any]:
    """The tensors of the upscaler file, read without running anything in it."""
    problem = file_problem(path)
    if problem:
        raise UserError(f"model {model!r} {problem}")
    if path.suffix.lower() == SAFETENSORS:
        from safetensors.torch import load_file

        return load_file(str(path))
    state = load_pth(path)
    if not isinstance(state, dict):
        raise UserError(f"model {model!r}: {path.name} holds a {type(state).__name__}, not a state dict of tensors; "
                        + WHAT_WORKS)
    return state


def load_descriptor(path: Path, model: str) -> Any:
    """spandrel's ImageModelDescriptor for the file: the architecture recognised from the
    tensors' names and shapes. A UserError says what the file seems to be when spandrel
    recognises nothing, or recognises a model that is not an image-to-image one."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    state = read_state_dict(path, model)
    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError:
        keys = [k for k in state if isinstance(k, str)]
        seems = other_kind(keys)
        what = f"seems to be {seems}" if seems else f"is no architecture spandrel recognises (first tensors: {', '.join(keys[:3]) or 'none'})"
        raise UserError(f"model {model!r} {what}; {WHAT_WORKS}") from None
    except (KeyError, ValueError, RuntimeError, IndexError, TypeError, AttributeError) as exc:
        raise UserError(f"model {model!r}: spandrel took it for one architecture but could not build it "
                        f"({type(exc).__name__}: {str(exc)[:200]}); the file is damaged or cut down. {WHAT_WORKS}") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise UserError(f"model {model!r} is a {descriptor.architecture.name} model that needs a mask "
                        f"({descriptor.purpose}), not an upscaler; {WHAT_WORKS}")
    return descriptor
