"""Two unpaired image domains for style.cyclegan training.

`--data` is either a folder with sub-folders `A/` and `B/` (the reference repository's
trainA/trainB also work), or `photo2clipart`: domain A, the colour photographs that
scikit-image and scikit-learn ship; domain B, Debian's openclipart-png clip art
(`apt-get install openclipart-png`), flattened onto white.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
OPENCLIPART = Path("/usr/share/openclipart/png")
MAX_SIDE = 384
# images of one domain, each kept at most MAX_SIDE a side in memory (5,000 are 2.2 GB);
# the reference's horse2zebra has about 1,200 a domain
MAX_DOMAIN_IMAGES = 5000
SOURCES = "a folder with A/ and B/ (or trainA/ and trainB/) sub-folders of images, or photo2clipart"
# colour photographs that load without a download (scikit-image's data and scikit-learn's two)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "cat")


def load_domains(data: str, *, seed: int, max_b: int = 1000) -> tuple[list[Any], list[Any]]:
    """(domain A images, domain B images) as RGB PIL images."""
    if data == "photo2clipart":
        return photos(), clipart(seed=seed, limit=max_b)
    if "\x00" in data:
        raise UserError(f"--data {data[:300]!r}: a path cannot hold a NUL character; use {SOURCES}")
    root = Path(data).expanduser()
    for a, b in (("A", "B"), ("trainA", "trainB")):
        if (root / a).is_dir() and (root / b).is_dir():
            return _folder(root / a, root), _folder(root / b, root)
    raise UserError(f"--data {data[:300]!r}: use {SOURCES}")


def split_held_out(domain_a: list[Any]) -> tuple[list[Any], list[Any]]:
    """(training, held-out) images of domain A: the last fifth never trains, so the
    cycle-consistency and style metrics see images the model did not."""
    held = max(1, len(domain_a) // 5)
    return domain_a[:-held], domain_a[-held:]


def _folder(folder: Path, root: Path) -> list[Any]:
    """The images of one domain (`folder`, inside the data folder `root`), each shrunk to
    MAX_SIDE as it is read; at most MAX_DOMAIN_IMAGES of them, refused before any is opened."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from studio.limits import data_files
    from studio.weights import short

    from studio.sniff import MAX_INPUT_BYTES

    files = data_files(folder, IMAGE_SUFFIXES, inside=root, max_files=MAX_DOMAIN_IMAGES,
                       max_file_bytes=MAX_INPUT_BYTES, what="images")
    if not files:
        raise UserError(f"--data: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = []
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                images.append(flatten(path))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise UserError(f"--data: {path} is too large to train on ({short(exc, 200)}); remove it or shrink it")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"--data: {path} is not a readable image ({short(exc, 200)}); remove it or fix it")
        except MemoryError:
            raise UserError(f"--data: {path} does not fit in memory to decode; remove it or shrink it") from None
    return images


def flatten(path: Path, max_side: int = MAX_SIDE):
    """An image file as RGB, transparent parts on white (as clip art is seen), no larger
    than `max_side` (training crops are small; thousands of full-size images are not)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            image = im.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def photos() -> list[Any]:
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as exc:
        raise UserError("photo2clipart needs scikit-image and scikit-learn: pip install 'studio-media[train]'") from exc
    from PIL import Image

    out = [Image.fromarray(a) for a in load_sample_images().images]  # china.jpg, flower.jpg
    for name in SKIMAGE_PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # a few need a download; those are skipped, never fetched
            continue
        if array.ndim == 3 and array.shape[2] >= 3:
            out.append(Image.fromarray(array[..., :3]))
    for image in out:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return out


def clipart(*, seed: int, limit: int) -> list[Any]:
    import random

    from PIL import Image

    if not OPENCLIPART.is_dir():
        raise UserError(f"photo2clipart needs Debian's clip art in {OPENCLIPART}: apt-get install openclipart-png")
    files = sorted(OPENCLIPART.rglob("*.png"))
    random.Random(seed).shuffle(files)
    out = []
    for path in files:
        try:
            image = flatten(path)
        except (OSError, Image.DecompressionBombError):  # a few files are huge or damaged: skip them
            continue
        if min(image.size) >= 96:  # icons smaller than a training crop teach little
            out.append(image)
        if len(out) >= limit:
            break
    return out


def random_crop(image, size: int, rng) -> Any:
    """A `size` crop after scaling the shorter side to 1-2x `size`, flipped half the time:
    the reference's resize-and-crop augmentation. Returns a [-1, 1] tensor (3, size, size)."""
    import numpy as np
    import torch
    from PIL import Image

    short = int(rng.integers(size, 2 * size + 1))
    w, h = image.size
    scale = short / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
    x = int(rng.integers(0, image.size[0] - size + 1))
    y = int(rng.integers(0, image.size[1] - size + 1))
    crop = np.asarray(image.crop((x, y, x + size, y + size)), dtype=np.float32) / 127.5 - 1.0
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return torch.from_numpy(crop.copy()).permute(2, 0, 1)
