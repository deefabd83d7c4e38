"""image.outpaint: a larger canvas around an image, and the mask that says what is new,
ready for image.diffusion's inpainting (`image: ${steps.x.outputs.image}`, `mask:
${steps.x.outputs.mask}`).

The canvas's width and height are rounded up to a multiple of 8 (the VAE's factor: a
size diffusers would otherwise round down, shifting the mask off the image); the extra
pixels go to an extended side (right or bottom first), or to the right/bottom edge when
that axis was not extended. The mask is white over everything new and `mask_overlap`
pixels into the original along each extended side, so the repaint blends into it, and
black elsewhere. The canvas stays within image.diffusion's 2048 x 2048 area."""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import Field, model_validator

from studio import Artifact, Generator, Params, UserError, media, media_input

from studio_control.filters import flatten

MULTIPLE = 8  # the VAE's downsampling factor of Stable Diffusion and the embedded model
MAX_CANVAS_PIXELS = 2048 * 2048  # image.diffusion's area limit (its engine's MAX_PIXELS)


class Margins(NamedTuple):
    left: int
    top: int
    right: int
    bottom: int

    def canvas(self, width: int, height: int) -> tuple[int, int]:
        return width + self.left + self.right, height + self.top + self.bottom


def _round_up(extra: int, size: int) -> int:
    return -(size + extra) % MULTIPLE


def margins(params: "ImageOutpaint.Params", width: int, height: int) -> Margins:
    """The pixels added on each side: the asked ones plus `expand`, then the rounding to
    a multiple of 8 given to the right (bottom), or to the left (top) when only it grows."""
    left, right = params.left + params.expand, params.right + params.expand
    top, bottom = params.top + params.expand, params.bottom + params.expand
    pad_x, pad_y = _round_up(left + right, width), _round_up(top + bottom, height)
    if left and not right:
        left += pad_x
    else:
        right += pad_x
    if top and not bottom:
        top += pad_y
    else:
        bottom += pad_y
    return Margins(left, top, right, bottom)


def canvas_problem(params: "ImageOutpaint.Params", width: int, height: int) -> str | None:
    canvas = margins(params, width, height).canvas(width, height)
    if canvas[0] * canvas[1] > MAX_CANVAS_PIXELS:
        return (f"the outpainted image would be {canvas[0]:,} x {canvas[1]:,} pixels (the {width} x {height} image "
                f"plus the margins, rounded up to a multiple of {MULTIPLE}); image.diffusion repaints at most "
                f"2048 x 2048 pixels (4.2 megapixels, any shape of that area): extend by fewer pixels, or shrink "
                f"the image first (image.resize)")
    return None


class ImageOutpaint(Generator):
    name = "image.outpaint"
    description = ("Extend an image by some pixels on chosen sides for outpainting: outputs the larger image "
                   "(the new area filled by edge, blur or noise) and its mask (white where new, plus mask_overlap "
                   "pixels into the original), sizes rounded up to a multiple of 8, for image.diffusion's "
                   "image + mask.")
    outputs = {"image": media.IMAGE, "mask": media.IMAGE}
    uses_device = False
    version = "1"

    class Params(Params):
        image: Artifact = media_input("image/*", description=(
            "The picture to extend: an upstream image or a file; transparency drawn over white."))
        left: int = Field(0, ge=0, le=2048, description="Pixels to add on the left.")
        right: int = Field(0, ge=0, le=2048, description="Pixels to add on the right.")
        top: int = Field(0, ge=0, le=2048, description="Pixels to add at the top.")
        bottom: int = Field(0, ge=0, le=2048, description="Pixels to add at the bottom.")
        expand: int = Field(0, ge=0, le=2048, description="Pixels to add on every side, on top of the sides' own.")
        fill: Literal["edge", "blur", "noise"] = Field("edge", description=(
            "What the new area starts as: edge (the border pixels repeated outwards), blur (edge, then a heavy "
            "Gaussian blur of the new area), noise (seeded random colours with the image's mean and spread)."))
        fill_blur: float = Field(16.0, ge=0.5, le=256.0, description="fill blur: the blur's sigma in pixels.")
        mask_overlap: int = Field(8, ge=0, le=256, description=(
            "The mask reaches this many pixels into the original along each extended side, so the repaint "
            "blends into it instead of meeting it at a hard seam."))

        @model_validator(mode="after")
        def extends_within_the_caps(self):
            if not (self.left or self.right or self.top or self.bottom or self.expand):
                raise ValueError("nothing to extend: give left, right, top, bottom or expand (pixels to add)")
            info = self.image.info
            if "width" in info:
                problem = canvas_problem(self, info["width"], info["height"])
                if problem:
                    raise ValueError(problem)
            return self

    def generate(self, params: Params, ctx) -> dict:
        import numpy as np
        from PIL import Image

        rgb = np.asarray(flatten(params.image.open_image()))
        height, width = rgb.shape[:2]
        problem = canvas_problem(params, width, height)
        if problem:  # an upstream image's size is known only now
            raise UserError(problem)
        sides = margins(params, width, height)
        canvas = extend(rgb, sides, params.fill, params.fill_blur, ctx.seed)
        mask = outpaint_mask(width, height, sides, params.mask_overlap)
        ctx.record(margins=dict(sides._asdict()), size=[int(canvas.shape[1]), int(canvas.shape[0])])
        return {"image": Image.fromarray(canvas), "mask": Image.fromarray(mask)}


def extend(rgb, sides: Margins, fill: str, sigma: float, seed: int):
    """The canvas: the original in place, the margins filled."""
    import cv2
    import numpy as np

    canvas = cv2.copyMakeBorder(rgb, sides.top, sides.bottom, sides.left, sides.right, cv2.BORDER_REPLICATE)
    height, width = rgb.shape[:2]
    inside = (slice(sides.top, sides.top + height), slice(sides.left, sides.left + width))
    if fill == "blur":
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    elif fill == "noise":
        rng = np.random.default_rng(seed)
        pixels = rgb.reshape(-1, 3).astype(np.float32)
        noise = rng.normal(pixels.mean(axis=0), pixels.std(axis=0) + 1.0, size=canvas.shape)
        canvas = noise.clip(0, 255).astype(np.uint8)
    canvas[inside] = rgb  # the original, pixel for pixel
    return np.ascontiguousarray(canvas)


def outpaint_mask(width: int, height: int, sides: Margins, overlap: int):
    """White (255) over the margins and `overlap` pixels into the original along each
    side that grew; black over the rest of the original."""
    import numpy as np

    canvas_w, canvas_h = sides.canvas(width, height)
    mask = np.full((canvas_h, canvas_w), 255, np.uint8)
    top = sides.top + (min(overlap, height // 2) if sides.top else 0)
    bottom = sides.top + height - (min(overlap, height // 2) if sides.bottom else 0)
    left = sides.left + (min(overlap, width // 2) if sides.left else 0)
    right = sides.left + width - (min(overlap, width // 2) if sides.right else 0)
    mask[top:bottom, left:right] = 0
    return mask

