"""What a diffusers model folder's configs say, read without loading any weights.

Two kinds of checkpoint load through image.diffusion's `model:` parameter, and each
has its facts: a UNet2DModel with a scheduler (UnetFacts: its classes, trained size)
and a diffusers pipeline (PipelineFacts: its size, whether it inpaints, its text
encoder). `studio validate` judges parameters by these facts, and the run by the same
facts of the folder it loaded. Config numbers are bounded before any arithmetic, so a
hostile config is a message, not a 10**300-pixel image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from studio.weights import components, config, local_path, read_config

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "diffusion"
# the class-conditional digit model shipped beside the default, named by this path
DIGITS_WEIGHTS = Path(__file__).parent / "weights" / "digits"

MAX_BLOCKS = 16  # entries of block_out_channels: real models have 3 to 5
MAX_SAMPLE_SIZE = 65536  # a UNet's sample_size, in pixels or latent cells
MAX_CLASSES_SHOWN = 20
MAX_CLASSES = 1_000_000  # class names read from studio.json
MAX_CLASS_NAME = 100  # characters of a class name


@dataclass(frozen=True)
class UnetFacts:
    """A UNet2DModel checkpoint (unet/ and scheduler/, no text encoder), sampled by
    Studio's own loop: unconditional, or class-conditional with studio.json's classes."""

    classes: list[str]
    size: tuple[int, int] | None  # its sample_size, the size it was trained at
    factor: int  # width and height must be multiples of it
    index: dict[str, int] = field(default_factory=dict)  # class name -> index (the first one of a name)


@dataclass(frozen=True)
class PipelineFacts:
    """A diffusers pipeline (Stable Diffusion 1.x, 2.x, XL, ...), run by diffusers."""

    size: tuple[int, int] | None  # the UNet's sample_size in pixels
    factor: int  # width and height must be multiples of it (the VAE's scale)
    inpainting: bool = False  # a dedicated inpainting checkpoint: latents, mask and masked image in
    one_text_encoder: bool = False  # one CLIP text encoder (SD 1.x/2.x): what compel and clip_skip serve here
    text_layers: int | None = None  # how many layers that text encoder has (SDXL: the fewer of its two)
    refiner: bool = False  # an SDXL refiner: it only finishes an image (image-to-image)
    sdxl: bool = False  # SDXL's conditioning (two CLIP encoders, the pooled one; base, inpainting or refiner)


# a pipeline whose folder is not on this machine: nothing is known about it
UNKNOWN_PIPELINE = PipelineFacts(size=None, factor=1)
ModelFacts = UnetFacts | PipelineFacts


def is_unet_checkpoint(path: str | Path) -> bool:
    index = read_config(Path(path) / "model_index.json")
    if index is not None:
        unet = index.get("unet")
        return isinstance(unet, list) and len(unet) == 2 and unet[1] == "UNet2DModel"
    return (Path(path) / "unet" / "config.json").is_file() and not (Path(path) / "text_encoder").exists()


def component_folders(root: Path | None) -> tuple[str, ...]:
    """The top folder and a pipeline's component folders: where its weights are."""
    if root is None or not root.is_dir():
        return ("",)
    index = read_config(root / "model_index.json") or {}
    return tuple(dict.fromkeys(["", "unet", *(name for name, _ in components(index))]))


def model_facts(model: str, config: str | None = None, prediction: str = "default") -> ModelFacts | None:
    """What the configs of `model` say (None when there is nothing local to read): a
    folder's own, or for a single-file checkpoint its `config` folder's, else its
    recognised family's (`prediction`: epsilon makes SD 2.x a 512 model). A ValueError
    says which config value is out of range."""
    root = local_path(model, DEFAULT_WEIGHTS)
    if root is None:
        return None
    if root.is_file():
        return single_file_facts(root, config, prediction)
    if not root.is_dir():
        return None
    return folder_facts(root)


def single_file_facts(path: Path, config: str | None, prediction: str = "default") -> PipelineFacts | None:
    """A single-file checkpoint's facts: its `config` folder's, else those of the family
    its header shows (None when neither is known: validation says why)."""
    from studio_image.diffusion_single_file import CONFIGS, recognise

    found = None
    if path.suffix.lower() == ".safetensors":
        try:
            found = recognise(path)
        except ValueError:
            return None
    if config is not None and Path(config).is_dir():
        facts = folder_facts(Path(config))
        return facts if isinstance(facts, PipelineFacts) else None
    family = found and found.family
    if family is None:
        return None
    side = 512 if family.name == "sd2" and prediction == "epsilon" else family.size  # the 512-base models
    sdxl = family.name.startswith("sdxl")
    layers = text_layers(CONFIGS / family.name) if sdxl else family.text_layers  # SDXL: its shipped configs'
    return PipelineFacts(size=(side, side), factor=8, inpainting=family.inpainting,
                         one_text_encoder=family.text_layers is not None, text_layers=layers,
                         refiner=family.refiner, sdxl=sdxl)


