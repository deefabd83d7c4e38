"""image.diffusion's image inputs: the init image of image-to-image and the mask of
inpainting, checked before the run and prepared for a sampler.

Size policy (as A1111 and diffusers' pipelines do it): the output is `width` x
`height` when given, else the init image's own size; the image and its mask are
resized to it (Lanczos), so a mask must have its image's size. Transparent pixels of
an init image are flattened onto white, A1111's default background.
A mask is white where the image is repainted and black where it is kept; it is read
as greys (L), so a colour image given as a mask is refused rather than guessed at.

Bounded work before the run: `studio validate` judges an image and a mask from their
headers (size, mode; studio.sniff checks the files themselves) and reads a mask's pixels
only when it is small (MASK_CHECKED_PIXELS) and validation's time budget is not spent;
the run reads every mask in full anyway and refuses it there with the same words.
"""

from __future__ import annotations

from studio import Artifact

# a mask whose channels differ by more than this (0-255) somewhere is a colour picture
MASK_GREY_TOLERANCE = 8
# a pixel at or above this (0-1) is repainted: diffusers binarizes masks at 0.5
MASK_THRESHOLD = 0.5
# validate reads the pixels of masks up to this size (a few hundredths of a second);
# a larger mask is read, and refused with the same words, when the run prepares it
MASK_CHECKED_PIXELS = 2048 * 2048
ROWS_AT_ONCE = 256  # a large mask is converted this many rows at a time


