"""The preprocessors themselves: an RGB uint8 array in, a control image array out, each
one or two OpenCV calls as ControlNet's own annotators make them (lllyasviel's
ControlNet and controlnet_aux, A1111's sd-webui-controlnet), so a control image from
here looks like the ones the public ControlNet checkpoints were trained on.

Edge-like maps are white lines on black in one channel (L); shuffle and tile keep colour.
OpenCV is imported inside the functions: registering the plugin stays light."""

from __future__ import annotations

from typing import Any

PREPROCESSORS = ("canny", "scribble", "threshold", "softedge", "shuffle", "tile", "grayscale", "invert")


def canny(rgb: Any, low: int, high: int) -> Any:
    """cv2.Canny on the RGB image, as controlnet_aux's CannyDetector calls it."""
    import cv2

    return cv2.Canny(rgb, low, high)


def scribble(rgb: Any, threshold: int) -> Any:
    """A1111's scribble_xdog: the difference of two Gaussian blurs (sigma 0.5 and 5), its
    darkest channel, white where 2 x that exceeds threshold: pencil-like strokes."""
    import cv2
    import numpy as np

    pixels = rgb.astype(np.float32)
    fine, coarse = cv2.GaussianBlur(pixels, (0, 0), 0.5), cv2.GaussianBlur(pixels, (0, 0), 5.0)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    return np.where(2 * (255 - dog.astype(np.int32)) > threshold, 255, 0).astype(np.uint8)


def binary(rgb: Any, threshold: int) -> Any:
    """A drawing's dark strokes as white lines on black (what scribble ControlNets take):
    cv2.threshold on the grey image, inverted; threshold 0 picks it by Otsu's method."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    flags = cv2.THRESH_BINARY_INV | (cv2.THRESH_OTSU if threshold == 0 else 0)
    return cv2.threshold(grey, threshold, 255, flags)[1]


def softedge(rgb: Any, blur: float) -> Any:
    """Soft edges without HED's weights: the Sobel gradient magnitude of the grey image,
    scaled so the strongest edge is 255, then a Gaussian blur of sigma `blur`: thick,
    graded edges where HED/PiDiNet would draw them, though without their semantics."""
    import cv2
    import numpy as np

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    if blur > 0:
        magnitude = cv2.GaussianBlur(magnitude, (0, 0), blur)
    peak = float(magnitude.max())
    return (magnitude * (255.0 / peak) if peak > 0 else magnitude).clip(0, 255).astype(np.uint8)


def _noise_disk(height: int, width: int, size: int, rng: Any) -> Any:
    """controlnet_aux's make_noise_disk: coarse uniform noise, bicubic-upsampled, cropped
    and stretched to 0..1: a smooth random field with features about `size` pixels wide."""
    import cv2
    import numpy as np

    # float32 halves the memory of a large image's flow fields (cv2.remap takes float32)
    coarse = rng.uniform(0.0, 1.0, size=(height // size + 2, width // size + 2)).astype(np.float32)
    noise = cv2.resize(coarse, (width + 2 * size, height + 2 * size), interpolation=cv2.INTER_CUBIC)
    noise = noise[size:size + height, size:size + width]
    noise = noise - noise.min()
    peak = noise.max()
    return noise / peak if peak > 0 else noise


def shuffle(rgb: Any, size: int, seed: int) -> Any:
    """controlnet_aux's ContentShuffleDetector: the image remapped through a random smooth
    flow (cv2.remap), so colours and textures stay and the layout is scrambled; seeded."""
    import cv2
    import numpy as np

    height, width = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    x = _noise_disk(height, width, size, rng) * np.float32(width - 1)
    y = _noise_disk(height, width, size, rng) * np.float32(height - 1)
    return cv2.remap(rgb, x, y, cv2.INTER_LINEAR)


def tile(rgb: Any, factor: int, blur: float) -> Any:
    """The tile ControlNet's input: the image shrunk `factor` times (area averaging),
    grown back (bicubic) and blurred with sigma `blur`: the layout and colours, no detail."""
    import cv2

    height, width = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(out, (0, 0), blur) if blur > 0 else out


def grayscale(rgb: Any) -> Any:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def invert(rgb: Any) -> Any:
    """A1111's "invert (from white bg & black line)": a drawing on white becomes white
    lines on black, the way line-art ControlNets were trained."""
    import cv2

    return cv2.bitwise_not(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def at_resolution(rgb: Any, short_side: int) -> Any:
    """The image with its short side at `short_side`, the aspect kept (A1111's
    "Preprocessor resolution"): area averaging to shrink, bicubic to grow."""
    import cv2

    height, width = rgb.shape[:2]
    size = scaled_size(width, height, short_side)
    if size == (width, height):
        return rgb
    grow = size[0] > width
    return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def flatten(image: Any) -> Any:
    """A PIL image as RGB, transparency drawn over white (a drawing's empty paper), as
    image.diffusion reads an init image."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")
