"""Batched sampling from a causal LM with a key/value cache: the one sampling loop of the
text and music plugins.

Why not `model.generate()`? It draws every row of a batch from torch's one global
random stream, so an item's output would depend on what else is in its batch. Here each
row has its own generator (seeded with the item's seed) and its own stop rules, so a
sweep item comes out the same alone or batched. The logits pass through transformers'
own processors (repetition penalty, temperature, top-k, top-p), and `temperature 0`
is plain argmax: transformers' greedy decoding.

Prompts of different lengths are left-padded; the attention mask hides the padding and
position ids count only real tokens, so padding changes nothing a row sees. The cache
(studio_lm.decoding) is static when the model is compiled, so each token replays one graph.

What one model family needs and another does not is said through small hooks, not a
second loop:

- `Settings.banned`: tokens never drawn (music: BOS and EOS, so a piece lasts as asked);
- `Row.on_token`: sees each token its row keeps and may end the row (music: a clock
  that counts time shifts and stops at duration_s);
- `Settings.slide`: writing past the model's context; when it is full, the latest half
  of each row refills the cache (music: pieces longer than 512 events);
- `Settings.top_p_rule`: which arithmetic top-p uses (see TopPLikeliestFirst).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

TOP_P_RULES = ("transformers", "likeliest_first")


@dataclass(frozen=True)
class Slide:
    """Writing past the model's context. When the cache is full, each row's latest
    tokens (half the context) refill it, after `start` (e.g. BOS, so the model again
    sees the start token it was trained to follow).

    The rows of a batch share the cache's positions, so they slide together, when the
    longest is full: a row with a shorter prompt then slides sooner than it would alone
    (the music model samples one row at a time)."""

    start: tuple[int, ...] = ()

    def window(self, tokens: list[int], length: int) -> list[int]:
        """What refills a cache of `length` positions after `tokens`."""
        keep = length // 2
        if keep < 1 or len(self.start) + keep > length:
            raise ValueError(f"a context of {length} positions is too short to slide")
        return [*self.start, *tokens[-keep:]]


@dataclass
class Settings:
    """How every row of one batch is sampled."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)  # strings that end a row (needs `decode`)
    banned: tuple[int, ...] = ()  # never drawn: their logits are -inf before any processor
    top_p_rule: str = "transformers"  # or "likeliest_first" (TopPLikeliestFirst)
    slide: Slide | None = None  # None: the prompt and max_new_tokens must fit the context


@dataclass
class Row:
    """One item: its prompt, its random stream, what it has written, why it stopped."""

    prompt: list[int]
    generator: Any  # torch.Generator, this item's random stream
    new: list[int] = field(default_factory=list)
    done: bool = False
    stopped_by: str | None = None  # "eos", a stop string, on_token's reason, or None (ran to max_new_tokens)
    # called with each token the row keeps; a returned reason (a string) ends the row
    on_token: Callable[[int], str | None] | None = None


class TopPLikeliestFirst:
    """Top-p from the likeliest token down: a token is kept while the probability mass
    before it is below top_p.

    transformers' TopPLogitsWarper walks up from the least likely token instead,
    dropping tokens while their cumulative mass is at most 1 - top_p. In exact
    arithmetic both keep the same tokens; in floats they can disagree on the token at
    the boundary (a top_p equal to a cumulative mass: 0.5227321982383728 on one set of
    logits keeps 7 tokens here and 6 there). The music model has always sampled with
    this rule, and keeps it so a seed still gives the same piece."""

    def __init__(self, top_p: float):
        self.top_p = top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        ordered, order = torch.sort(scores, descending=True)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs >= self.top_p  # the token that crosses top_p is kept
        return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def processors(settings: Settings):
    """transformers' logits processors for `settings`, in the order generate() applies them."""
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

    if settings.top_p_rule not in TOP_P_RULES:
        raise ValueError(f"top_p_rule {settings.top_p_rule!r} is not one of {', '.join(TOP_P_RULES)}")
    out = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature > 0:
        if settings.temperature != 1.0:
            out.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            out.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            top_p = TopPLogitsWarper if settings.top_p_rule == "transformers" else TopPLikeliestFirst
            out.append(top_p(settings.top_p))
    return out


