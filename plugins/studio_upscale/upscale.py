"""image.upscale: an image enlarged by an ESRGAN-family model through spandrel.

spandrel recognises the architecture (ESRGAN, Real-ESRGAN, SwinIR, HAT, SPAN, ...) from
the tensors' names and shapes; Studio reads the file itself (upscale_files.py) and runs
the model tile by tile (upscale_tiles.py). RGB goes through the model; an alpha channel
is enlarged with Lanczos beside it; a grey image goes through as RGB (or as itself for
a one-channel model) and comes out grey. `scale` other than the model's resizes its
output with Lanczos, as A1111's "upscale by" does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from studio import Artifact, Generator, Params, UserError, check_finite, media, media_input, model_input
from studio.limits import on_cpu, output_size_problem

MAX_SCALE = 8.0
# Input pixels on a CPU: a 4x ESRGAN at full size (23 blocks) needs about 25 GFLOP per
# input pixel, so 1024 x 1024 is many minutes on a few cores; a GPU takes any size
MAX_CPU_INPUT_PIXELS = 1024 * 1024
LOAD_FIX = "Give an upscaler .pth or .safetensors file, or its name in your model folders (kind upscaler)"


class ImageUpscale(Generator):
    name = "image.upscale"
    description = ("Enlarge an image with an ESRGAN-family upscaler (ESRGAN, Real-ESRGAN, SwinIR and the other "
                   "architectures spandrel recognises), tiled with feathered overlaps so any size fits in memory.")
    outputs = {"image": media.IMAGE}
    precisions = ("fp16", "bf16", "fp32")
    batchable = True
    max_batch_size = 8

    class Params(Params):
        image: Artifact = media_input("image/*", description="The image to enlarge: an upstream image or a file.")
        model: str = model_input(..., suffixes=(".pth", ".safetensors", ".pt", ".ckpt"), kind="upscaler", description=(
            "The upscaler: a .pth or .safetensors file, or the name of one in your model folders (A1111's "
            "models/ESRGAN, ComfyUI's models/upscale_models, ...). Required: Studio has no embedded upscaler yet "
            "(for plain resampling use image.resize)."))
        scale: float | None = Field(None, gt=0, le=MAX_SCALE, description=(
            "Output size as a multiple of the input's; default: the model's own scale. Another value resizes the "
            "model's output with Lanczos (A1111's 'upscale by')."))
        tile: int = Field(256, ge=0, le=4096, description=(
            "Tile size in input pixels (at least 32); 0 runs the whole image at once. Smaller tiles use less memory."))
        tile_overlap: int = Field(32, ge=0, le=2048, description=(
            "Pixels each tile shares with its neighbours, at most half the tile; the middle half of the overlap "
            "is blended. The output equals the whole-image run where the model's reach fits in a quarter of it."))

        @field_validator("model")
        @classmethod
        def is_an_upscaler(cls, value: str, info: ValidationInfo) -> str:
            if value == "default":
                raise ValueError("Studio has no embedded upscaler yet: give an upscaler file (.pth or .safetensors) "
                                 "or its name in your model folders; for plain Lanczos resampling use image.resize")
            path = Path(value)
            if path.is_absolute() or path.exists():
                from studio_upscale.upscale_files import file_problem

                problem = file_problem(path)
                if problem:
                    raise ValueError(f"model {value!r} {problem}")
            return value

        @model_validator(mode="after")
        def tiles_fit(self, info: ValidationInfo):
            if self.tile and self.tile < 32:
                raise ValueError(f"tile {self.tile} is too small: give 0 (the whole image) or at least 32 pixels")
            if self.tile and self.tile_overlap * 2 > self.tile:
                raise ValueError(f"tile_overlap {self.tile_overlap} is more than half of tile {self.tile}: give at "
                                 f"most {self.tile // 2}")
            facts = self.image.info
            if "width" in facts:
                size = (facts["width"], facts["height"])
                problem = cpu_problem(size, on_cpu(info)) or (self.scale is not None and output_size_problem(
                    *_scaled(size, self.scale), "the upscaled image"))
                if problem:
                    raise ValueError(problem if "CPU" in problem else problem + "; give a smaller scale")
            return self

    def weights_id(self, params: Params) -> str:
        from studio.weights import weights_fingerprint

        return weights_fingerprint(params.model, Path(params.model))

    def load(self, params: Params, ctx) -> Any:
        from studio.weights import loading
        from studio_upscale.upscale_files import load_descriptor

        path = Path(params.model)
        with loading(params.model, "an upscaler", LOAD_FIX):
            return load_descriptor(path, params.model)

    def prepare(self, descriptor: Any, ctx) -> Any:
        """On the device in the step's precision where spandrel says the architecture
        supports it: fp16 falls back to bf16, then fp32."""
        import torch

        dtype = ctx.dtype
        if dtype == torch.float16 and not descriptor.supports_half:
            dtype = torch.bfloat16
        if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
            dtype = torch.float32
        descriptor.to(torch.device(ctx.device)).to(dtype).eval()
        descriptor.model.requires_grad_(False)
        return descriptor

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        from studio import batch_groups

        out: list[dict] = [{} for _ in params]
        sizes = [_input_of(p) for p in params]
        keys = [(size, mode, p.scale, p.tile, p.tile_overlap) for p, (size, mode) in zip(params, sizes)]
        for group in batch_groups(keys):
            images = self._upscale([params[i] for i in group], [ctxs[i] for i in group])
            for i, image in zip(group, images):
                out[i] = {"image": image}
        return out

    def _upscale(self, params: list[Params], ctxs: list) -> list:
        import torch

        from studio_upscale.upscale_tiles import tiled

        descriptor = ctxs[0].model(self, params[0])
        first = params[0]
        pictures = [p.image.open_image() for p in params]
        size = pictures[0].size
        model_size = (size[0] * descriptor.scale, size[1] * descriptor.scale)
        final = _scaled(size, first.scale) if first.scale is not None else model_size
        for what, (w, h) in (("the model's output", model_size), ("the upscaled image", final)):
            problem = output_size_problem(w, h, what)
            if problem:
                raise UserError(problem + ("; give a smaller scale" if what != "the model's output" else
                                           "; this model's scale is too large for this image"))
        problem = cpu_problem(size, descriptor.device.type == "cpu")
        if problem:  # an upstream image's size is known only now
            raise UserError(problem)
        colour, alphas = _split(pictures, descriptor.input_channels)
        batch = colour.to(descriptor.device, descriptor.dtype)
        notes = dict(model_sha256=_sha256(first.model), architecture=descriptor.architecture.name,
                     model_scale=descriptor.scale, tile=first.tile, tile_overlap=first.tile_overlap,
                     dtype=str(descriptor.dtype).replace("torch.", ""))
        for ctx in ctxs:
            ctx.record(**notes)
        with torch.inference_mode():
            result = tiled(descriptor, batch, descriptor.scale, first.tile, first.tile_overlap,
                           on_tile=ctxs[0].progress)
        check_finite(result, f"image.upscale output ({first.model}, {descriptor.dtype})")
        return [_join(result[i], alphas[i], pictures[i].mode, final) for i in range(len(pictures))]


def cpu_problem(size: tuple[int, int], cpu: bool) -> str | None:
    """Why an image of `size` is too large to upscale on a CPU, or None."""
    if cpu and size[0] * size[1] > MAX_CPU_INPUT_PIXELS:
        return (f"the image is {size[0]} x {size[1]} pixels; on a CPU image.upscale takes at most "
                f"{MAX_CPU_INPUT_PIXELS / 1e6:.1f} megapixels (1024 x 1024), which is minutes already: resize it "
                "first (image.resize), or run on a GPU (device: cuda)")
    return None


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _input_of(params) -> tuple[tuple[int, int], str]:
    """The image's size and mode, read from its header: items with equal ones share a batch."""
    with params.image.open_image() as image:
        return image.size, image.mode


