from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from studio import Artifact, Generator, Params, UserError, media, media_input
from studio.limits import colour

# A contact sheet is one PNG in memory: 100 megapixels is 300 MB of RGB, and no side
# longer than PNG viewers and browsers open.
MAX_SHEET_PIXELS = 100_000_000
MAX_SHEET_SIDE = 32_768


def sheet_problem(width: int, height: int, count: int, cell: int, at_least: bool = False) -> str | None:
    """Why a sheet of width x height pixels is refused, or None."""
    if width * height <= MAX_SHEET_PIXELS and max(width, height) <= MAX_SHEET_SIDE:
        return None
    return (f"{count:,} images in cells of {cell} px make a sheet of {'at least ' if at_least else ''}"
            f"{width:,} x {height:,} pixels; a sheet is limited to {MAX_SHEET_PIXELS / 1e6:.0f} megapixels and "
            f"{MAX_SHEET_SIDE:,} pixels a side. Lower cell_size, or split the images over several grid steps")


def smallest_sheet(count: int, cell: int, pad: int, columns: int) -> tuple[int, int]:
    """A lower bound of the sheet's size before labels are known: `count` padded cells
    in `columns` columns; with columns 0, the square of the same area (the layout, plain
    or an X/Y plot, has at least `count` cells)."""
    if columns:
        return pad + columns * (cell + pad), pad + math.ceil(count / columns) * (cell + pad)
    side = pad + math.floor(math.sqrt(count) * (cell + pad))
    return side, side


