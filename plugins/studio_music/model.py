"""The music model is a GPT-2 (transformers) over the 390-token event vocabulary, and
this is its sampling loop: key/value cache, temperature, top-k, top-p, draws from a
per-item CPU generator so a seed means the same piece on any device."""

from __future__ import annotations

import torch

from studio_music.events import BOS, EOS, TIME_SHIFT, VELOCITY, VOCAB_SIZE


def gpt2_config(n_layer: int = 4, n_embd: int = 192, n_head: int = 6, n_positions: int = 512):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB_SIZE, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, bos_token_id=BOS, eos_token_id=EOS, resid_pdrop=0.1, embd_pdrop=0.1,
                      attn_pdrop=0.1)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the top_k most likely tokens (0: all) and the smallest set whose
    probability reaches top_p (1.0: all); the rest get -inf."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def sample(model, prefix: list[int], *, duration_s: float, temperature: float, top_k: int, top_p: float,
           generator: torch.Generator, max_tokens: int | None = None, on_progress=None) -> list[int]:
    """Continue `prefix` (starting with BOS) until `duration_s` seconds of new music or
    max_tokens. Returns the new tokens only. The key/value cache (studio.decoding) is as
    long as the model's context; when the context is full, its latest half is kept and
    the cache refilled from it."""
    from studio.decoding import Decoder

    window = model.config.n_positions
    max_tokens = max_tokens or int(duration_s * 150) + 64
    decoder = Decoder(model, batch=1, length=window)
    context = list(prefix)[-window:]
    new: list[int] = []
    elapsed = 0.0
    logits = decoder.prefill(torch.tensor([context]))[0]
    while elapsed < duration_s and len(new) < max_tokens:
        logits[BOS] = float("-inf")
        logits[EOS] = float("-inf")  # the user asked for duration_s: a piece may not end sooner
        if temperature == 0:
            token = int(logits.argmax())
        else:
            logits = filter_logits(logits / temperature, top_k, top_p)
            token = int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator))
        new.append(token)
        context.append(token)
        if TIME_SHIFT <= token < VELOCITY:
            elapsed += (token - TIME_SHIFT + 1) * 0.01
            if on_progress:
                on_progress(min(elapsed, duration_s), duration_s)
        if elapsed >= duration_s or len(new) >= max_tokens:
            break
        if len(context) >= window:  # slide: keep the latest half, refill the cache from it
            context = [BOS] + context[-(window // 2):]
            logits = decoder.prefill(torch.tensor([context]))[0]
        else:
            logits = decoder.step([token])[0]
    return new
