from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from studio import Artifact, Generator, Params, media, media_input


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

    def generate(self, params: Params, ctx) -> dict:
        from PIL import Image, ImageDraw, ImageFont, ImageOps

        cell, pad = params.cell_size, params.padding
        images = [ImageOps.contain(a.open_image().convert("RGB"), (cell, cell)) for a in params.images]
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
            n_cols = params.columns or math.ceil(math.sqrt(len(images)))
            n_rows = math.ceil(len(images) / n_cols)
            head_w = head_h = 0
            where = [(i // n_cols, i % n_cols) for i in range(len(images))]
        cell_h = cell + (0 if xy else text_h)
        sheet = Image.new("RGB", (head_w + pad + n_cols * (cell + pad), head_h + pad + n_rows * (cell_h + pad)),
                          params.background)
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


def _clip(text: str, draw, font, width: int) -> str:
    while len(text) > 3 and draw.textlength(text, font=font) > width:
        text = text[:-4] + "..."
    return text
