from __future__ import annotations

import colorsys
import random

from pydantic import Field, field_validator

from studio import Generator, Params, media
from studio.limits import colour_problem


class ImageTitle(Generator):
    name = "image.title"
    description = ("A title card: text centred on a background colour (from `background`, "
                   "or a colour chosen by the seed). For covers, labels and contact sheets.")
    outputs = {"image": media.IMAGE}
    uses_device = False

    class Params(Params):
        text: str = Field(..., min_length=1, max_length=2000, description="The text to set; may be upstream text.")
        width: int = Field(512, ge=16, le=4096, description="Width in pixels.")
        height: int = Field(512, ge=16, le=4096, description="Height in pixels.")
        background: str = Field("seed", max_length=32,
                                description="A PIL colour ('#203040', 'navy'), or 'seed' for a colour from the seed.")
        color: str = Field("auto", max_length=32, description="Text colour; 'auto' picks black or white for contrast.")
        font_size: int = Field(0, ge=0, le=1000, description="Font size in pixels; 0 fits the text to the card.")

        @field_validator("background")
        @classmethod
        def background_is_a_colour(cls, value: str) -> str:
            problem = colour_problem(value, also=("seed",))
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("color")
        @classmethod
        def color_is_a_colour(cls, value: str) -> str:
            problem = colour_problem(value, also=("auto",))
            if problem:
                raise ValueError(problem)
            return value

    def generate(self, params: Params, ctx) -> dict:
        from PIL import Image, ImageColor, ImageDraw, ImageFont

        if params.background == "seed":
            rng = random.Random(params.seed)
            r, g, b = colorsys.hls_to_rgb(rng.random(), 0.25 + 0.5 * rng.random(), 0.35 + 0.5 * rng.random())
            bg = (round(r * 255), round(g * 255), round(b * 255))
        else:
            bg = ImageColor.getrgb(params.background)[:3]
        fg = params.color
        if fg == "auto":
            luminance = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
            fg = "#111111" if luminance > 140 else "#f5f5f5"
        image = Image.new("RGB", (params.width, params.height), bg)
        draw = ImageDraw.Draw(image)
        margin = params.width // 12
        size = params.font_size or max(8, params.height // 6)
        while True:
            font = ImageFont.load_default(size=size)
            lines = _wrap(params.text, font, draw, params.width - 2 * margin)
            box = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font, align="center")
            if params.font_size or size <= 8 or (box[3] - box[1] <= params.height - 2 * margin):
                break
            size = int(size * 0.85)
        text = "\n".join(lines)
        box = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        x = (params.width - (box[2] - box[0])) / 2 - box[0]
        y = (params.height - (box[3] - box[1])) / 2 - box[1]
        draw.multiline_text((x, y), text, font=font, fill=fg, align="center")
        return {"image": image}


def _wrap(text: str, font, draw, max_width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > max_width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines
