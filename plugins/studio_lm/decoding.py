"""Token-by-token decoding for transformers causal LMs over a static key/value cache.

The cache is allocated once at its full length and filled in place, and every decode
step has the same shapes (one token per row, a mask of the full length). That is what
lets a compiled model (`compile:` in a pipeline; `torch.compile(mode="reduce-overhead")`
on CUDA) replay one captured CUDA graph per token instead of launching each kernel from
Python, which is where a small model's decoding time goes (transformers documents the
same recipe: a static cache, a compiled forward, an eager prefill).

The prefill (the prompt, any length) calls `model.forward` directly: it runs eagerly even
when the module was compiled in place by `nn.Module.compile`, so prompts of new lengths
never trigger a recompile. Decode steps call `model(...)`, the compiled path when there
is one.

A static cache is kept per model and reused when the batch size and length match, so
its tensors keep their addresses from one call to the next (a captured graph reads them
there). Only the latest is kept: a GPT-2 124M cache of 16 rows x 1024 positions is
0.6 GB in bf16.

An eager model gets transformers' dynamic cache instead, with the same steps: uncompiled,
attending over the full static length costs more than it saves (measured on the
embedded music model on CPU: 23% slower).

It lives in studio_lm, beside the sampling loop that drives it, because it is
transformers code (its cache classes, its causal LMs' forward signature): the host
package `studio` knows no model family.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

# model -> (batch, length, cache) of its most recent decode
_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

LENGTH_STEP = 64  # cache lengths are rounded up to this, so nearby requests share a shape


def cache_length(needed: int, context: int) -> int:
    """`needed` positions rounded up to a multiple of LENGTH_STEP, at most `context`."""
    return min(context, -(-needed // LENGTH_STEP) * LENGTH_STEP)


class Decoder:
    """Holds a batch's cache, attention mask and positions between steps.

    decoder = Decoder(model, batch=2, length=128)
    logits = decoder.prefill(ids, mask)   # (batch, vocab) at each row's last token
    logits = decoder.step(next_tokens)    # one new token per row

    `static`: None chooses a static cache for a compiled model, a dynamic one otherwise.
    """

    def __init__(self, model: Any, batch: int, length: int, *, static: bool | None = None):
        import torch

        self.model, self.batch, self.length = model, batch, length
        self.device = next(model.parameters()).device
        self.static = is_compiled(model) if static is None else static
        self.cache = _cache_for(model, batch, length) if self.static else None
        self.mask = torch.zeros((batch, length), dtype=torch.long, device=self.device)
        self.positions: Any = None  # (batch, 1): the position of each row's latest token
        self.filled = 0  # cache slots written
        self.padded = False  # any row of the prompt batch left-padded
        # the last position's logits only, where the model can (a 200-token prompt would
        # otherwise cost 200 vocabulary-sized projections)
        takes = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.prefill_options = {"logits_to_keep": 1} if takes else {}

    @property
    def room(self) -> int:
        return self.length - self.filled

    def prefill(self, ids, mask=None) -> Any:
        """Run the (left-padded) prompts `ids` (batch, width) with their 0/1 `mask`
        (None: no padding); positions count real tokens only, so padding changes
        nothing a row sees."""
        import torch

        if mask is None:
            mask = torch.ones_like(ids)
        width = ids.shape[1]
        if width > self.length:
            raise ValueError(f"prompt of {width} tokens does not fit a cache of {self.length}")
        if self.static:
            self.cache.reset()
        else:
            from transformers import DynamicCache

            self.cache = DynamicCache(config=self.model.config)
        self.mask.zero_()
        self.mask[:, :width] = mask
        self.padded = not bool(mask.all())
        positions = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
        # forward, not __call__: the prefill stays eager when the module is compiled
        out = self.model.forward(input_ids=ids.to(self.device), attention_mask=self._mask(width),
                                 position_ids=positions, past_key_values=self.cache, use_cache=True,
                                 **self.prefill_options)
        self.filled, self.positions = width, positions[:, -1:].clone()
        return out.logits[:, -1, :].float()

    def step(self, tokens) -> Any:
        """Feed one token per row (a list or a (batch,) tensor); the next logits."""
        import torch

        if self.room <= 0:
            raise ValueError(f"the cache of {self.length} positions is full")
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(self.batch, 1).to(self.device)
        self.mask[:, self.filled] = 1
        self.positions = self.positions + 1
        out = self.model(input_ids=tokens, attention_mask=self._mask(self.filled + 1),
                         position_ids=self.positions, past_key_values=self.cache, use_cache=True)
        self.filled += 1
        # a copy: a captured graph writes its next output into the same memory
        return out.logits[:, -1, :].to(torch.float32, copy=True)

    def _mask(self, seen: int):
        """A static cache attends over its full length (fixed shapes); a dynamic one over
        the `seen` positions it holds, and needs no mask at all without padding (the
        model's plain causal attention is faster than a masked one)."""
        if self.static:
            return self.mask
        return self.mask[:, :seen] if self.padded else None


def is_compiled(model: Any) -> bool:
    """True when `nn.Module.compile` compiled this module in place."""
    return getattr(model, "_compiled_call_impl", None) is not None


def _cache_for(model: Any, batch: int, length: int) -> Any:
    from transformers import StaticCache

    kept = _caches.get(model)
    if kept is not None and kept[:2] == (batch, length):
        return kept[2]
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cache = StaticCache(config=config, max_cache_len=length)
    _caches[model] = (batch, length, cache)
    return cache
