"""Sample sheets for the image trainers' `samples()`: a batch of images in [-1, 1] laid
out in rows, enlarged by a whole factor to about 256 pixels wide."""

from __future__ import annotations


def sheet(images, columns: int, width: int = 256):
    """N x C x H x W tensor in [-1, 1] -> one PIL image, `columns` across."""
    import numpy as np
    from PIL import Image

    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    n, c, h, w = pixels.shape
    rows = -(-n // columns)
    padded = np.full((rows * columns, c, h, w), 255, dtype=np.uint8)
    padded[:n] = pixels
    grid = padded.reshape(rows, columns, c, h, w).transpose(0, 3, 1, 4, 2).reshape(rows * h, columns * w, c)
    image = Image.fromarray(grid[..., 0] if c == 1 else grid, "L" if c == 1 else "RGB")
    scale = max(1, width // image.width)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
