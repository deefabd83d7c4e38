"""style.cyclegan: image-to-image style transfer with a CycleGAN ResnetGenerator.

`model:` takes the embedded default, a directory (Studio's: G_A/G_B safetensors; or the
reference repository's `latest_net_G_A.pth` / `latest_net_G.pth` files), or one `.pth`
or `.safetensors` file. `.pth` files are read with `torch.load(weights_only=True)`:
tensors only, no code runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from studio import Artifact, Generator, Params, UserError, batch_groups, media, media_input, model_input
from studio.limits import on_cpu
from studio.weights import load_pth, loading, pickled_code, resolve_weights, safetensors_problem, short

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "cyclegan"
MIN_SIDE = 16  # smaller images are scaled up to this and back
# Pixels the network works on per image on a CPU, and per forward pass anywhere: a
# 2048 x 2048 image holds about 1 GB in each full-size activation (64 channels, fp32).
MAX_CPU_WORK_PIXELS = 2048 * 2048
CHUNK_PIXELS = 2048 * 2048
LOAD_FIX = ("Give 'default', a directory of G_A/G_B .safetensors (what `studio train style.cyclegan` writes) "
            "or the reference implementation's latest_net_G*.pth, or one such file")
# direction -> file names tried in a directory, Studio's first, then the reference repo's
FILES = {
    "AtoB": ("G_A.safetensors", "latest_net_G_A.pth", "latest_net_G.pth"),
    "BtoA": ("G_B.safetensors", "latest_net_G_B.pth"),
}


def read_state_dict(path: Path) -> dict:
    """Tensors from a .safetensors or .pth file; anything else is refused."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path.name}: not a readable safetensors file ({short(exc)}); it is damaged or "
                            "not weights") from exc
    state = load_pth(path)  # weights_only: a pickle with code is refused, never run
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path.name}: expected a state_dict (a mapping of names to tensors), got "
                        f"{type(state).__name__}; give a CycleGAN generator checkpoint such as latest_net_G.pth")
    return state


def weights_file(model: str, direction: str) -> Path:
    path = Path(resolve_weights(model, DEFAULT_WEIGHTS))
    if path.is_file():
        if direction == "BtoA":
            raise UserError(f"model {model!r} is one generator file: it only goes one way; use direction AtoB, "
                            "or give a directory with both G_A and G_B")
        return path
    if path.is_dir():
        for name in FILES[direction]:
            if (path / name).is_file():
                return path / name
        raise UserError(f"model directory {model!r} has none of {', '.join(FILES[direction])} "
                        f"(direction {direction})")
    raise UserError(f"model {model!r} not found: give 'default', a directory, or a .pth/.safetensors file")


def load_generator(model: str, direction: str):
    from studio_style.cyclegan_network import clean_state_dict, generator_from_state_dict

    path = weights_file(model, direction)
    with loading(model, "a CycleGAN generator", LOAD_FIX):
        state = read_state_dict(path)
        try:
            return generator_from_state_dict(clean_state_dict(state))
        except (ValueError, RuntimeError, KeyError, IndexError) as exc:
            raise UserError(f"{path.name}: not a CycleGAN ResnetGenerator checkpoint: {str(exc)[:300]}") from exc


