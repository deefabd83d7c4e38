from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from studio import Artifact, Generator, Params, media, media_input

RESAMPLE = ("lanczos", "bicubic", "bilinear", "nearest")


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

        @model_validator(mode="after")
        def needs_a_size(self):
            if self.width is None and self.height is None:
                raise ValueError("give width, height or both")
            return self

    def generate(self, params: Params, ctx) -> dict:
        from PIL import Image, ImageOps

        image = params.image.open_image()
        image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        w0, h0 = image.size
        width = params.width or max(1, round(w0 * params.height / h0))
        height = params.height or max(1, round(h0 * params.width / w0))
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
