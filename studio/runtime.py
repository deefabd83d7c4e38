"""Device and precision policy, autocast, the model cache and the NaN/Inf guard.
torch is imported on first use only, so the CLI and validation stay fast."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections import OrderedDict
from typing import Any, Callable

from studio.errors import NonFiniteOutput, UserError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _torch():
    import torch

    return torch


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when CUDA is available, else 'cpu'. A CUDA device that is not
    there is a user error, not a silent fall back."""
    if requested == "cpu":
        return "cpu"
    torch = _torch()
    available = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise UserError(
            f"device {requested!r} was asked for, but CUDA is not available here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). "
            "Use `device: auto` or `--device cpu`."
        )
    if ":" in requested:
        index = int(requested.split(":", 1)[1])
        count = torch.cuda.device_count()
        if index >= count:
            raise UserError(f"device {requested!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    return requested


def choose_precision(requested: str, device: str, supported: tuple[str, ...], *,
                     bf16_ok: bool | None = None) -> str:
    """The precision one generator runs in: the pipeline's wish, narrowed to what the
    generator supports. auto = on CUDA, the generator's first choice among what the GPU
    runs (bf16 needs Ampere or newer); fp32 on CPU (bf16 on a CPU without bf16 units is
    many times slower than fp32)."""
    if requested == "auto":
        if device.startswith("cuda"):
            if bf16_ok is None:
                bf16_ok = _torch().cuda.is_bf16_supported()
            wishes = [p for p in supported if p != "bf16" or bf16_ok]
        else:
            wishes = ["fp32"]
    else:
        wishes = [requested, "fp32"]
    for wish in wishes:
        if wish in supported:
            return wish
    return supported[0]


def module_nbytes(obj: Any) -> int:
    """Bytes held by a model's parameters and buffers (0 for non-torch objects)."""
    if "torch" not in sys.modules:
        return 0
    torch = sys.modules["torch"]
    seen: set[int] = set()
    total = 0

    def add(module) -> None:
        nonlocal total
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()

    if isinstance(obj, torch.nn.Module):
        add(obj)
    elif hasattr(obj, "components"):  # a diffusers pipeline
        for part in obj.components.values():
            if isinstance(part, torch.nn.Module):
                add(part)
    elif isinstance(obj, (tuple, list)):
        return sum(module_nbytes(o) for o in obj)
    elif isinstance(obj, dict):
        return sum(module_nbytes(o) for o in obj.values())
    return total


class ModelCache:
    """Loaded models by key, least recently used evicted first to stay in a byte budget.
    A model used by several steps loads once."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self._models: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.loads = 0
        self.hits = 0
        self.evictions = 0

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        if key in self._models:
            self._models.move_to_end(key)
            self.hits += 1
            return self._models[key][0]
        model = load()
        self.loads += 1
        size = module_nbytes(model)
        if self.max_bytes is not None:
            while self._models and self.used + size > self.max_bytes:
                self._evict(next(iter(self._models)))
        self._models[key] = (model, size)
        return model

    @property
    def used(self) -> int:
        return sum(size for _, size in self._models.values())

    def keys(self) -> list[Any]:
        return list(self._models)

    def _evict(self, key: Any) -> None:
        del self._models[key]
        self.evictions += 1
        free_memory()

    def clear(self) -> None:
        for key in list(self._models):
            self._evict(key)


class Runtime:
    """One per run: where models live and in what precision."""

    def __init__(self, device: str = "auto", precision: str = "auto", max_model_bytes: int | None = None, *,
                 max_ram_bytes: int | None = None, max_vram_bytes: int | None = None):
        self.requested_device = device
        self.requested_precision = precision
        self._device: str | None = None
        self._max_model_bytes = max_model_bytes
        self._max_ram_bytes = max_ram_bytes  # the model cache's budget when models live on the CPU
        self._max_vram_bytes = max_vram_bytes  # ... and when they live on a GPU
        self._models: ModelCache | None = None
        self.compiled = 0  # modules compiled this run
        self.upcast: list[str] = []  # fp16 decoders that overflowed and now run in fp32
        self.batch_shrunk: dict[str, int] = {}  # step -> the batch size it fell back to (out of memory)
        self.first_batch_s: dict[str, float] = {}  # step -> seconds of its first batch, compile included

    @property
    def device(self) -> str:
        """Resolved on first use: a pipeline of torch-free generators never imports torch."""
        if self._device is None:
            self._device = resolve_device(self.requested_device)
        return self._device

    @property
    def models(self) -> ModelCache:
        if self._models is None:
            budget = self._max_model_bytes
            if budget is None:
                budget = self._max_vram_bytes if self.device.startswith("cuda") else self._max_ram_bytes
            self._models = ModelCache(budget if budget is not None else default_budget(self.device))
        return self._models

    def check_device(self) -> None:
        """Fail early (before anything is written) when the device cannot be had."""
        if self.requested_device not in ("auto", "cpu"):
            self.device

    def precision_for(self, supported: tuple[str, ...]) -> str:
        return choose_precision(self.requested_precision, self.device, supported)

    def torch_dtype(self, precision: str):
        return getattr(_torch(), DTYPES[precision])

    def prepare(self, model: Any, precision: str, *, compile: bool = False) -> Any:
        """Move a freshly loaded model to the device and precision (the weights
        themselves, not autocast over fp32 weights); eval mode; in fp16, guard its
        decoders against overflow; with `compile`, torch.compile its modules (CUDA
        graphs on a GPU)."""
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            model = model.to(device=self.device, dtype=self.torch_dtype(precision)).eval()
            model.requires_grad_(False)
            self._finish_module(model, precision, compile)
        elif hasattr(model, "to") and hasattr(model, "components"):  # diffusers pipeline
            model = model.to(self.device, self.torch_dtype(precision))
            for part in model.components.values():  # its VAE is guarded as any autoencoder is
                if torch is not None and isinstance(part, torch.nn.Module):
                    self._finish_module(part, precision, compile)
        elif isinstance(model, dict):  # several parts: prepare each
            model = {k: self.prepare(v, precision, compile=compile) for k, v in model.items()}
        return model

    def _finish_module(self, module: Any, precision: str, compile: bool) -> None:
        """What every module gets once it is on the device in its dtype: its fp32-only
        parts back in fp32, the overflow guard on an fp16 autoencoder, compiling."""
        keep_fp32_modules(module)
        if precision == "fp16" and is_autoencoder(module):
            self.upcast_on_overflow(module)
        if compile:
            self._compile(module)

    def upcast_on_overflow(self, module: Any) -> None:
        """Per-component precision for an fp16 decoder (a diffusers autoencoder's
        `decode`): when its output overflows (Inf/NaN), the module moves to fp32 for good
        and the call runs again, its input cast to match. fp16 tops out at 65504 and VAE
        decoders' last layers can pass it (SDXL's VAE does); the rest of the model stays
        in fp16, and bf16, with fp32's range, needs no guard."""
        torch = _torch()
        decode = module.decode

        def guarded(z, *args, **kwargs):
            out = decode(z.to(module.dtype), *args, **kwargs)
            sample = out[0] if isinstance(out, tuple) else out.sample
            if module.dtype == torch.float16 and not bool(torch.isfinite(sample).all()):
                module.to(torch.float32)
                self.upcast.append(type(module).__name__)
                out = decode(z.float(), *args, **kwargs)
            return out

        module.decode = guarded

    def _compile(self, module: Any) -> None:
        """Compile in place (nn.Module.compile), so attributes and methods stay as they
        were. "reduce-overhead" captures CUDA graphs: small models are launch-bound.
        nn.Module.compile covers calls of the module itself, and an autoencoder is used
        through its `encode`/`decode` methods: its encoder and decoder are compiled."""
        mode = "reduce-overhead" if self.device.startswith("cuda") else "default"
        parts = [module]
        if is_autoencoder(module):
            parts = [getattr(module, name) for name in ("encoder", "decoder")
                     if isinstance(getattr(module, name, None), _torch().nn.Module)] or parts
        for part in parts:
            part.compile(mode=mode)
            self.compiled += 1

    def autocast(self, precision: str):
        if precision == "fp32" or not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        return _torch().autocast("cuda", dtype=self.torch_dtype(precision))

    def inference(self):
        if "torch" in sys.modules:
            return sys.modules["torch"].inference_mode()
        return contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self._device or "none (no generator used torch)",
                               "requested_device": self.requested_device,
                               "precision": self.requested_precision}
        torch = sys.modules.get("torch")
        if torch is not None and self._device and self._device.startswith("cuda"):
            out["gpu"] = torch.cuda.get_device_name(self._device)
        if self.upcast:
            out["upcast_to_fp32"] = self.upcast
        if self.batch_shrunk:
            out["batch_size_after_out_of_memory"] = self.batch_shrunk
        if self.first_batch_s:
            out["compile"] = {"modules": self.compiled, "first_batch_s (includes compiling)": self.first_batch_s}
        cache = self._models
        budget = cache.max_bytes if cache is not None else self._requested_budget()
        if cache is not None or budget is not None:
            out["model_cache"] = {"budget_gb": round(budget / 2**30, 2) if budget else None,
                                  **({"loads": cache.loads, "hits": cache.hits, "evictions": cache.evictions}
                                     if cache is not None else {})}
        return out

    def _requested_budget(self) -> int | None:
        if self._max_model_bytes is not None:
            return self._max_model_bytes
        on_gpu = (self._device or self.requested_device).startswith("cuda")
        return self._max_vram_bytes if on_gpu else self._max_ram_bytes


