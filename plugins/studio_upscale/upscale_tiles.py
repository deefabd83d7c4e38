"""Tiled inference with feathered overlaps: any image size in bounded memory.

The input is cut into `tile` x `tile` squares that overlap their neighbours by
`overlap` pixels; each runs through the model alone and the outputs are blended into
one image. A tile's own border is where its output is least like the whole image's
(the model sees no context beyond it), so a tile's weight is 0 in the outer quarter of
each overlap it shares, rises linearly across the middle half, and is 1 inside. The
weights of the tiles covering a pixel add up to 1, so where the model's receptive field
fits in a quarter of the overlap, the result equals the model run on the whole image.
Only the output, its weights and one tile's activations are held at once.
"""

from __future__ import annotations

from typing import Any, Callable


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side begin: every `tile - overlap` pixels, the last one
    flush with the far edge (it overlaps its neighbour by more)."""
    if length <= tile:
        return [0]
    step = tile - overlap
    out = list(range(0, length - tile, step))
    out.append(length - tile)
    return out


def ramp(length: int, before: int, after: int, scale: int, torch: Any) -> Any:
    """A tile's weights along one side, in output pixels: `before` and `after` are the
    overlaps (input pixels) shared with the tiles on each side, 0 at the image's edge."""
    weights = torch.ones(length * scale)
    position = torch.arange(length * scale, dtype=torch.float32) + 0.5
    for overlap, distance in ((before, position), (after, length * scale - position)):
        if overlap:
            span = overlap * scale
            weights = torch.minimum(weights, ((distance - span / 4) / (span / 2)).clamp(0, 1))
    return weights


def tiled(run: Callable[[Any], Any], images: Any, scale: int, tile: int, overlap: int,
          on_tile: Callable[[int, int], None] | None = None) -> Any:
    """`run` (a batch of images -> the batch upscaled by `scale`) over `images`
    (N, C, H, W), tile by tile; tile 0, or an image no larger than one tile: one call."""
    import torch

    n, _, height, width = images.shape
    if tile == 0 or (height <= tile and width <= tile):
        return run(images)
    rows, cols = starts(height, tile, overlap), starts(width, tile, overlap)
    out = weight = None
    done, total = 0, len(rows) * len(cols)
    for i, top in enumerate(rows):
        for j, left in enumerate(cols):
            h, w = min(tile, height), min(tile, width)
            part = run(images[:, :, top:top + h, left:left + w].contiguous()).float()  # a strided view makes conv2d crawl
            if out is None:
                out = torch.zeros(n, part.shape[1], height * scale, width * scale, dtype=torch.float32, device=part.device)
                weight = torch.zeros(height * scale, width * scale, dtype=torch.float32, device=part.device)
            # the overlap with each neighbour: up to the neighbour's start or end
            above = rows[i - 1] + h - top if i else 0
            below = top + h - rows[i + 1] if i + 1 < len(rows) else 0
            west = cols[j - 1] + w - left if j else 0
            east = left + w - cols[j + 1] if j + 1 < len(cols) else 0
            mask = torch.outer(ramp(h, above, below, scale, torch), ramp(w, west, east, scale, torch)).to(part.device)
            at = (slice(top * scale, (top + h) * scale), slice(left * scale, (left + w) * scale))
            out[:, :, at[0], at[1]] += part * mask
            weight[at] += mask
            done += 1
            if on_tile:
                on_tile(done, total)
    return out.div_(weight.clamp_min_(1e-8))  # in place: the output is the largest thing held
