"""image.augment: classical data augmentation with torchvision.transforms.v2, seeded per
item, so `sweep: {seed: [...]}` makes that many variants of an image and a pipeline can
mix classical augmentation with generated images."""

from __future__ import annotations

from pydantic import Field, field_validator

from studio import Artifact, Generator, Params, media, media_input
from studio.limits import colour

CONVERSIONS = ("PILToTensor", "ToPILImage", "Identity")  # the steps around a tensor-only transform, not augmentations


class ImageAugment(Generator):
    name = "image.augment"
    description = ("Classical augmentation (torchvision.transforms.v2): a random rotation, shift, scale and shear, "
                   "flips, colour jitter, blur, elastic warping and erasing, each drawn from the item's seed. "
                   "The output keeps the input's size and mode.")
    outputs = {"image": media.IMAGE}
    uses_device = False  # PIL-sized images on the CPU; torch only for the transforms' arithmetic
    version = "1"

    class Params(Params):
        image: Artifact = media_input("image/*", description="The image: an upstream image or a file.")
        rotate: float = Field(10.0, ge=0.0, le=180.0, description="Rotate by up to +- this many degrees.")
        translate: float = Field(0.1, ge=0.0, le=0.5, description="Shift by up to this share of each side.")
        scale: float = Field(0.1, ge=0.0, le=0.5, description="Zoom by a factor within 1 +- scale.")
        shear: float = Field(0.0, ge=0.0, le=45.0, description="Shear by up to +- this many degrees.")
        flip: bool = Field(False, description="Mirror left-right half the time (not for text or digits).")
        vertical_flip: bool = Field(False, description="Mirror top-bottom half the time.")
        brightness: float = Field(0.2, ge=0.0, le=1.0, description="Brightness factor within 1 +- this.")
        contrast: float = Field(0.2, ge=0.0, le=1.0, description="Contrast factor within 1 +- this.")
        saturation: float = Field(0.0, ge=0.0, le=1.0, description="Saturation factor within 1 +- this.")
        hue: float = Field(0.0, ge=0.0, le=0.5, description="Hue shift of up to +- this share of the colour wheel.")
        blur: float = Field(0.0, ge=0.0, le=20.0, description=(
            "Gaussian blur with a sigma up to this, in pixels; 0 = none."))
        elastic: float = Field(0.0, ge=0.0, le=200.0, description=(
            "Elastic warping strength (torchvision's alpha, in pixels); 0 = none."))
        erase: float = Field(0.0, ge=0.0, le=1.0, description="Chance of erasing a random rectangle (cutout).")
        fill: str = Field("auto", max_length=32, description=(
            "Colour of the area a transform uncovers: 'auto' (the mean colour of the image's border) or any PIL "
            "colour."))

        @field_validator("fill")
        @classmethod
        def fill_is_a_colour(cls, value: str) -> str:
            return colour(value, also=("auto",))

    def generate(self, params: Params, ctx) -> dict:
        import torch

        image = params.image.open_image()
        mode = image.mode if image.mode in ("L", "RGB") else "RGB"
        image = _flatten(image).convert(mode)
        pipeline = transforms(params, image)
        with torch.random.fork_rng(devices=[]):  # torchvision draws from torch's global generator
            torch.manual_seed(ctx.seed)
            out = pipeline(image)
        ctx.record(ops=[type(t).__name__ for t in pipeline.transforms if type(t).__name__ not in CONVERSIONS])
        return {"image": out}


def _flatten(image):
    """Transparency onto white: augmentation works on what the image shows."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image


def _fill(params, image) -> list[float]:
    """The fill colour as 0-255 values per channel."""
    import numpy as np
    from PIL import ImageColor

    if params.fill == "auto":
        pixels = np.asarray(image, dtype=np.float64).reshape(image.size[1], image.size[0], -1)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        return [float(v) for v in border.mean(axis=0)]
    rgb = ImageColor.getrgb(params.fill)[:3]
    return [float(sum(rgb) / 3)] if image.mode == "L" else [float(v) for v in rgb]


def transforms(params, image):
    """The torchvision pipeline these parameters ask for, in a fixed order."""
    from torchvision.transforms import v2

    fill = _fill(params, image)
    ops = []
    if params.rotate or params.translate or params.scale or params.shear:
        ops.append(v2.RandomAffine(degrees=params.rotate, translate=(params.translate, params.translate),
                                   scale=(1 - params.scale, 1 + params.scale), shear=params.shear or None,
                                   interpolation=v2.InterpolationMode.BILINEAR, fill=fill))
    if params.elastic:
        ops.append(v2.ElasticTransform(alpha=params.elastic, fill=fill))
    if params.flip:
        ops.append(v2.RandomHorizontalFlip())
    if params.vertical_flip:
        ops.append(v2.RandomVerticalFlip())
    if params.brightness or params.contrast or params.saturation or params.hue:
        ops.append(v2.ColorJitter(brightness=params.brightness or None, contrast=params.contrast or None,
                                  saturation=(params.saturation or None) if image.mode == "RGB" else None,
                                  hue=(params.hue or None) if image.mode == "RGB" else None))
    if params.blur:
        side = max(3, int(2 * round(3 * params.blur) + 1))  # a kernel that holds +- 3 sigma
        shortest = min(image.size)
        largest = shortest if shortest % 2 else shortest - 1  # odd, and no wider than the image
        ops.append(v2.GaussianBlur(kernel_size=max(1, min(side, largest)), sigma=(0.1, params.blur)))
    if params.erase:
        # RandomErasing works on tensors: to a tensor and back, in 0-255 integers
        ops += [v2.PILToTensor(), v2.RandomErasing(p=params.erase, value=[round(v) for v in fill]), v2.ToPILImage()]
    return v2.Compose(ops or [v2.Identity()])