def _sha256(model: str) -> str:
    from studio.weights import file_sha256

    return file_sha256(Path(model))


def _split(pictures: list, channels: int) -> tuple[Any, list]:
    """The images as one (N, channels, H, W) float batch in [0, 1], and each one's alpha
    (a PIL "L" image, or None)."""
    import numpy as np
    import torch

    arrays, alphas = [], []
    for picture in pictures:
        has_alpha = picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info)
        alphas.append(picture.convert("RGBA").getchannel("A") if has_alpha else None)
        plain = picture.convert("L" if channels == 1 else "RGB")
        array = np.asarray(plain, dtype=np.float32) / 255.0
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)), alphas


def _join(result: Any, alpha: Any, mode: str, final: tuple[int, int]) -> Any:
    """One upscaled tensor (C, H, W) as a PIL image in the input's kind of mode, at the
    final size, its alpha enlarged with Lanczos."""
    import numpy as np
    import torch
    from PIL import Image

    array = (result.float().clamp(0, 1) * 255.0).round().to("cpu", dtype=torch.uint8).numpy()
    image = Image.fromarray(array[0] if array.shape[0] == 1 else np.ascontiguousarray(array[:3].transpose(1, 2, 0)))
    if image.size != final:
        image = image.resize(final, Image.Resampling.LANCZOS)
    grey = mode in ("L", "LA", "I", "I;16", "F", "1")
    image = image.convert("L" if grey else "RGB")
    if alpha is not None:
        image = image.convert("LA" if grey else "RGBA")
        image.putalpha(alpha.resize(final, Image.Resampling.LANCZOS))
    return image
