"""Image sets as tensors, and the conversions both ways: PIL images squared into an
(N, C, H, W) tensor in [-1, 1] for training, and a generator's [-1, 1] tensor back into
PIL images as diffusers' pipelines make them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


@dataclass
class ImageData:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    labels: torch.Tensor  # (N,) class indices (all 0 when there are no classes)
    classes: list[str]  # empty: unconditional
    source: str
    captions: list[str] | None = None  # one per image; None: the data has no captions
    # other captions that also fit image i (emoji:noto: its aliases, "heart" for "red heart"),
    # for a trainer that varies the caption; None where the data has none
    alt_captions: list[list[str]] | None = None

    def split(self, held_out: float = 0.1, seed: int = 0) -> tuple[ImageData, ImageData]:
        """A fixed train / held-out split."""
        import torch

        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        n = max(1, int(len(order) * held_out))
        return self._take(order[n:]), self._take(order[:n])

    def _take(self, index: torch.Tensor) -> ImageData:
        rows = index.tolist()
        return ImageData(self.images[index], self.labels[index], self.classes, self.source,
                         None if self.captions is None else [self.captions[i] for i in rows],
                         None if self.alt_captions is None else [self.alt_captions[i] for i in rows])


def to_tensor(pil_images, size: int, channels: int):
    """(N, C, size, size) in [-1, 1]; each image squared to `size` (a no-op for those
    folders.open_images already squared)."""
    import numpy as np
    import torch

    arrays = []
    for im in pil_images:
        arrays.append(np.asarray(square(im, size, channels), dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def square(im, size: int, channels: int):
    """Composite transparency on white, centre-crop to a square, resize."""
    from PIL import Image, ImageOps

    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, "white")
        im = Image.alpha_composite(background, im)
    im = im.convert("L" if channels == 1 else "RGB")
    return ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)




def to_pil(sample) -> list:
    """(N, C, H, W) in [-1, 1] -> N PIL images, as diffusers' pipelines do: [-1, 1] ->
    [0, 1] -> uint8 (rounded); one channel gives "L" images, three "RGB"."""
    import numpy as np
    from PIL import Image

    images = (sample / 2 + 0.5).clamp(0, 1).float().cpu().permute(0, 2, 3, 1).numpy()
    images = (images * 255).round().astype(np.uint8)
    return [Image.fromarray(im[..., 0], mode="L") if im.shape[-1] == 1 else Image.fromarray(im) for im in images]
