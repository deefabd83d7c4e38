from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from studio import Artifact, Generator, Params, UserError, media, media_input
from studio.limits import colour, output_size_problem

RESAMPLE = ("lanczos", "bicubic", "bilinear", "nearest")


def target_size(width: int | None, height: int | None, source: tuple[int, int]) -> tuple[int, int]:
    """The output size: as given, or the missing side from the source's aspect ratio."""
    w0, h0 = source
    return (width or max(1, round(w0 * height / h0)), height or max(1, round(h0 * width / w0)))


class ImageResize(Generator):
    name = "image.resize"
    description = "Resize an image: stretch, fit inside (letterbox) or fill (crop) a width x height box."
    outputs = {"image": media.IMAGE}
    uses_device = False

    class Params(Params):
        image: Artifact = media_input("image/*", description="The image to resize: an upstream image or a file.")
        width: int | None = Field(None, ge=1, le=8192, description="Target width in pixels; omit to keep the aspect ratio.")
        height: int | None = Field(None, ge=1, le=8192, description="Target height in pixels; omit to keep the aspect ratio.")
        mode: Literal["stretch", "fit", "fill"] = Field(
            "stretch", description="stretch: exactly width x height; fit: inside the box, padded; fill: cover the box, cropped.")
        resample: Literal[RESAMPLE] = Field("lanczos", description="Resampling filter.")
        background: str = Field("#000000", max_length=32, description="Padding colour for mode fit (any PIL colour).")

        @field_validator("background")
        @classmethod
        def background_is_a_colour(cls, value: str) -> str:
            return colour(value)

        @model_validator(mode="after")
        def needs_a_size(self):
            if self.width is None and self.height is None:
                raise ValueError("give width, height or both")
            # one side from the aspect ratio: a 1 x 8192 input at width 8192 would be
            # 8192 x 67 million pixels; known once the input is (validate knows a file's size)
            info = self.image.info
            if "width" in info:
                problem = output_size_problem(*target_size(self.width, self.height, (info["width"], info["height"])),
                                              "the resized image")
                if problem:
                    raise ValueError(problem + "; give both width and height")
            return self

    def generate(self, params: Params, ctx) -> dict:
        from PIL import Image, ImageOps

        image = params.image.open_image()
        image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        width, height = target_size(params.width, params.height, image.size)
        problem = output_size_problem(width, height, "the resized image")
        if problem:  # the input's size is known for sure only now (an upstream image)
            raise UserError(problem + "; give both width and height")
        resample = getattr(Image.Resampling, params.resample.upper())
        if params.mode == "stretch":
            out = image.resize((width, height), resample)
        elif params.mode == "fill":
            out = ImageOps.fit(image, (width, height), resample)
        else:
            inner = ImageOps.contain(image, (width, height), resample)
            out = Image.new(image.mode, (width, height), params.background)
            out.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return {"image": out}
