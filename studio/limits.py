"""Size limits and value checks image generators share (public API: `studio.limits`).

Every limit is checked twice with the same function: by a Params validator when
`studio validate` can know the sizes, and before anything is allocated at run time,
where the real sizes (an upstream image, the model's own resolution) are known.
Limits on work (pixels x steps) apply on a CPU only; validators learn the device from
the validation context (on_cpu).
"""

from __future__ import annotations

from typing import Any

from studio.sniff import MAX_IMAGE_PIXELS

# An image a step writes stays one Studio can read back as an input (the same limit).
MAX_OUTPUT_PIXELS = MAX_IMAGE_PIXELS
# Sampling on a CPU: width x height x steps. 1024 x 1024 at 50 steps is about an hour for
# a Stable Diffusion model on a CPU; 4096 x 4096 at 1000 steps would be weeks.
MAX_CPU_PIXEL_STEPS = 1024 * 1024 * 50


def on_cpu(info: Any) -> bool:
    """Whether a validator runs for a CPU: the host passes the device in the validation
    context ("cpu" or "cuda" at validate time, the run's device at run time). Params
    built directly, without a context, are not weighed against a device."""
    device = (getattr(info, "context", None) or {}).get("device")
    return isinstance(device, str) and device.split(":")[0] == "cpu"


def output_size_problem(width: int, height: int, what: str = "the image") -> str | None:
    """Why an output of width x height pixels is refused, or None."""
    if width * height > MAX_OUTPUT_PIXELS:
        return (f"{what} would be {width:,} x {height:,} = {width * height / 1e6:,.0f} megapixels; images are "
                f"limited to {MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels (8192 x 8192)")
    return None


def cpu_budget_problem(width: int, height: int, steps: int) -> str | None:
    """Why sampling width x height pixels for `steps` steps is refused on a CPU, or None."""
    work = width * height * steps
    if work > MAX_CPU_PIXEL_STEPS:
        return (f"{width} x {height} pixels at {steps} steps is too much work for a CPU (width x height x steps "
                f"= {work:,}; the limit on a CPU is {MAX_CPU_PIXEL_STEPS:,}, e.g. 1024 x 1024 at 50 steps). "
                "Lower steps or the size, or run on a GPU (device: cuda)")
    return None


def colour_problem(value: str, *, also: tuple[str, ...] = ()) -> str | None:
    """Why `value` is not a colour PIL draws ('#203040', 'navy', 'rgb(10,20,30)'), or None.
    `also`: words the parameter takes besides colours ('seed', 'auto')."""
    from PIL import ImageColor

    if value in also:
        return None
    try:
        ImageColor.getrgb(value)
    except (ValueError, TypeError):
        words = " or ".join(repr(w) for w in also)
        return (f"{value!r} is not a colour; give a name ('navy'), '#rrggbb' ('#203040') or 'rgb(r, g, b)'"
                + (f", or {words}" if words else ""))
    return None
