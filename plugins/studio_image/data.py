"""Image training data: a folder of images (sub-folders are classes), or a named source
that installs from a package registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from studio import UserError
from studio.limits import data_files

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
SOURCES = {
    "sklearn:digits": "scikit-learn's 1,797 handwritten digits (8x8, 10 classes), upscaled",
}


@dataclass
class ImageData:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    labels: torch.Tensor  # (N,) class indices (all 0 when there are no classes)
    classes: list[str]  # empty: unconditional
    source: str

    def split(self, held_out: float = 0.1, seed: int = 0) -> tuple[ImageData, ImageData]:
        """A fixed train / held-out split."""
        import torch

        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        n = max(1, int(len(order) * held_out))
        test, train = order[:n], order[n:]
        return (ImageData(self.images[train], self.labels[train], self.classes, self.source),
                ImageData(self.images[test], self.labels[test], self.classes, self.source))


def load_images(source: str, size: int, channels: int) -> ImageData:
    if source in SOURCES:
        return _sklearn_digits(size, channels)
    if ":" in source and not Path(source).exists():
        raise UserError(f"--data {source!r}: unknown source. Give a folder of images, or one of: "
                        + ", ".join(f"{k} ({v})" for k, v in SOURCES.items()))
    return _folder(Path(source), size, channels)


def _to_tensor(pil_images, size: int, channels: int):
    import numpy as np
    import torch

    arrays = []
    for im in pil_images:
        arrays.append(np.asarray(_square(im, size, channels), dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def _square(im, size: int, channels: int):
    """Composite transparency on white, centre-crop to a square, resize."""
    from PIL import Image, ImageOps

    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, "white")
        im = Image.alpha_composite(background, im)
    im = im.convert("L" if channels == 1 else "RGB")
    return ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)


def _folder(root: Path, size: int, channels: int) -> ImageData:
    import warnings

    import torch
    from PIL import Image, UnidentifiedImageError

    from studio.weights import short

    if not root.is_dir():
        raise UserError(f"--data {str(root)!r}: no such folder. Give a folder of images "
                        "(sub-folders become classes) or one of: " + ", ".join(SOURCES))
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    entries: list[tuple[Path, int]] = []
    if classes:
        for index, name in enumerate(classes):
            entries += [(p, index) for p in data_files(root / name, IMAGE_SUFFIXES)]
    else:
        entries = [(p, 0) for p in data_files(root, IMAGE_SUFFIXES)]
    if not entries:
        raise UserError(f"--data {str(root)!r}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    images, labels = [], []
    for path, label in entries:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    images.append(im.copy())
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise UserError(f"--data: {path} is too large to train on ({short(exc, 200)}); remove it or shrink it")
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"--data: {path} is not a readable image ({exc}); remove it or fix it")
        labels.append(label)
    return ImageData(_to_tensor(images, size, channels), torch.tensor(labels), classes, str(root))


def _sklearn_digits(size: int, channels: int) -> ImageData:
    import numpy as np
    import torch
    from PIL import Image

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("--data sklearn:digits needs scikit-learn: pip install 'studio[train]'")
    digits = load_digits()
    # 0..16 ink on white paper: dark digits on a light ground, like ink
    pil = [Image.fromarray((255 - img * 255 / 16).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
           for img in digits.images]
    return ImageData(_to_tensor(pil, size, channels), torch.from_numpy(digits.target).long(),
                     [str(i) for i in range(10)], "sklearn:digits")
