"""Image training data by name: a folder of images (studio_imagedata.folders: sub-folders
are classes, captions beside the images or in a metadata.jsonl), or a named source that
installs from a package registry (scikit-learn's digits here, the Noto emoji in
studio_imagedata.emoji)."""

from __future__ import annotations

from pathlib import Path

from studio import UserError
from studio_imagedata.emoji import emoji_noto
from studio_imagedata.folders import image_folder
from studio_imagedata.images import ImageData, to_tensor

SOURCES = {
    "sklearn:digits": "scikit-learn's 1,797 handwritten digits (8x8, 10 classes), upscaled",
    "emoji:noto": "the ~3,800 Noto Color Emoji glyphs on white, captioned with their CLDR names, "
                  "classes the CLDR groups (apt-get install fonts-noto-color-emoji unicode-data)",
    "emoji:noto-outline": "the same glyphs and captions drawn as black outlines on white: a style to train "
                          "a LoRA on (studio train image.diffusion --option lora_rank=8)",
}


def load_images(source: str, size: int, channels: int) -> ImageData:
    """The images `source` names (a folder, or one of SOURCES), squared to `size` with
    `channels` channels; every problem a UserError that says what to give instead."""
    if source == "sklearn:digits":
        return _sklearn_digits(size, channels)
    if source in ("emoji:noto", "emoji:noto-outline"):
        return emoji_noto(size, channels, outline=source.endswith("-outline"))
    if "\x00" in source:
        raise UserError(f"--data {source[:300]!r}: a path cannot hold a NUL character. Give a folder of images, or "
                        "one of: " + ", ".join(SOURCES))
    if ":" in source and not Path(source).exists():
        raise UserError(f"--data {source[:300]!r}: unknown source. Give a folder of images, or one of: "
                        + ", ".join(f"{k} ({v})" for k, v in SOURCES.items()))
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"--data {str(root)!r}: no such folder. Give a folder of images "
                        "(sub-folders become classes) or one of: " + ", ".join(SOURCES))
    return image_folder(root, size, channels)


def _sklearn_digits(size: int, channels: int) -> ImageData:
    import numpy as np
    import torch
    from PIL import Image

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("--data sklearn:digits needs scikit-learn: pip install 'studio-media[train]'")
    digits = load_digits()
    # 0..16 ink on white paper: dark digits on a light ground, like ink
    pil = [Image.fromarray((255 - img * 255 / 16).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
           for img in digits.images]
    return ImageData(to_tensor(pil, size, channels), torch.from_numpy(digits.target).long(),
                     [str(i) for i in range(10)], "sklearn:digits")
