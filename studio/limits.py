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


# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["MAX_CPU_PIXEL_STEPS", "MAX_OUTPUT_PIXELS", "MAX_OUTPUT_SIDE", "colour", "colour_problem",
           "cpu_budget_problem", "data_files", "on_cpu", "output_size_problem", "regular_file_problem"]

# An image a step writes stays one Studio can read back as an input (the same limit).
MAX_OUTPUT_PIXELS = MAX_IMAGE_PIXELS
MAX_OUTPUT_SIDE = 8192
# Sampling on a CPU: width x height x steps. 1024 x 1024 at 50 steps is about an hour for
# a Stable Diffusion model on a CPU; 4096 x 4096 at 1000 steps would be weeks.
MAX_CPU_PIXEL_STEPS = 1024 * 1024 * 50


def data_files(root: Any, suffixes: Any) -> list:
    """The regular files under `root` (a folder of training data) whose suffix is one of
    `suffixes`, sorted. Anything else with such a name (a FIFO, a socket, a device) is
    skipped with a warning on stderr: opening it would block or read forever."""
    import stat
    import sys

    files = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in suffixes:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode):
            files.append(path)
        elif not stat.S_ISDIR(mode):
            print(f"warning: --data: skipped {str(path)[-300:]}: not a regular file", file=sys.stderr)
    return files


def regular_file_problem(path: Any) -> str | None:
    """Why `path` is not a regular file to open (a FIFO would block the reader), or None."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{str(path)[-300:]} cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(mode):
        return f"{str(path)[-300:]} is not a regular file (a FIFO, device or folder); Studio reads only plain files"
    return None


def on_cpu(info: Any) -> bool:
    """Whether a validator runs for a CPU: the host passes the device in the validation
    context ("cpu" or "cuda" at validate time, the run's device at run time). Params
    built directly, without a context, are not weighed against a device."""
    device = (getattr(info, "context", None) or {}).get("device")
    return isinstance(device, str) and device.split(":")[0] == "cpu"


def output_size_problem(width: int, height: int, what: str = "the image") -> str | None:
    """Why an output of width x height pixels is refused, or None."""
    if width > MAX_OUTPUT_SIDE or height > MAX_OUTPUT_SIDE:
        return (f"{what} would be {width:,} x {height:,} pixels; images are limited to {MAX_OUTPUT_SIDE:,} "
                f"pixels a side ({MAX_OUTPUT_SIDE} x {MAX_OUTPUT_SIDE})")
    if width * height > MAX_OUTPUT_PIXELS:
        return (f"{what} would be {width:,} x {height:,} = {width * height / 1e6:,.0f} megapixels; images are "
                f"limited to {MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels (8192 x 8192)")
    return None


def cpu_budget_problem(width: int, height: int, steps: int, limit: int = MAX_CPU_PIXEL_STEPS,
                       example: str = "1024 x 1024 at 50 steps") -> str | None:
    """Why sampling width x height pixels for `steps` steps is refused on a CPU, or None.
    `limit` and `example`: a generator's own, lower budget (text-to-image pipelines)."""
    work = width * height * steps
    if work > limit:
        return (f"{width} x {height} pixels at {steps} steps is too much work for a CPU (width x height x steps "
                f"= {work:,}; the limit on a CPU is {limit:,}, e.g. {example}). "
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
def colour(value: str, *, also: tuple[str, ...] = ()) -> str:
    """`value` when colour_problem finds nothing, else a ValueError saying why: the body
    of a Params field validator for a colour parameter."""
    problem = colour_problem(value, also=also)
    if problem:
        raise ValueError(problem)
    return value