def sample(model, rows: list[Row], settings: Settings, *, context: int, eos_id: int | None = None,
           pad_id: int = 0, decode: Callable[[list[int]], str] | None = None,
           on_step: Callable[[int, int], None] | None = None) -> list[Row]:
    """Extend every row by up to `max_new_tokens`, in place; returns the rows. The
    cache holds `context` positions at most (with settings.slide, writing goes on past
    them). `decode` turns tokens into text, for stop strings; `on_step(done, total)`
    is called after each step."""
    import torch

    from studio_lm.decoding import Decoder

    length = _cache_length(rows, settings, context)
    decoder = Decoder(model, len(rows), length)
    procs = processors(settings)
    # a sliding window continues the end of a prompt longer than the context
    prompts = [r.prompt[-length:] if settings.slide else r.prompt for r in rows]
    with torch.no_grad():
        logits = decoder.prefill(*_left_padded(prompts, pad_id))
        for step in range(settings.max_new_tokens):
            chosen = _choose(logits, rows, settings, procs)
            for row, token in zip(rows, chosen):
                if not row.done:
                    _append(row, token, eos_id, settings.stop, decode)
            if on_step:
                on_step(step + 1, settings.max_new_tokens)
            if all(r.done for r in rows) or step + 1 == settings.max_new_tokens:
                break
            logits = _advance(decoder, rows, chosen, settings.slide, pad_id)
    return rows


def _cache_length(rows: list[Row], settings: Settings, context: int) -> int:
    """A sliding window fills the model's whole context before it slides; otherwise the
    cache holds the prompts and max_new_tokens, rounded up so nearby requests share a
    shape (a compiled model then replays the graphs it has)."""
    from studio_lm.decoding import cache_length

    if settings.slide:
        return context
    return cache_length(max(len(r.prompt) for r in rows) + settings.max_new_tokens, context)


def _left_padded(prompts: list[list[int]], pad_id: int):
    """(ids, mask), both (batch, longest prompt): the prompts left-padded with pad_id,
    and 1 where a token is real."""
    import torch

    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt)
        mask[i, width - len(prompt):] = 1
    return ids, mask


def _advance(decoder, rows: list[Row], chosen: list[int], slide: Slide | None, pad_id: int):
    """The next logits: feed the chosen tokens, or, when sliding and the cache is full,
    refill it. It counts as full once the chosen tokens would take its last position
    (the music model's rule since its first version, kept so its pieces stay the same)."""
    if slide is None or decoder.filled + 1 < decoder.length:
        return decoder.step(chosen)
    windows = [slide.window(row.prompt + row.new, decoder.length) for row in rows]
    return decoder.prefill(*_left_padded(windows, pad_id))


def _choose(logits, rows: list[Row], settings: Settings, procs) -> list[int]:
    """The next token of every row: the bans, the processors, then argmax or a draw from
    the row's own generator (on the CPU, so a seed means the same output on any device)."""
    import torch

    if settings.banned:
        logits = logits.index_fill(-1, torch.tensor(settings.banned, device=logits.device), float("-inf"))
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
    """Keep `token` in `row` (EOS ends it instead), then ask whether the row is done:
    its on_token hook first, then its stop strings."""
    if token == eos_id:
        row.done, row.stopped_by = True, "eos"
        return
    row.new.append(token)
    reason = row.on_token(token) if row.on_token else None
    if reason is None and stop:
        text = decode(row.new)
        reason = next((s for s in stop if s in text), None)
    if reason is not None:
        row.done, row.stopped_by = True, reason


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text up to (not including) the earliest stop string."""
    cuts = [text.index(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text
