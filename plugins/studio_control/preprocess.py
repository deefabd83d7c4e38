"""image.preprocess: a control image for a ControlNet from any image, with the
preprocessor picked by a field (A1111's ControlNet dropdown), so `sweep: {preprocessor:
[canny, softedge, ...]}` makes one of each. The filters are in filters.py; this module
reads the image, sizes it and records what it did."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from studio import Artifact, Generator, Params, UserError, media, media_input
from studio.limits import output_size_problem

from studio_control import filters

PreprocessorName = Literal[filters.PREPROCESSORS]


class ImagePreprocess(Generator):
    name = "image.preprocess"
    description = ("A ControlNet control image from an image (OpenCV, no model): canny edges, scribble (XDoG "
                   "strokes), threshold (dark strokes as white lines), softedge (blurred Sobel magnitude), shuffle "
                   "(seeded random warp), tile (blurred low-resolution copy), grayscale, invert (line art on white "
                   "as white on black). Edge maps are greys (L); shuffle and tile keep colour (RGB).")
    outputs = {"image": media.IMAGE}
    uses_device = False
    version = "1"

    class Params(Params):
        image: Artifact = media_input("image/*", description=(
            "The picture to make a control image from: an upstream image or a file; transparency drawn over white."))
        preprocessor: PreprocessorName = Field("canny", description=(
            "canny | scribble | threshold | softedge | shuffle | tile | grayscale | invert; the fields below say "
            "which one they tune, and the others ignore them (so a sweep over preprocessor keeps them)."))
        resolution: int | None = Field(None, ge=64, le=2048, description=(
            "Preprocessor resolution: the output's short side in pixels, the aspect kept (the image is resized "
            "first, as A1111 does). Default: the input's own size."))
        low: int = Field(100, ge=1, le=255, description="canny: the lower hysteresis threshold (cv2.Canny).")
        high: int = Field(200, ge=1, le=255, description="canny: the upper hysteresis threshold, at least low.")
        threshold: int | None = Field(None, ge=0, le=255, description=(
            "scribble: how dark a stroke must be to count (default 32); threshold: the grey level below which a "
            "pixel is a stroke (default 0: Otsu's method picks it)."))
        blur: float | None = Field(None, ge=0.0, le=64.0, description=(
            "softedge: the Gaussian blur's sigma in pixels (default 2); tile: the blur after the shrink (default "
            "0: none)."))
        tile_factor: int = Field(4, ge=1, le=64, description="tile: shrink the image this many times before growing it back.")
        shuffle_size: int = Field(256, ge=8, le=2048, description=(
            "shuffle: the width in pixels of the random warp's features (controlnet_aux's f); smaller scrambles "
            "more finely."))

        @model_validator(mode="after")
        def thresholds_in_order(self):
            if self.preprocessor == "canny" and self.low > self.high:
                raise ValueError(f"low ({self.low}) is above high ({self.high}): canny's lower threshold must be "
                                 f"at most its upper one; swap them")
            info = self.image.info
            if self.resolution and "width" in info:
                problem = output_size_problem(*filters.scaled_size(info["width"], info["height"], self.resolution),
                                              "the control image")
                if problem:
                    raise ValueError(problem + "; lower resolution")
            return self

    def generate(self, params: Params, ctx) -> dict:
        import numpy as np
        from PIL import Image

        rgb = np.asarray(filters.flatten(params.image.open_image()))
        if params.resolution:
            size = filters.scaled_size(rgb.shape[1], rgb.shape[0], params.resolution)
            problem = output_size_problem(*size, "the control image")
            if problem:  # an upstream image's size is known only now
                raise UserError(problem + "; lower resolution")
            rgb = filters.at_resolution(rgb, params.resolution)
        out = apply(params, rgb, ctx.seed)
        ctx.record(preprocessor=params.preprocessor, size=[int(rgb.shape[1]), int(rgb.shape[0])])
        return {"image": Image.fromarray(out)}


def apply(params: ImagePreprocess.Params, rgb, seed: int):
    """The chosen filter on an RGB uint8 array, with its fields' defaults filled in."""
    name = params.preprocessor
    if name == "canny":
        return filters.canny(rgb, params.low, params.high)
    if name == "scribble":
        return filters.scribble(rgb, 32 if params.threshold is None else params.threshold)
    if name == "threshold":
        return filters.binary(rgb, params.threshold or 0)
    if name == "softedge":
        return filters.softedge(rgb, 2.0 if params.blur is None else params.blur)
    if name == "shuffle":
        return filters.shuffle(rgb, params.shuffle_size, seed)
    if name == "tile":
        return filters.tile(rgb, params.tile_factor, params.blur or 0.0)
    if name == "grayscale":
        return filters.grayscale(rgb)
    return filters.invert(rgb)