class ImageGrid(Generator):
    name = "image.grid"
    description = (
        "A contact sheet of images, labelled with the sweep values that made them. When the "
        "images vary in exactly two swept parameters it lays them out as an X/Y plot."
    )
    outputs = {"image": media.IMAGE}
    uses_device = False
    version = "3"  # 2: column keys move to the corner when "key=value" does not fit; 3: labels on one line

    class Params(Params):
        images: list[Artifact] = media_input(
            "image/*", min_length=1, max_length=1000,
            description="The images: a reference to a swept step gives all its items.")
        columns: int = Field(0, ge=0, le=100, description="Columns; 0 = automatic (X/Y layout or a square).")
        cell_size: int = Field(256, ge=16, le=2048, description="Each image is fitted into a cell this many pixels wide and high.")
        labels: bool = Field(True, description="Write the sweep values on the sheet.")
        padding: int = Field(8, ge=0, le=256, description="Pixels between cells.")
        background: str = Field("#ffffff", max_length=32, description="Sheet colour (any PIL colour).")

        @field_validator("background")
        @classmethod
        def background_is_a_colour(cls, value: str) -> str:
            return colour(value)

        @model_validator(mode="after")
        def sheet_is_bounded(self):
            # the number of images is known before the run (an upstream step's items
            # arrive as one pending input each), their labels are not: a lower bound
            width, height = smallest_sheet(len(self.images), self.cell_size, self.padding, self.columns)
            problem = sheet_problem(width, height, len(self.images), self.cell_size, at_least=True)
            if problem:
                raise ValueError(problem)
            return self

    def generate(self, params: Params, ctx) -> dict:
        from PIL import Image, ImageDraw, ImageFont, ImageOps

        cell, pad = params.cell_size, params.padding
        labels = [a.labels for a in params.images]
        varying = _varying_keys(labels)
        font = ImageFont.load_default(size=max(10, cell // 16))
        text_h = font.size + 6 if params.labels and varying else 0

        xy = _xy_layout(labels, varying) if params.columns == 0 else None
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
        if xy:
            row_key, col_key, rows, cols, where = xy
            # "key=value" over each column when it fits; else the values, and the key once
            # in the corner above the row labels
            fits = all(measure(f"{col_key}={_fmt(v)}", font=font) <= cell for v in cols)
            labels_w = [measure(f"{row_key}={_fmt(r)}", font=font) for r in rows]
            if not fits:
                labels_w.append(measure(f"{col_key} ->", font=font))
            head_w = int(max(labels_w)) + 2 * pad if params.labels else 0
            head_h = text_h if params.labels else 0
            n_rows, n_cols = len(rows), len(cols)
        else:
            n_cols = params.columns or math.ceil(math.sqrt(len(labels)))
            n_rows = math.ceil(len(labels) / n_cols)
            head_w = head_h = 0
            where = [(i // n_cols, i % n_cols) for i in range(len(labels))]
        cell_h = cell + (0 if xy else text_h)
        size = (head_w + pad + n_cols * (cell + pad), head_h + pad + n_rows * (cell_h + pad))
        # the exact size, before anything is allocated: an X/Y plot of zipped values is
        # as many rows as columns, mostly empty
        problem = sheet_problem(*size, len(labels), cell)
        if problem:
            raise UserError(problem)
        images = [ImageOps.contain(a.open_image().convert("RGB"), (cell, cell)) for a in params.images]
        sheet = Image.new("RGB", size, params.background)
        draw = ImageDraw.Draw(sheet)
        ink = "#111111" if sum(sheet.getpixel((0, 0))) > 384 else "#eeeeee"
        for image, label, (r, c) in zip(images, labels, where):
            x = head_w + pad + c * (cell + pad)
            y = head_h + pad + r * (cell_h + pad)
            sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
            if params.labels and varying and not xy:
                caption = ", ".join(f"{k}={_fmt(label.get(k))}" for k in varying)
                draw.text((x + cell / 2, y + cell + 3), _clip(caption, draw, font, cell), font=font, fill=ink, anchor="ma")
        if xy and params.labels:
            if not fits:
                draw.text((pad, pad // 2 + 2), f"{col_key} ->", font=font, fill=ink)
            for c, value in enumerate(cols):
                text = f"{col_key}={_fmt(value)}" if fits else _fmt(value)
                draw.text((head_w + pad + c * (cell + pad) + cell / 2, pad // 2 + 2),
                          _clip(text, draw, font, cell), font=font, fill=ink, anchor="ma")
            for r, value in enumerate(rows):
                draw.text((pad, head_h + pad + r * (cell + pad) + cell / 2), f"{row_key}={_fmt(value)}",
                          font=font, fill=ink, anchor="lm")
        return {"image": sheet}


def _fmt(value: Any) -> str:
    """A label value on one line: PIL measures and draws single lines only."""
    text = repr(value) if isinstance(value, float) else str(value)
    return " ".join(text.split())


def _varying_keys(labels: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for label in labels for k in label))
    return [k for k in keys if len({repr(label.get(k)) for label in labels}) > 1]


def _xy_layout(labels, varying):
    """Rows by the first varying parameter, columns by the second, when every image
    is one (row, column) pair."""
    if len(varying) != 2:
        return None
    row_key, col_key = varying
    rows = list(dict.fromkeys(repr(label.get(row_key)) for label in labels))
    cols = list(dict.fromkeys(repr(label.get(col_key)) for label in labels))
    where = [(rows.index(repr(label.get(row_key))), cols.index(repr(label.get(col_key)))) for label in labels]
    if len(set(where)) != len(where):
        return None
    first = {repr(label.get(k)): label.get(k) for label in labels for k in (row_key, col_key)}
    return row_key, col_key, [first[r] for r in rows], [first[c] for c in cols], where


MAX_LABEL_CHARS = 500  # far more than a cell shows; longer labels are cut before measuring


def _clip(text: str, draw, font, width: int) -> str:
    """The text, or its longest prefix + "..." that fits `width`: a binary search, so a
    label costs O(log n) measurements however long it is."""
    if len(text) > MAX_LABEL_CHARS:
        text = text[:MAX_LABEL_CHARS - 3] + "..."
    if len(text) <= 3 or draw.textlength(text, font=font) <= width:
        return text
    low, high = 0, len(text) - 4  # the longest prefix known to fit, and the shortest too long + 1
    while low < high:
        mid = (low + high + 1) // 2
        if draw.textlength(text[:mid] + "...", font=font) <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low] + "..."