def folder_facts(root: Path) -> ModelFacts:
    """The facts of a model folder, cached per version of its configs."""
    stamps = []
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "studio.json", "text_encoder",
                 "text_encoder_2"):
        try:
            st = os.stat(root / name)
            stamps.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return _folder_facts(str(root), tuple(stamps))


@lru_cache(maxsize=64)
def _folder_facts(path: str, stamps: tuple) -> ModelFacts:
    root = Path(path)
    if is_unet_checkpoint(root):
        unet = config(root / "unet")
        info = config(root, "studio.json")
        classes = info.get("classes") if isinstance(info.get("classes"), list) else []
        classes = [str(c)[:MAX_CLASS_NAME] for c in classes[:MAX_CLASSES]]
        return UnetFacts(classes=classes, size=side_size(unet.get("sample_size"), "unet/config.json"),
                         factor=2 ** (blocks(unet.get("block_out_channels"), "unet/config.json") or 1) // 2,
                         index={c: i for i, c in reversed(list(enumerate(classes)))})
    vae_blocks = blocks(config(root / "vae").get("block_out_channels"), "vae/config.json")
    scale = 2 ** (vae_blocks - 1) if vae_blocks else 8
    unet = config(root / "unet")
    unet_size = side_size(unet.get("sample_size"), "unet/config.json")
    index = read_config(root / "model_index.json") or {}
    # SDXL: a second text encoder and the UNet's size-and-pooled-text conditioning
    sdxl = listed(index, "text_encoder_2") and unet.get("addition_embed_type") == "text_time"
    return PipelineFacts(
        size=unet_size and (unet_size[0] * scale, unet_size[1] * scale),
        # SD 1.x/2.x/XL: the latent is width/scale x height/scale; other pipelines say their own rules
        factor=scale if (root / "unet").is_dir() else 1,
        inpainting=unet.get("in_channels") == 9,
        one_text_encoder="text_encoder" in index and "text_encoder_2" not in index,
        text_layers=text_layers(root),
        # the refiner has no CLIP ViT-L encoder and is conditioned on an aesthetic score
        refiner=sdxl and (not listed(index, "text_encoder") or index.get("requires_aesthetics_score") is True),
        sdxl=sdxl)


def listed(index: dict[str, Any], name: str) -> bool:
    """Whether model_index.json names a component `name` ([null, null] is an absent one)."""
    entry = index.get(name)
    return isinstance(entry, list) and bool(entry) and entry[0] is not None


def text_layers(root: Path) -> int | None:
    """The layers of the pipeline's CLIP text encoder; with two (SDXL), the fewer:
    clip_skip reaches as deep into both."""
    counts = [config(root / name).get("num_hidden_layers") for name in ("text_encoder", "text_encoder_2")]
    counts = [n for n in counts if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 10_000]
    return min(counts) if counts else None


def blocks(value: Any, where: str) -> int:
    """How many entries block_out_channels has (0 when it is not a list), at most MAX_BLOCKS."""
    if not isinstance(value, list):
        return 0
    if len(value) > MAX_BLOCKS:
        raise ValueError(f"{where}: config value block_out_channels is out of range ({len(value):,} entries; "
                         f"a diffusers model has at most {MAX_BLOCKS})")
    return len(value)


def side_size(sample_size: Any, where: str = "unet config") -> tuple[int, int] | None:
    """A UNet config's sample_size as (width, height): square, its first entry when it
    is a list, as Studio has always sampled it."""
    side = sample_size[0] if isinstance(sample_size, (list, tuple)) and sample_size else sample_size
    if not (isinstance(side, int) and not isinstance(side, bool) and side > 0):
        return None
    if side > MAX_SAMPLE_SIZE:
        raise ValueError(f"{where}: config value sample_size is out of range ({clip_number(side)}; "
                         f"at most {MAX_SAMPLE_SIZE:,})")
    return (side, side)


def clip_number(value: int) -> str:
    """A number for a message: never hundreds of digits."""
    text = str(value)
    return text if len(text) <= 12 else f"a {len(text)}-digit number"


def classes_text(classes: list[str]) -> str:
    """The class list for a message: the first few and how many more."""
    shown = ", ".join(classes[:MAX_CLASSES_SHOWN])
    more = len(classes) - MAX_CLASSES_SHOWN
    return shown + (f" and {more:,} more" if more > 0 else "")


def class_index(label: int | str, classes: list[str], index: dict[str, int] | None = None) -> int | None:
    """A class_label as the model's index: a class name, or an index into the classes."""
    found = (index if index is not None else {c: i for i, c in reversed(list(enumerate(classes)))}).get(str(label))
    if found is not None:
        return found
    if isinstance(label, int) and 0 <= label < len(classes):
        return label
    return None