def init_problem(image: Artifact | None, mask: Artifact | None, strength: float | None, steps: int,
                 width: int | None, height: int | None, factor: int) -> str | None:
    """Why these image-to-image / inpainting settings cannot run, or None. Content
    checks are skipped for inputs an upstream step has not made yet."""
    if image is None:
        if mask is not None:
            return "mask needs the image it masks: give image (the picture to repaint) as well"
        if strength is not None:
            return "strength applies to image-to-image: give image (an upstream image or a file), or drop strength"
        return None
    runs = strength if strength is not None else (1.0 if mask is not None else 0.8)  # diffusers' defaults
    if int(steps * runs) < 1:
        return (f"strength {runs} x {steps} steps runs no denoising step (diffusers runs int(steps x strength)); "
                f"raise strength to at least {1 / steps:.3g} or steps to at least {int(1 / runs) + 1}")
    info = image.info
    if "width" not in info:
        return None  # made upstream: checked when it exists
    if mask is not None and "width" in mask.info:
        size, mask_size = (info["width"], info["height"]), (mask.info["width"], mask.info["height"])
        if size != mask_size:
            return (f"mask is {mask_size[0]} x {mask_size[1]} but image is {size[0]} x {size[1]}: a mask must have "
                    "its image's size (the two are resized together to width x height)")
        problem = mask_problem(mask) if _read_now(mask) else None
        if problem:
            return problem
    for name, given, own in (("width", width, info["width"]), ("height", height, info["height"])):
        if given is None and own % factor:
            fixed = max(factor, own // factor * factor)
            return (f"image is {info['width']} x {info['height']}, and its {name} {own} is not a multiple of {factor} "
                    f"as this model needs; set {name} (e.g. {fixed}): the image is resized to width x height")
    return None


def _read_now(mask: Artifact) -> bool:
    """Whether a check before the run reads this mask's pixels: small enough, and
    validation's time budget not spent."""
    from studio.sniff import checks_deferred

    info = mask.info
    return info.get("width", 0) * info.get("height", 0) <= MASK_CHECKED_PIXELS and not checks_deferred()


def mask_problem(mask: Artifact) -> str | None:
    """Why a mask file cannot be used, or None: it must be greys, and not all black."""
    grey = read_mask(mask)
    return grey if isinstance(grey, str) else _black_problem(grey)


def _black_problem(grey) -> str | None:
    import numpy as np

    if not (np.asarray(grey) >= MASK_THRESHOLD * 255).any():
        return ("mask is black everywhere: nothing would be repainted. White marks what to repaint, black what "
                "to keep")
    return None


def read_mask(mask: Artifact):
    """A mask as an 'L' image, or why it is not one. Large masks are converted a band
    of rows at a time (an 8192 x 8192 16-bit mask holds 128 MB; as floats, a gigabyte)."""
    import numpy as np

    image = mask.open_image()
    mode = image.mode
    if mode in ("1", "L"):
        return image.convert("L")
    if mode in ("LA", "La"):
        return image.getchannel("L")
    if mode.startswith("I") or mode == "F":  # 16- and 32-bit greys: scaled to 8 bits
        array = np.asarray(image)
        top = 65535.0 if array.max() > 255 else 255.0
        out = np.empty(array.shape, dtype=np.uint8)
        for row in range(0, array.shape[0], ROWS_AT_ONCE):
            band = array[row:row + ROWS_AT_ONCE].astype(np.float64)
            out[row:row + ROWS_AT_ONCE] = (np.clip(band, 0, top) / top * 255).round()
        return _from_array(out)
    rgb = np.asarray(image.convert("RGB"))
    spread = 0
    for row in range(0, rgb.shape[0], ROWS_AT_ONCE):
        band = rgb[row:row + ROWS_AT_ONCE]
        spread = max(spread, int((band.max(axis=2).astype(np.int16) - band.min(axis=2)).max()))
    if spread > MASK_GREY_TOLERANCE:
        return (f"mask is a colour image (mode {mode}; its red, green and blue differ by up to {spread}); a mask is "
                "greys: white where the image is repainted, black where it is kept (save it in mode L)")
    return image.convert("L")


def _from_array(array):
    from PIL import Image

    return Image.fromarray(array, mode="L")


def output_size(width: int | None, height: int | None, image: Artifact | None,
                model_size: tuple[int, int] | None) -> tuple[int, int]:
    """The size an item is made at: as given, else the init image's, else the model's
    (512 when unknown)."""
    info = image.info if image is not None else {}
    default = (info["width"], info["height"]) if "width" in info else (model_size or (512, 512))
    return width or default[0], height or default[1]


def prepared_image(image: Artifact, size: tuple[int, int] | None, mode: str = "RGB"):
    """The init image at `size` (None: its own), transparency flattened onto white, in
    `mode` ('RGB' or 'L')."""
    from PIL import Image

    opened = image.open_image()
    if opened.mode in ("RGBA", "LA", "PA", "P") or "transparency" in opened.info:
        rgba = opened.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        opened = flat
    opened = opened.convert(mode)
    return opened if size is None or opened.size == size else opened.resize(size, Image.Resampling.LANCZOS)


def prepared_mask(mask: Artifact, size: tuple[int, int], blur: int):
    """The mask at `size` as an 'L' image, blurred by `blur` pixels (diffusers' own
    mask blur) when asked."""
    from PIL import Image

    grey = read_mask(mask)
    problem = grey if isinstance(grey, str) else _black_problem(grey)  # the full check of a large mask
    if problem:
        from studio import UserError

        raise UserError(problem)
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    if blur:
        from diffusers.image_processor import VaeImageProcessor

        grey = VaeImageProcessor.blur(grey, blur)
    return grey


def keep_unmasked(made: list, images: list, masks: list) -> list:
    """Each made image with its init image's pixels put back where the mask is black,
    through diffusers' own overlay (the VAE round trip otherwise shifts them a little)."""
    from diffusers.image_processor import VaeImageProcessor

    out = []
    for result, image, mask in zip(made, images, masks):
        overlaid = VaeImageProcessor().apply_overlay(mask, image.convert("RGB"), result.convert("RGB"))
        out.append(overlaid.convert(result.mode))
    return out


def strength_timesteps(scheduler, steps: int, strength: float, device=None):
    """The timesteps image-to-image runs at `strength`, as diffusers' image-to-image
    pipelines pick them (their get_timesteps): the last int(steps x strength) of the
    scheduler's `steps`, the scheduler told where it begins."""
    scheduler.set_timesteps(steps, device=device)
    start = max(steps - min(int(steps * strength), steps), 0)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * scheduler.order)
    return scheduler.timesteps[start * scheduler.order:]
