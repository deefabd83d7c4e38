"""Single-file Stable Diffusion checkpoints (`model: dreamshaper_8.safetensors`), as
model sites ship them: recognised from their header, loaded offline.

Recognition reads the safetensors header alone (names, dtypes, shapes; no weight), with
studio.weights' guards, and tells the family apart by the UNet's own tensors, as
diffusers' and ComfyUI's loaders do:
- SDXL has `label_emb` (its size conditioning): 2816 inputs for the base, 2560 for the
  refiner;
- otherwise the cross-attention's key projection reads the text encoder's width: 768 for
  SD 1.x (CLIP ViT-L), 1024 for SD 2.x (OpenCLIP ViT-H);
- the first convolution takes 9 channels in an inpainting checkpoint (latents, mask and
  masked image), 4 otherwise;
- `first_stage_model.*` is a baked-in VAE; the text encoders live in `cond_stage_model.*`
  (SD 1.x/2.x) or `conditioner.embedders.*` (SDXL).
SD 2.x's two kinds cannot be told apart from the weights: the 768 models (2.0-v, 2.1 and
most fine-tunes) predict v, the 512-base ones noise. Studio takes v-prediction at 768 for an
SD 2.x text-to-image file (as diffusers' own single-file loading does) unless the file carries
ComfyUI's `v_pred` marker tensor or `prediction:` says otherwise; SD 2.x inpainting is
epsilon at 512, as Stability AI trained it.

Loading goes through diffusers' `from_single_file` with a configuration folder Studio ships
(single_file_configs/<family>: configs only, no weights) or the user's `config:` folder, and
CLIP's tokenizer built from open_clip's vocabulary (studio_diffusers.clip_vocab), with
`local_files_only`: nothing is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from studio.weights import pickled_code, safetensors_layout, safetensors_problem, safetensors_shapes, weights_problem

CONFIGS = Path(__file__).parent / "single_file_configs"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")  # read with torch.load(weights_only=True) only
SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
LABEL_EMB = UNET + "label_emb.0.0.weight"
CROSS_KEY = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
VAE_PREFIX = "first_stage_model."
DTYPES = {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}
CONFIG_FIX = ("give `config:` a diffusers folder of this model's configs (model_index.json, unet/, vae/, "
              "text_encoder/, scheduler/; weights not needed), or convert the file to a diffusers folder")


@dataclass(frozen=True)
class Family:
    """A kind of checkpoint Studio ships a configuration folder for."""

    name: str  # its folder under single_file_configs/
    title: str
    size: int  # the side it was trained at, in pixels
    text_prefixes: tuple[str, ...]  # where its text encoders' weights are
    text_layers: int | None  # layers of its one CLIP text encoder (None: SDXL's two)
    inpainting: bool = False
    refiner: bool = False


SD1_TEXT = ("cond_stage_model.transformer.",)
SD2_TEXT = ("cond_stage_model.model.",)
XL_TEXT = ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")
FAMILIES = {f.name: f for f in (
    Family("sd1", "Stable Diffusion 1.x", 512, SD1_TEXT, 12),
    Family("sd1-inpaint", "Stable Diffusion 1.x inpainting", 512, SD1_TEXT, 12, inpainting=True),
    Family("sd2", "Stable Diffusion 2.x", 768, SD2_TEXT, 23),
    Family("sd2-inpaint", "Stable Diffusion 2.x inpainting", 512, SD2_TEXT, 23, inpainting=True),
    Family("sdxl", "Stable Diffusion XL base", 1024, XL_TEXT, None),
    Family("sdxl-inpaint", "Stable Diffusion XL inpainting", 1024, XL_TEXT, None, inpainting=True),
    Family("sdxl-refiner", "Stable Diffusion XL refiner", 1024, ("conditioner.embedders.0.model.",), None,
           refiner=True),
)}


@dataclass(frozen=True)
class Checkpoint:
    """What a single file's header says about it."""

    family: Family | None  # None: not a checkpoint Studio recognises
    found: str  # what was recognised, in words, for messages
    dtype: str | None = None  # the UNet's: "fp16", "bf16", "fp32"
    has_vae: bool = False
    has_text_encoder: bool = False
    v_pred_marker: bool = False  # ComfyUI's `v_pred` tensor

    def prediction(self, asked: str = "default") -> str:
        """The noise prediction it is sampled with: as asked, else the family's rule."""
        if asked != "default":
            return asked
        if self.family is not None and self.family.name == "sd2" or self.v_pred_marker:
            return "v_prediction"
        return "epsilon"