def keep_fp32_modules(model: Any) -> None:
    """Per-component precision as the model's authors declare it: the submodules named in
    diffusers' and transformers' `_keep_in_fp32_modules` go back to fp32 after a cast
    (the models' code casts their inputs to match), as `from_pretrained(torch_dtype=)`
    would leave them."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    if not keep or next(model.parameters(), None) is None or next(model.parameters()).dtype == _torch().float32:
        return
    for name, module in model.named_modules():
        if any(k in name.split(".") for k in keep):
            module.float()


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), MemoryError, or an allocator's RuntimeError
    saying it is out of memory: on a GPU or a CPU, a smaller batch may fit."""
    torch = sys.modules.get("torch")
    if isinstance(exc, MemoryError) or (torch is not None and isinstance(exc, torch.OutOfMemoryError)):
        return True
    words = (
        "out of memory",  # CUDA, MPS, and most allocators
        "can't allocate memory",  # torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: ..."
        "cannot allocate memory",  # ENOMEM in words
    )
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in words)


def is_autoencoder(module: Any) -> bool:
    """A diffusers autoencoder (AutoencoderKL, AutoencoderOobleck, ...)."""
    return type(module).__module__.startswith("diffusers.models.autoencoders")


def default_budget(device: str) -> int:
    if device.startswith("cuda"):
        return int(_torch().cuda.get_device_properties(device).total_memory * 0.8)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def free_memory() -> None:
    """Collect garbage and give cached CUDA blocks back to the device."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_finite(value: Any, where: str) -> None:
    """Raise NonFiniteOutput when a tensor or array holds NaN or Inf."""
    array = getattr(value, "samples", value)
    torch = sys.modules.get("torch")
    bad = False
    if torch is not None and isinstance(array, torch.Tensor):
        bad = array.is_floating_point() and not bool(torch.isfinite(array).all())
    elif type(array).__module__ == "numpy" and hasattr(array, "dtype"):
        import numpy as np

        bad = np.issubdtype(array.dtype, np.floating) and not bool(np.isfinite(array).all())
    if bad:
        raise NonFiniteOutput(
            f"{where} contains NaN or Inf values. This usually means an overflow in half "
            "precision: run again with `precision: fp32` (or --precision fp32); if it "
            "persists, the weights or the inputs are broken."
        )
