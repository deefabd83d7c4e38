"""image.gan: samples from a DCGAN, with truncation and latent interpolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from studio import Generator, Params, UserError, media, model_input
from studio import check_finite
from studio.weights import config, loading, model_problem, refuse, short

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "gan"
MAX_IMAGE_SIZE = 1024  # a strip of 64 frames at this size is the largest image Studio writes
CHUNK_PIXELS = 2**26  # images per forward pass: at most this many output pixels at once
LOAD_FIX = "Give 'default' or a directory that `studio train image.gan --out DIR` wrote"


def resolve_dir(model: str) -> Path:
    path = DEFAULT_WEIGHTS if model == "default" else Path(model).expanduser()
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise UserError(f"model {model!r}: expected a directory with config.json and model.safetensors "
                        "(what `studio train image.gan --out DIR` writes)")
    return path


def config_problem(data: dict[str, Any]) -> str | None:
    """Why a GAN config.json does not describe a DCGAN Studio builds, or None. The
    network is built from these numbers, so they are bounded before anything is."""
    if data.get("architecture") != "dcgan":
        return f"config.json is not a Studio DCGAN's (architecture: {data.get('architecture')!r}, expected 'dcgan')"
    size = data.get("image_size", 16)
    if not isinstance(size, int) or size < 8 or size > MAX_IMAGE_SIZE or size & (size - 1):
        return f"config.json: image_size {size!r} is not a power of two from 8 to {MAX_IMAGE_SIZE}"
    if data.get("channels", 1) not in (1, 3):
        return f"config.json: channels {data.get('channels')!r} is not 1 (grey) or 3 (RGB)"
    for key, limit in (("z_dim", 4096), ("ngf", 1024), ("ndf", 1024)):
        value = data.get(key, 64)
        if not isinstance(value, int) or not 1 <= value <= limit:
            return f"config.json: {key} {value!r} is not an integer from 1 to {limit}"
    return None


class ImageGAN(Generator):
    name = "image.gan"
    description = ("Images from a DCGAN in one forward pass; `interpolate_to` walks the latent space "
                   "to another seed's image as a strip of frames.")
    outputs = {"image": media.IMAGE}
    precisions = ("bf16", "fp16", "fp32")
    batchable = True
    max_batch_size = 64
    default_weights = DEFAULT_WEIGHTS

    class Params(Params):
        model: str = model_input("default", files=("config.json",), description=(
            "'default' (embedded) or a directory `studio train image.gan` wrote (config.json, model.safetensors)."))
        truncation: float = Field(1.0, ge=0.05, le=1.0, description=(
            "Scale the latent toward its mean: lower trades variety for typical-looking images."))
        interpolate_to: int | None = Field(None, ge=0, le=2**63 - 1,
                                           description="Another seed: walk from this item's latent to that one's.")
        frames: int = Field(8, ge=2, le=64, description="Frames in an interpolation strip.")

        @field_validator("model")
        @classmethod
        def is_a_dcgan(cls, value: str) -> str:
            if value == "default" or not Path(value).is_dir():
                return value
            path = Path(value)
            if not (path / "model.safetensors").is_file():
                raise ValueError(f"model {value!r} has no model.safetensors beside its config.json (what "
                                 "`studio train image.gan --out DIR` writes)")
            problem = model_problem(value, path, config_problem)
            if problem:
                raise ValueError(problem)
            return value

    def load(self, params: Params, ctx) -> Any:
        import torch
        from safetensors.torch import load_file

        from studio_image.gan_network import DCGenerator, GANConfig

        path = resolve_dir(params.model)
        refuse(params.model, path)
        with loading(params.model, "a DCGAN", LOAD_FIX):
            data = config(path)
            problem = config_problem(data)
            if problem:
                raise UserError(f"model {params.model!r}: {problem}")
            state = load_file(path / "model.safetensors")
            # built without memory and given the file's tensors: the model takes what the
            # weights file holds, whatever its config claims
            with torch.device("meta"):
                model = DCGenerator(GANConfig.from_dict(data))
            try:
                model.load_state_dict(state, assign=True)
            except RuntimeError as exc:
                raise UserError(f"model {params.model!r}: model.safetensors does not match its config.json "
                                f"({short(exc)}). {LOAD_FIX}") from exc
        return model

    def _latent(self, seed: int, z_dim: int):
        import torch

        return torch.randn(z_dim, generator=torch.Generator("cpu").manual_seed(seed))

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        import torch

        from studio_image.gan_network import slerp

        model = ctxs[0].model(self, params[0])
        z_dim = model.config.z_dim
        latents, counts = [], []
        for p, c in zip(params, ctxs):
            start = self._latent(c.seed, z_dim)
            if p.interpolate_to is None:
                path = [start]
            else:
                end = self._latent(p.interpolate_to, z_dim)
                path = [slerp(start, end, i / (p.frames - 1)) for i in range(p.frames)]
            latents += [z * p.truncation for z in path]
            counts.append(len(path))
        param = next(model.parameters())
        size = model.config.image_size
        chunk = max(1, CHUNK_PIXELS // (size * size))  # a batch of long walks at a large size: in parts
        stacked = torch.stack(latents)
        with ctxs[0].autocast():
            images = torch.cat([model(part.to(param.device, param.dtype)).float()
                                for part in stacked.split(chunk)])
        check_finite(images, f"image.gan output ({params[0].model}, {param.dtype})")
        from studio_imagedata.images import to_pil

        pil = to_pil(images)
        out, at = [], 0
        for n in counts:
            out.append({"image": _strip(pil[at:at + n])})
            at += n
        return out


def _strip(frames: list) -> Any:
    if len(frames) == 1:
        return frames[0]
    from PIL import Image

    w, h = frames[0].size
    strip = Image.new(frames[0].mode, (w * len(frames), h))
    for i, frame in enumerate(frames):
        strip.paste(frame, (i * w, 0))
    return strip