def recognise(path: Path) -> Checkpoint:
    """The checkpoint family of a single .safetensors file, from its header alone. A
    ValueError says why the file is damaged (safetensors_problem's words)."""
    problem = safetensors_problem(path)
    if problem:
        raise ValueError(problem)
    shapes = {name: (dtype, shape) for name, dtype, shape, _, _ in safetensors_layout(path)}
    return recognise_shapes(shapes)


def recognise_state(state: dict[str, Any]) -> Checkpoint:
    """recognise, for a state dict torch.load read (a .ckpt: `state_dict` inside)."""
    inner = state.get("state_dict") if isinstance(state.get("state_dict"), dict) else state
    dtypes = {"torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float32": "F32"}
    return recognise_shapes({name: (dtypes.get(str(getattr(t, "dtype", "")), "F32"), tuple(getattr(t, "shape", ())))
                             for name, t in inner.items() if isinstance(name, str)})


def recognise_shapes(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> Checkpoint:
    """recognise, given each tensor's (dtype, shape) by name."""
    found = _recognise_unet(tensors)
    return replace(found, has_vae=any(name.startswith(VAE_PREFIX) for name in tensors))


def _recognise_unet(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> Checkpoint:
    conv_in = tensors.get(CONV_IN)
    if conv_in is None or len(conv_in[1]) != 4:
        return Checkpoint(None, f"no Stable Diffusion UNet ({CONV_IN} is absent): {_prefixes(tensors)}")
    dtype, in_channels = DTYPES.get(conv_in[0], conv_in[0].lower()), conv_in[1][1]
    if in_channels not in (4, 9):
        return Checkpoint(None, f"a UNet whose first convolution takes {in_channels} channels (4: text-to-image, "
                                "9: inpainting; others are InstructPix2Pix, depth or upscaler models)", dtype)
    inpainting = in_channels == 9
    label = tensors.get(LABEL_EMB)
    cross = tensors.get(CROSS_KEY)
    if label is not None and len(label[1]) == 2:
        kind = {2816: "sdxl-inpaint" if inpainting else "sdxl", 2560: "sdxl-refiner"}.get(label[1][1])
        what = f"an SDXL-like UNet whose size conditioning takes {label[1][1]} inputs (base: 2816, refiner: 2560)"
    elif cross is not None and len(cross[1]) == 2:
        kind = {768: "sd1", 1024: "sd2"}.get(cross[1][1])
        kind = kind and kind + ("-inpaint" if inpainting else "")
        what = f"a UNet whose cross-attention reads {cross[1][1]}-wide text (SD 1.x: 768, SD 2.x: 1024)"
    else:
        return Checkpoint(None, f"a UNet without the cross-attention of Stable Diffusion ({CROSS_KEY} is absent)",
                          dtype)
    family = FAMILIES.get(kind) if kind else None
    if family is None:
        return Checkpoint(None, what, dtype)
    has_text = all(any(name.startswith(p) for name in tensors) for p in family.text_prefixes)
    return Checkpoint(family, family.title, dtype, False, has_text, "v_pred" in tensors)


def _prefixes(tensors: dict[str, Any]) -> str:
    """What the tensor names say the file is instead, for a message."""
    names = list(tensors)
    if any("lora_down" in n or "lora_A" in n or n.startswith("lora_") for n in names):
        return f"LoRA weights ({len(names):,} tensors): give it in loras: [{{path: ...}}] beside a checkpoint"
    if any(n.startswith(("encoder.", "decoder.")) for n in names):
        return f"a VAE alone ({len(names):,} tensors): give it as vae: beside a checkpoint"
    counts: dict[str, int] = {}
    for name in names:
        head = name.split(".")[0][:60]
        counts[head] = counts.get(head, 0) + 1
    shown = ", ".join(f"{head}.* ({n:,})" for head, n in list(counts.items())[:4])
    return f"its tensors are named {shown}" if counts else "it holds no tensors"


def family_config(checkpoint: Checkpoint) -> Path:
    assert checkpoint.family is not None
    return CONFIGS / checkpoint.family.name


def single_file_problem(model: str, root: Path | None, config: str | None, prediction: str = "default") -> str | None:
    """Why the single file `model` (at `root`) cannot load, or None (None too for a
    folder, judged elsewhere): damaged, not a family Studio recognises (unless `config:`
    describes it), no text encoder, or a pickle that would call code."""
    if root is not None and root.is_dir() and config is not None:
        return (f"config {config!r} applies to a single-file model; model {model!r} is a folder with configs of "
                "its own: drop config")
    if root is None or not root.is_file():
        return None
    if config is not None:  # the configs' own code is refused as a model folder's is
        problem = weights_problem(config, Path(config))
        if problem:
            return "config" + problem.removeprefix("model")
    if root.suffix.lower() in PICKLE_SUFFIXES:
        code = pickled_code(root)
        if code:
            return (f"model {model!r}: {root.name} is not a plain checkpoint of tensors: it contains pickled code "
                    f"(loading it would call {code}), refused without running it. Use the model's .safetensors "
                    "file, or convert this one where you trust it (safetensors.torch.save_file)")
        return None  # plain tensors: torch.load(weights_only=True) reads it at run time
    return checkpoint_problem(model, root, config)


def checkpoint_problem(model: str, path: Path, config: str | None) -> str | None:
    """single_file_problem for a .safetensors file."""
    try:
        found = recognise(path)
    except ValueError as exc:
        return f"model {model!r}: {exc}"
    if found.family is None:
        if config is not None:
            return None
        return (f"model {model!r} is not a single-file checkpoint Studio recognises: it found {found.found}. "
                f"Studio recognises {', '.join(f.title for f in FAMILIES.values())}; {CONFIG_FIX}")
    if not found.has_text_encoder and config is None:
        return (f"model {model!r} ({found.family.title}) holds no text encoder "
                f"({' and '.join(p + '*' for p in found.family.text_prefixes)} are absent): it is a UNet alone; "
                f"{CONFIG_FIX} with the text encoder's weights")
    return None


def vae_problem(model: Any, vae: str | None, config: str | None) -> str | None:
    """Why `vae` cannot be used, or why a single-file `model` needs one (its file has no
    VAE baked in); None when all is well."""
    if vae is not None:
        path = Path(vae)
        if path.is_dir():
            problem = weights_problem(vae, path)
            return problem and "vae" + problem.removeprefix("model")
        try:
            found = recognise(path)
        except ValueError as exc:
            return f"vae {vae!r}: {exc}"
        names = ("encoder.conv_in.weight", "first_stage_model.encoder.conv_in.weight", "vae.encoder.conv_in.weight")
        if not any(n in safetensors_shapes(path) for n in names):
            return (f"vae {vae!r} is not a VAE file ({names[0]} is absent): give a VAE (.safetensors in the "
                    "single-file or diffusers layout, or a diffusers VAE folder)")
        return None
    root = Path(model) if isinstance(model, str) else None
    if root is None or not root.is_file() or root.suffix.lower() != ".safetensors":
        return None
    try:
        found = recognise(root)
    except ValueError:
        return None  # the model's own message says it
    if not found.has_vae:
        return (f"model {model!r} has no VAE baked in (no {VAE_PREFIX}* tensors): give vae, a VAE file or folder "
                "for its family (e.g. the VAE its model page recommends)")
    return None


# -- loading ------------------------------------------------------------------------


def load_single_file(path: Path, config: Path | None, vae: Path | None, prediction: str, inpainting: bool,
                     shared: dict[str, Any] | None = None) -> Any:
    """The diffusers pipeline of a single-file checkpoint: its family's shipped configs
    (or `config`), CLIP's tokenizers built here, `vae` in place of the baked-in one, the
    scheduler set to `prediction` ("default": the family's rule), `shared` components
    (a refiner's, from its base) in place of the file's. Nothing is fetched; no
    invisible watermark (an SDXL pipeline's is off: Studio decides, not what is installed)."""
    import diffusers

    from studio_image.diffusion_pipeline import watermark_off
    import torch

    # a .ckpt is read in full to be recognised: only when there is no config to go by
    safetensors = path.suffix.lower() == ".safetensors"
    checkpoint = recognise(path) if safetensors else _recognise_pickle(path) if config is None else None
    if config is None:
        if checkpoint is None or checkpoint.family is None:
            raise ValueError(f"{path.name} is not a checkpoint Studio recognises; {CONFIG_FIX}")
        config = family_config(checkpoint)
    index = _read_json(config / "model_index.json")
    pipeline_class = getattr(diffusers, str(index.get("_class_name")), None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise ValueError(f"config {str(config)!r} names the pipeline {index.get('_class_name')!r}, which diffusers "
                         "cannot load from a single file")
    components: dict[str, Any] = tokenizers(config, index)
    if vae is not None:
        components["vae"] = load_vae(vae, config / "vae")
    components.update(shared or {})
    pipe = pipeline_class.from_single_file(str(path), config=str(config), local_files_only=True,
                                           torch_dtype=torch.float32, **watermark_off(pipeline_class), **components)
    asked = checkpoint.prediction(prediction) if checkpoint is not None else prediction
    if asked != "default" and pipe.scheduler.config.get("prediction_type") != asked:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=asked)
    if inpainting and "Inpaint" not in type(pipe).__name__:
        pipe = diffusers.AutoPipelineForInpainting.from_pipe(pipe, **watermark_off(type(pipe)))
    return pipe


def _recognise_pickle(path: Path) -> Checkpoint:
    """recognise for a .ckpt: torch.load(weights_only=True) reads it (plain tensors only;
    a UserError for anything else), and diffusers reads it again the same way."""
    from studio.weights import load_pth

    state = load_pth(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} holds {type(state).__name__}, not a state dict of tensors")
    found = recognise_state(state)
    del state
    return found


def tokenizers(config: Path, index: dict[str, Any]) -> dict[str, Any]:
    """CLIP tokenizers for the pipeline's tokenizer entries that `config` has no folder
    for. OpenCLIP's encoders (gelu; SD 2.x, SDXL's second) pad with '!', OpenAI's CLIP
    with '<|endoftext|>', as their Hugging Face tokenizers do."""
    from studio_diffusers.clip_vocab import clip_tokenizer

    made = {}
    for name, encoder in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        entry = index.get(name)
        if not (isinstance(entry, list) and entry and entry[0]) or (config / name).is_dir():
            continue
        encoder_config = _read_json(config / encoder / "config.json")
        # the encoder's window: 77 in every real family, less in a cut-down config
        window = encoder_config.get("max_position_embeddings")
        window = window if isinstance(window, int) and 2 <= window <= 77 else 77
        made[name] = clip_tokenizer("!" if encoder_config.get("hidden_act") == "gelu" else "<|endoftext|>", window)
    return made


def load_vae(vae: Path, vae_config: Path) -> Any:
    """An AutoencoderKL from a diffusers VAE folder, or from one .safetensors file in
    either layout (single-file `encoder.down.*` or diffusers `encoder.down_blocks.*`;
    diffusers tells them apart), configured by `vae_config`."""
    import torch
    from diffusers import AutoencoderKL

    if vae.is_dir():
        return AutoencoderKL.from_pretrained(str(vae), use_safetensors=True, local_files_only=True,
                                             torch_dtype=torch.float32)
    return AutoencoderKL.from_single_file(str(vae), config=str(vae_config.parent), subfolder=vae_config.name,
                                          local_files_only=True, torch_dtype=torch.float32)


def _read_json(path: Path) -> dict[str, Any]:
    from studio.weights import read_config

    return read_config(path) or {}


# `studio models list`'s family column, as model sites and A1111 name them
FAMILY_LABELS = {"sd1": "SD1", "sd1-inpaint": "SD1 inpainting", "sd2": "SD2", "sd2-inpaint": "SD2 inpainting",
                 "sdxl": "SDXL", "sdxl-inpaint": "SDXL inpainting", "sdxl-refiner": "SDXL refiner"}
# kohya's training metadata in a LoRA's header: ss_base_model_version's prefix -> family
LORA_BASES = (("sdxl", "SDXL"), ("sd_v1", "SD1"), ("sd_v2", "SD2"))


def identify(header: dict[str, Any]) -> dict[str, Any] | None:
    """The family a safetensors header shows, for the identify_model hook: a checkpoint's
    from its UNet (as `recognise` tells it), a LoRA's from kohya's training metadata."""
    tensors = {name: (str(entry.get("dtype")), tuple(entry.get("shape") or ()))
               for name, entry in header.items() if name != "__metadata__" and isinstance(entry, dict)}
    found = recognise_shapes(tensors)
    if found.family is not None:
        return {"family": FAMILY_LABELS[found.family.name]}
    metadata = header.get("__metadata__")
    base = metadata.get("ss_base_model_version") if isinstance(metadata, dict) else None
    if isinstance(base, str):
        for prefix, family in LORA_BASES:
            if base.startswith(prefix):
                return {"family": family}
    return None
