"""Batched sampling from a causal LM with a key/value cache.

Why not `model.generate()`? It draws every row of a batch from torch's one global
random stream, so an item's text would depend on what else is in its batch. Here each
row has its own generator (seeded with the item's seed) and its own stop strings, so
a sweep item comes out the same alone or batched. The logits pass through transformers'
own processors (repetition penalty, temperature, top-k, top-p), and `temperature 0`
is plain argmax: transformers' greedy decoding.

Prompts of different lengths are left-padded; the attention mask hides the padding and
position ids count only real tokens, so padding changes nothing a row sees. The cache
(studio.decoding) is static when the model is compiled, so each token replays one graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Settings:
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)


@dataclass
class Row:
    prompt: list[int]
    generator: Any  # torch.Generator, this item's random stream
    new: list[int] = field(default_factory=list)
    done: bool = False
    stopped_by: str | None = None  # "eos", a stop string, or None (ran to max_new_tokens)


def processors(settings: Settings):
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

    out = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature > 0:
        if settings.temperature != 1.0:
            out.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            out.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            out.append(TopPLogitsWarper(settings.top_p))
    return out


def sample(model, rows: list[Row], settings: Settings, *, eos_id: int | None, pad_id: int,
           decode: Callable[[list[int]], str], context: int,
           on_step: Callable[[int, int], None] | None = None) -> list[Row]:
    """Extend every row by up to `max_new_tokens`, in place; returns the rows. The
    cache (studio.decoding) holds `context` positions at most."""
    import torch

    from studio.decoding import Decoder, cache_length

    width = max(len(r.prompt) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row.prompt):] = torch.tensor(row.prompt)
        mask[i, width - len(row.prompt):] = 1
    decoder = Decoder(model, len(rows), cache_length(width + settings.max_new_tokens, context))
    procs = processors(settings)
    logits = decoder.prefill(ids, mask)
    for step in range(settings.max_new_tokens):
        chosen = _choose(logits, rows, settings, procs)
        for row, token in zip(rows, chosen):
            if not row.done:
                _append(row, token, eos_id, settings.stop, decode)
        if on_step:
            on_step(step + 1, settings.max_new_tokens)
        if all(r.done for r in rows) or step + 1 == settings.max_new_tokens:
            break
        logits = decoder.step(chosen)
    return rows


def _choose(logits, rows: list[Row], settings: Settings, procs) -> list[int]:
    """The next token of every row: the processors, then argmax or a draw from the
    row's own generator (on the CPU, so a seed means the same text on any device)."""
    import torch

    if settings.repetition_penalty != 1.0:  # needs each row's own history, without padding
        scores = torch.cat([procs(torch.tensor([r.prompt + r.new], device=logits.device), logits[i:i + 1])
                            for i, r in enumerate(rows)])
    else:  # the other processors look at the scores only: the whole batch at once
        scores = procs(None, logits)
    if settings.temperature == 0:
        return scores.argmax(-1).tolist()
    probs = torch.softmax(scores, dim=-1).cpu()
    return [int(torch.multinomial(probs[i], 1, generator=row.generator)) for i, row in enumerate(rows)]


def _append(row: Row, token: int, eos_id: int | None, stop: list[str], decode) -> None:
    if token == eos_id:
        row.done, row.stopped_by = True, "eos"
        return
    row.new.append(token)
    if stop:
        text = decode(row.new)
        for s in stop:
            if s in text:
                row.done, row.stopped_by = True, s
                return


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text up to (not including) the earliest stop string."""
    cuts = [text.index(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text
