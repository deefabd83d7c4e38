"""Device and precision policy, autocast, the model cache and its memory budget, and the
NaN/Inf guard. torch is imported on first use only, so the CLI and validation stay fast.

The runtime knows torch modules, not model families: a generator whose model is more
than modules (a diffusers pipeline, a tokenizer beside a network) prepares it in its own
`prepare()` with the building blocks here (`prepare`, `upcast_on_overflow`, `compile`)."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
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
    elif isinstance(obj, (tuple, list)):
        return sum(module_nbytes(o) for o in obj)
    elif isinstance(obj, dict):
        return sum(module_nbytes(o) for o in obj.values())
    else:  # an object holding modules as attributes (a pipeline of several models)
        for part in getattr(obj, "__dict__", {}).values():
            if isinstance(part, torch.nn.Module):
                add(part)
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


@dataclass(frozen=True)
class ModelBudget:
    """How many bytes of loaded models the model cache keeps: `cpu` when models live in
    the machine's memory, `gpu` when they live on a GPU; None: the default for it."""

    cpu: int | None = None
    gpu: int | None = None

    def given_for(self, device: str) -> int | None:
        return self.gpu if device.startswith("cuda") else self.cpu

    def for_device(self, device: str) -> int:
        given = self.given_for(device)
        return given if given is not None else default_budget(device)


class Runtime:
    """One per run: where models live, in what precision, and the cache that keeps them
    loaded within one memory budget."""

    def __init__(self, device: str = "auto", precision: str = "auto", budget: ModelBudget | None = None):
        self.requested_device = device
        self.requested_precision = precision
        self.budget = budget or ModelBudget()
        self._device: str | None = None
        self._models: ModelCache | None = None
        self.compiled = 0  # modules compiled (facts of how models were prepared, for the manifest)
        self.upcast: list[str] = []  # fp16 modules that overflowed and now run in fp32

    @property
    def device(self) -> str:
        """Resolved on first use: a pipeline of torch-free generators never imports torch."""
        if self._device is None:
            self._device = resolve_device(self.requested_device)
        return self._device

    @property
    def models(self) -> ModelCache:
        if self._models is None:
            self._models = ModelCache(self.budget.for_device(self.device))
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
        """Move a freshly loaded torch module to the device and precision (the weights
        themselves, not autocast over fp32 weights), in eval mode without gradients, its
        fp32-only parts kept in fp32; with `compile`, torch.compile it. A dict, list or
        tuple of modules: each part. Anything else is returned as it is."""
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            model = model.to(device=self.device, dtype=self.torch_dtype(precision)).eval()
            model.requires_grad_(False)
            keep_fp32_modules(model)
            if compile:
                self.compile(model)
        elif isinstance(model, dict):
            model = {k: self.prepare(v, precision, compile=compile) for k, v in model.items()}
        elif isinstance(model, (list, tuple)) and torch is not None and any(
                isinstance(v, torch.nn.Module) for v in model):
            model = [self.prepare(v, precision, compile=compile) for v in model]
        return model

    def upcast_on_overflow(self, module: Any, method: str = "decode") -> None:
        """Per-component precision for an fp16 module: when `module.<method>` gives Inf or
        NaN, the module moves to fp32 for good and the call runs again, its first input
        cast to match. fp16 tops out at 65504 and autoencoders' decoders can pass it
        (SDXL's VAE does); the rest of the model stays in fp16, and bf16, with fp32's
        range, needs no guard."""
        torch = _torch()
        call = getattr(module, method)

        def guarded(x, *args, **kwargs):
            out = call(x.to(module.dtype), *args, **kwargs)
            if module.dtype == torch.float16 and not all(bool(torch.isfinite(t).all()) for t in _tensors(out)):
                module.to(torch.float32)
                self.upcast.append(type(module).__name__)
                out = call(x.float(), *args, **kwargs)
            return out

        setattr(module, method, guarded)

    def compile(self, module: Any) -> None:
        """Compile in place (nn.Module.compile), so attributes and methods stay as they
        were. "reduce-overhead" captures CUDA graphs: small models are launch-bound.
        nn.Module.compile covers calls of the module itself: a model used through other
        methods (an autoencoder's encode/decode) compiles the parts those call instead."""
        module.compile(mode="reduce-overhead" if self.device.startswith("cuda") else "default")
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
        cache = self._models
        budget = cache.max_bytes if cache is not None else self.budget.given_for(self._device or self.requested_device)
        if cache is not None or budget is not None:
            out["model_cache"] = {"budget_gb": round(budget / 2**30, 2) if budget else None,
                                  **({"loads": cache.loads, "hits": cache.hits, "evictions": cache.evictions}
                                     if cache is not None else {})}
        return out


def _tensors(out: Any) -> list[Any]:
    """The tensors a module call returned: a tensor, a tuple of them, or an output
    object holding them as attributes (what libraries' model outputs are)."""
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):  # diffusers' and transformers' outputs are ordered dicts
        values = out.values()
    else:
        values = out if isinstance(out, (tuple, list)) else getattr(out, "__dict__", {}).values()
    return [v for v in values if isinstance(v, torch.Tensor)]


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
