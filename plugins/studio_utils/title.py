from __future__ import annotations

import colorsys
import random

from pydantic import Field, field_validator

from studio import Generator, Params, media
from studio.limits import colour


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
            return colour(value, also=("seed",))

        @field_validator("color")
        @classmethod
        def color_is_a_colour(cls, value: str) -> str:
            return colour(value, also=("auto",))

    def generate(self, params: Params, ctx) -> dict:
        import warnings

        from PIL import Image

        # every line drawn is bounded below (at most the card's width, one character more, by
        # a line's height); PIL's size warnings never reach the terminal
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return self._generate(params)

    def _generate(self, params: Params) -> dict:
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
        # only the lines the card can show are drawn: a font of 1000 px on a 16 px card
        # shows part of one line, and rendering the rest would cost memory for nothing
        line_box = draw.textbbox((0, 0), "Ag", font=font)
        shown = max(1, params.height // max(1, line_box[3] - line_box[1]) + 1)
        text = "\n".join(lines[:shown])
        box = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        x = (params.width - (box[2] - box[0])) / 2 - box[0]
        y = (params.height - (box[3] - box[1])) / 2 - box[1]
        draw.multiline_text((x, y), text, font=font, fill=fg, align="center")
        return {"image": image}


def _wrap(text: str, font, draw, max_width: int) -> list[str]:
    """Lines at most max_width wide; a word wider than that is broken between characters
    (at least one character a line), so no line is wider than the card."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in _pieces(paragraph.split(), font, draw, max_width):
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > max_width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def _pieces(words: list[str], font, draw, max_width: int) -> list[str]:
    """The words, each one wider than max_width cut into pieces that fit (a binary
    search for each piece's length)."""
    out: list[str] = []
    for word in words:
        while len(word) > 1 and draw.textlength(word, font=font) > max_width:
            low, high = 1, len(word) - 1  # the longest prefix known to fit (or 1), the longest possible
            while low < high:
                mid = (low + high + 1) // 2
                if draw.textlength(word[:mid], font=font) <= max_width:
                    low = mid
                else:
                    high = mid - 1
            out.append(word[:low])
            word = word[low:]
        out.append(word)
    return out
