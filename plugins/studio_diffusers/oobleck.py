"""diffusers' AutoencoderOobleck, the VAE of Stable Audio Open: finding its config,
loading it safely and turning audio into latents and back. audio.vae generates with it;
eval measures audio sets in its latent space. Every function that resolves 'default'
takes the embedded weights' folder, so each caller names its own."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

from studio import UserError
from studio.weights import config, loading, local_path, refuse

LOAD_FIX = ("Give 'default', a diffusers VAE directory (config.json + diffusion_pytorch_model.safetensors), a "
            "Stable Audio Open directory with a vae/ folder, or a hub id in your Hugging Face cache")


def vae_folder(path: str) -> tuple[str, str | None]:
    """(path, subfolder) for from_pretrained: a VAE directory itself, or a pipeline
    directory with the VAE in `vae/` (Stable Audio Open's layout)."""
    root = Path(path)
    if not (root / "config.json").is_file() and (root / "vae" / "config.json").is_file():
        return path, "vae"
    if root.exists():
        return path, None
    return path, "vae"  # a hub id names a pipeline repository, as stabilityai/stable-audio-open-1.0


def vae_config(model: str, default_dir: Path) -> dict[str, Any] | None:
    """The VAE's config.json as a dict, read without loading weights; None when there is
    nothing local to read."""
    root = local_path(model, default_dir)
    if root is None or not root.is_dir():
        return None
    _, subfolder = vae_folder(str(root))
    return config(root / subfolder if subfolder else root)


def config_problem(data: dict[str, Any]) -> str | None:
    """Why a config.json is not an AutoencoderOobleck's, or None."""
    if data.get("_class_name") != "AutoencoderOobleck":
        return (f"its config.json describes a {data.get('_class_name')!r}, not an AutoencoderOobleck (Stable Audio "
                "Open's VAE)")
    return None


def hop_and_rate(data: dict[str, Any]) -> tuple[int, int] | None:
    """(samples per latent frame, sample rate) from an Oobleck config, as diffusers derives them."""
    ratios, rate = data.get("downsampling_ratios"), data.get("sampling_rate")
    if not isinstance(ratios, list) or not all(isinstance(r, int) and r > 0 for r in ratios) or \
            not isinstance(rate, int) or rate <= 0:
        return None
    hop = 1
    for r in ratios:
        hop *= r
    return hop, rate


def load_vae(model: str, default_dir: Path) -> Any:
    """An AutoencoderOobleck from 'default' (the weights in `default_dir`), a directory,
    or a hub id in the local cache."""
    import diffusers
    from diffusers import AutoencoderOobleck

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    root = local_path(model, default_dir)
    refuse(model, root, ("", "vae"))
    path, subfolder = vae_folder(str(root) if root is not None else model)
    with loading(model, "an AutoencoderOobleck", LOAD_FIX):
        data = vae_config(model, default_dir)
        problem = config_problem(data) if data else None
        if problem:
            raise UserError(f"model {model!r}: {problem}. {LOAD_FIX}")
        with quiet_weight_norm():
            # local files only, safetensors only: nothing is downloaded and no pickle is read
            return AutoencoderOobleck.from_pretrained(path, subfolder=subfolder, use_safetensors=True,
                                                      local_files_only=True)


@contextlib.contextmanager
def quiet_weight_norm():
    """diffusers builds Oobleck with torch's older weight_norm, which warns on every
    layer; the warning is for diffusers' authors, not for a user of a pipeline."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        yield


def encode(vae, clip) -> Any:
    """(channels, frames) float32 -> latent means (1, latent channels, latent frames),
    float32 on the CPU. The input is padded to a whole number of hops."""
    import torch

    hop = int(vae.hop_length)
    pad = (-clip.shape[1]) % hop
    x = torch.nn.functional.pad(clip, (0, pad))[None].to(vae.device, vae.dtype)
    return vae.encode(x).latent_dist.mean.float().cpu()


def decode(vae, z) -> Any:
    """Latents -> (channels, frames) float32 on the CPU."""
    return vae.decode(z.to(vae.device, vae.dtype)).sample[0].float().cpu()
