"""image.gan: samples from a DCGAN, with truncation and latent interpolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from studio import Generator, Params, media
from studio.errors import UserError
from studio.generator import weights_fingerprint
from studio.runtime import check_finite

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "gan"


def resolve_dir(model: str) -> Path:
    path = DEFAULT_WEIGHTS if model == "default" else Path(model).expanduser()
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise UserError(f"model {model!r}: expected a directory with config.json and model.safetensors "
                        "(what `studio train image.gan --out DIR` writes)")
    return path


class ImageGAN(Generator):
    name = "image.gan"
    description = ("Images from a DCGAN in one forward pass; `interpolate_to` walks the latent space "
                   "to another seed's image as a strip of frames.")
    outputs = {"image": media.IMAGE}
    precisions = ("bf16", "fp16", "fp32")
    batchable = True
    max_batch_size = 64

    class Params(Params):
        model: str = Field("default", max_length=500, description="'default' (embedded) or a trained directory.")
        truncation: float = Field(1.0, ge=0.05, le=1.0, description=(
            "Scale the latent toward its mean: lower trades variety for typical-looking images."))
        interpolate_to: int | None = Field(None, ge=0, le=2**63 - 1,
                                           description="Another seed: walk from this item's latent to that one's.")
        frames: int = Field(8, ge=2, le=64, description="Frames in an interpolation strip.")

    def model_key(self, params: Params) -> str:
        return str(resolve_dir(params.model).resolve())

    def weights_id(self, params: Params) -> str:
        return weights_fingerprint(params.model, DEFAULT_WEIGHTS)

    def load(self, params: Params, ctx) -> Any:
        from safetensors.torch import load_file

        from studio_image.gan_model import DCGenerator, GANConfig

        path = resolve_dir(params.model)
        config = GANConfig.from_dict(json.loads((path / "config.json").read_text()))
        model = DCGenerator(config)
        model.load_state_dict(load_file(path / "model.safetensors"))
        return model

    def _latent(self, seed: int, z_dim: int):
        import torch

        return torch.randn(z_dim, generator=torch.Generator("cpu").manual_seed(seed))

    def generate(self, params: Params, ctx) -> dict:
        return self.generate_batch([params], [ctx])[0]

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        import torch

        from studio_image.gan_model import slerp

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
        with ctxs[0].autocast():
            images = model(torch.stack(latents).to(param.device, param.dtype)).float()
        check_finite(images, f"image.gan output ({params[0].model}, {param.dtype})")
        from studio_image.diffusion import _to_pil

        pil = _to_pil(images)
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
