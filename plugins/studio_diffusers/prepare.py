"""Readying diffusers models for a step: what `Generator.prepare` does for a pipeline
(several models as attributes) and for an autoencoder (used through `encode`/`decode`,
not called itself)."""

from __future__ import annotations

from typing import Any


def is_autoencoder(module: Any) -> bool:
    """A diffusers autoencoder (AutoencoderKL, AutoencoderOobleck, ...)."""
    return type(module).__module__.startswith("diffusers.models.autoencoders")


def prepare_autoencoder(vae: Any, ctx: Any) -> Any:
    """On the device in the step's precision. In fp16 its `decode` is guarded: when the
    output overflows, the autoencoder moves to fp32 and the call runs again (decoders'
    last layers can pass fp16's 65504; SDXL's VAE does). Compiling compiles the encoder
    and decoder its methods call, since the autoencoder itself is never called."""
    vae = ctx.runtime.prepare(vae, ctx.precision)
    if ctx.precision == "fp16":
        ctx.runtime.upcast_on_overflow(vae, "decode")
    if ctx.compile:
        import torch

        parts = [getattr(vae, name, None) for name in ("encoder", "decoder")]
        for part in [p for p in parts if isinstance(p, torch.nn.Module)] or [vae]:
            ctx.runtime.compile(part)
    return vae


def prepare_pipeline(pipe: Any, ctx: Any) -> Any:
    """Every model of a diffusers pipeline on the device in the step's precision, its
    autoencoder guarded as above; the pipeline object itself is kept."""
    import torch

    for part in pipe.components.values():
        if not isinstance(part, torch.nn.Module):
            continue
        if is_autoencoder(part):
            prepare_autoencoder(part, ctx)
        else:
            ctx.runtime.prepare(part, ctx.precision, compile=ctx.compile)
    return pipe