def work_size(size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """The size an image of `size` is processed at: its longer side at most max_size,
    its shorter at least MIN_SIDE (before padding to a multiple of 4)."""
    scale = min(1.0, max_size / max(size))
    if min(size) * scale < MIN_SIDE:  # the network's reflection pads need a few pixels per side
        scale = MIN_SIDE / min(size)
    if scale == 1.0:
        return size
    return max(MIN_SIDE, round(size[0] * scale)), max(MIN_SIDE, round(size[1] * scale))


class StyleCycleGAN(Generator):
    name = "style.cyclegan"
    description = ("Style transfer with a CycleGAN ResnetGenerator: the embedded photo-to-clip-art "
                   "model, or the reference implementation's published generators (.pth).")
    outputs = {"image": media.IMAGE}
    precisions = ("bf16", "fp16", "fp32")
    default_weights = DEFAULT_WEIGHTS
    batchable = True
    max_batch_size = 16

    class Params(Params):
        model: str = model_input(
            "default", files=tuple(dict.fromkeys(FILES["AtoB"] + FILES["BtoA"])), suffixes=(".pth", ".safetensors"),
            description=("'default' (embedded photo -> clip art), a directory (G_A/G_B .safetensors, or the "
                         "reference repo's latest_net_G_A.pth/latest_net_G_B.pth/latest_net_G.pth), or one "
                         ".pth/.safetensors file. A .pth is read as tensors only: one that holds code is refused."))
        image: Artifact = media_input("image/*", description="The image to restyle: an upstream image or a file.")
        direction: Literal["AtoB", "BtoA"] = Field("AtoB", description=(
            "AtoB: the model's forward style (photo -> clip art for the default); BtoA: back, "
            "where the model has both generators."))
        max_size: int = Field(512, ge=16, le=4096, description=(
            "Images with a longer side than this are processed at this size, and the result is "
            "scaled back to the input's size. On a CPU an image is processed at 2048 x 2048 pixels at most."))

        @model_validator(mode="after")
        def fits_the_device(self, info: ValidationInfo):
            size = self.image.info
            if "width" in size:  # a file, or an upstream image at run time
                problem = work_size_problem((size["width"], size["height"]), self.max_size, on_cpu(info))
                if problem:
                    raise ValueError(problem)
            return self

        @model_validator(mode="after")
        def weights_are_tensors(self):
            # the file this direction loads: refused at once when it is one way only or
            # when its pickle would run code (its opcodes are read, nothing is loaded)
            if self.model == "default" or not Path(self.model).exists():
                return self
            try:
                path = weights_file(self.model, self.direction)
            except UserError as exc:
                raise ValueError(str(exc)) from None
            if path.suffix == ".safetensors":
                problem = safetensors_problem(path)
                if problem:
                    raise ValueError(f"model {self.model!r}: {problem}")
            code = pickled_code(path) if path.suffix.lower() == ".pth" else None
            if code:
                raise ValueError(f"model {self.model!r}: {path.name} contains pickled code (loading it would call "
                                 f"{code}); Studio loads only weights: convert it to safetensors "
                                 "(safetensors.torch.save_file(state_dict, 'G_A.safetensors')) where you trust it")
            return self

    def model_key(self, params: Params) -> str:  # one model per direction
        return f"{super().model_key(params)}#{params.direction}"

    def weights_id(self, params: Params) -> str:
        return super().weights_id(params) + params.direction

    def load(self, params: Params, ctx) -> Any:
        return load_generator(params.model, params.direction)

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        import torch

        out: list[dict | None] = [None] * len(params)
        images: dict[int, dict[str, Any]] = {}
        keys: list[tuple] = []
        for i, p in enumerate(params):  # one forward pass per model, direction and working size
            image = p.image.open_image()
            problem = work_size_problem(image.size, p.max_size, ctxs[i].device.split(":")[0] == "cpu")
            if problem:  # before any tensor exists
                raise UserError(problem)
            images[i] = prepare(image, p.max_size)
            keys.append((self.model_key(p), tuple(images[i]["tensor"].shape)))
        for indexes in batch_groups(keys):
            net = ctxs[indexes[0]].model(self, params[indexes[0]])
            weight = next(net.parameters())
            batch = torch.stack([to_channels(images[i]["tensor"], net.input_nc) for i in indexes])
            per_pass = max(1, CHUNK_PIXELS // (batch.shape[2] * batch.shape[3]))  # large images a few at a time
            with ctxs[indexes[0]].autocast():
                result = torch.cat([net(part.to(weight.device, weight.dtype)).float().cpu()
                                    for part in batch.split(per_pass)])
            for i, tensor in zip(indexes, result):
                out[i] = {"image": finish(tensor, images[i])}
                ctxs[i].record(processed_size=list(images[i]["work_size"]))
        return out  # type: ignore[return-value]


def work_size_problem(size: tuple[int, int], max_size: int, cpu: bool) -> str | None:
    """Why an image of `size` is too large to process on a CPU, or None."""
    w, h = work_size(size, max_size)
    if cpu and w * h > MAX_CPU_WORK_PIXELS:
        return (f"a {size[0]} x {size[1]} image at max_size {max_size} is processed at {w} x {h} pixels; on a CPU "
                f"style.cyclegan processes at most {MAX_CPU_WORK_PIXELS / 1e6:.1f} megapixels (2048 x 2048). Lower "
                "max_size, or run on a GPU (device: cuda)")
    return None


def to_channels(tensor, channels: int):
    """RGB (3, h, w) -> what the model takes: as is, or the mean for a 1-channel model."""
    return tensor if channels == 3 else tensor.mean(dim=0, keepdim=True)


def prepare(image, max_size: int) -> dict[str, Any]:
    """PIL image -> a [-1, 1] RGB tensor the generator takes, no larger than `max_size`,
    reflection-padded to a multiple of 4 (two stride-2 stages)."""
    import numpy as np
    import torch
    from PIL import Image

    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    alpha = image.convert("RGBA").getchannel("A") if has_alpha else None
    work = image.convert("RGB")
    size = work.size
    if work_size(size, max_size) != size:
        work = work.resize(work_size(size, max_size), Image.Resampling.LANCZOS)
    array = np.asarray(work, dtype=np.float32) / 127.5 - 1.0  # the reference's Normalize((0.5,), (0.5,))
    tensor = torch.from_numpy(array if array.ndim == 3 else array[..., None]).permute(2, 0, 1)
    h, w = tensor.shape[1:]
    pad_h, pad_w = (-h) % 4, (-w) % 4
    if pad_h or pad_w:
        mode = "reflect" if h > pad_h and w > pad_w else "replicate"
        tensor = torch.nn.functional.pad(tensor[None], (0, pad_w, 0, pad_h), mode=mode)[0]
    return {"tensor": tensor, "work_size": (w, h), "size": size, "alpha": alpha}


def finish(tensor, prepared: dict[str, Any]):
    """Generator output -> PIL image at the input's size, with the input's alpha."""
    from PIL import Image

    w, h = prepared["work_size"]
    array = ((tensor[:, :h, :w].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")
    if image.size != prepared["size"]:
        image = image.resize(prepared["size"], Image.Resampling.LANCZOS)
    if prepared["alpha"] is not None:
        image = image.convert("RGBA")
        image.putalpha(prepared["alpha"])
    return image
