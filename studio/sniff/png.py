"""The PNG byte checks behind studio.sniff's image check: the chunk list read by its
headers, and the image data inflated a piece at a time to find rows that are missing
or damaged, without ever holding the decoded image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

MAX_PNG_CHUNKS = 30_000  # PNG writers use 8-64 KB IDAT chunks: a few thousand at most here


def png_chunk_count(path: Path) -> int:
    """Chunks in a PNG, counted by their headers (stops past the limit): millions of
    empty chunks would make a full check crawl."""
    count = 0
    with open(path, "rb") as f:
        f.seek(8)
        while count <= MAX_PNG_CHUNKS:
            header = f.read(8)
            if len(header) < 8:
                break
            count += 1
            if header[4:8] == b"IEND":
                break
            f.seek(int.from_bytes(header[:4], "big") + 4, os.SEEK_CUR)
    return count


# PNG colour type -> samples a pixel
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 interlacing: (first column, first row, column step, row step) of each pass
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_PIECE = 1 << 20  # bytes inflated at a time: the check holds this much, never the image
OUT_OF_TIME = "out of time"  # png_data_problem's answer when validation's time budget ends first


def png_rows(width: int, height: int, bits: int, channels: int, interlaced: bool) -> list[tuple[int, int]]:
    """(rows, bytes a row takes with its filter byte) of each pass of a PNG's image data."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    out = []
    for x0, y0, dx, dy in passes:
        w, h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if w and h:
            out.append((h, 1 + (w * bits * channels + 7) // 8))
    return out


def png_data_problem(path: Path, out_of_time: Callable[[], bool] = lambda: False) -> str | None:
    """Why a PNG's image data cannot give its declared pixels, or None: its IDAT chunks
    inflated (a piece at a time, never the whole image, and no further than the bytes
    the header's size needs) must hold every row, each starting with a filter type of 0
    to 4. Pillow decodes a PNG cut short (5 of its 32 rows) without complaint at open
    and fails only when the pixels are read. When `out_of_time()` turns true while
    inflating (validation's time budget, a large image on a slow machine), OUT_OF_TIME:
    the run checks it."""
    import zlib

    header, parts = png_image_chunks(path)
    if header is None or len(header) < 13:
        return None  # Pillow's open has judged the header already
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    bits, colour, interlace = header[8], header[9], header[12]
    channels = _PNG_CHANNELS.get(colour)
    if channels is None or interlace > 1:
        return None
    data = _ImageData(png_rows(width, height, bits, channels, interlace == 1))
    try:
        problem = data.read(path, parts, out_of_time)
    except zlib.error as exc:
        return f"is a damaged PNG: its image data is not a valid compressed stream ({exc})"
    made, need = data.made, data.need
    if problem or made >= need:
        return problem
    if not interlace:
        return (f"is truncated: its image data holds {made // data.passes[0][1]:,} of its {height:,} rows "
                f"({made:,} of {need:,} bytes); the file was cut short or damaged")
    return (f"is truncated: its image data holds {made:,} of the {need:,} bytes its {width:,} x {height:,} "
            "pixels need; the file was cut short or damaged")


class _ImageData:
    """A PNG's image data inflated a piece at a time, the filter type byte that starts
    each row checked as it comes (pass by pass when interlaced)."""

    def __init__(self, passes: list[tuple[int, int]]) -> None:
        self.passes = passes  # (rows, bytes a row takes with its filter byte) of each pass
        self.need = sum(rows * stride for rows, stride in passes)
        self.made = 0  # bytes inflated so far
        self.segment = self.row = self.next_filter = self.rows_done = 0

    def read(self, path: Path, parts: list[tuple[int, int]], out_of_time: Callable[[], bool]) -> str | None:
        """Inflates the IDAT `parts` until the declared rows are there or the stream ends:
        a damaged row's problem, OUT_OF_TIME, or None (then `made` says how much came)."""
        import zlib

        inflate = zlib.decompressobj()
        with open(path, "rb") as f:
            for offset, length in parts:
                f.seek(offset)
                left = length
                while left and self.made < self.need and not inflate.eof:
                    data = f.read(min(left, _INFLATE_PIECE))
                    if not data:
                        break
                    left -= len(data)
                    if out_of_time():
                        return OUT_OF_TIME
                    while data and self.made < self.need and not inflate.eof:
                        out = inflate.decompress(data, _INFLATE_PIECE)
                        data = inflate.unconsumed_tail
                        problem = self._check_rows(out)
                        if problem:
                            return problem
                if self.made >= self.need or inflate.eof:
                    break
        return None

    def _check_rows(self, out: bytes) -> str | None:
        """Checks the filter type of every row that starts in `out`, the next piece."""
        end = self.made + len(out)
        while self.segment < len(self.passes) and self.next_filter < end:
            kind = out[self.next_filter - self.made]
            if kind > 4:
                return (f"is a damaged PNG: row {self.rows_done + 1} of its image data has filter type "
                        f"{kind} (a PNG's are 0 to 4)")
            self.rows_done += 1
            self.row += 1
            self.next_filter += self.passes[self.segment][1]
            if self.row == self.passes[self.segment][0]:
                self.segment, self.row = self.segment + 1, 0
        self.made = end
        return None


def png_image_chunks(path: Path) -> tuple[bytes | None, list[tuple[int, int]]]:
    """A PNG's IHDR data and the (offset, length) of each IDAT chunk's data, read from
    the chunk headers (at most MAX_PNG_CHUNKS of them)."""
    header, parts = None, []
    with open(path, "rb") as f:
        f.seek(8)
        for _ in range(MAX_PNG_CHUNKS + 1):
            chunk = f.read(8)
            if len(chunk) < 8:
                break
            length, name = int.from_bytes(chunk[:4], "big"), chunk[4:8]
            if name == b"IHDR" and header is None:
                header = f.read(min(length, 13))
                f.seek(length - len(header), os.SEEK_CUR)
            elif name == b"IDAT":
                parts.append((f.tell(), length))
                f.seek(length, os.SEEK_CUR)
            elif name == b"IEND":
                break
            else:
                f.seek(length, os.SEEK_CUR)
            f.seek(4, os.SEEK_CUR)  # the checksum, which verify() has checked
    return header, parts

