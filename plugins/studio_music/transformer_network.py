"""The music model is a GPT-2 (transformers) over the 390-token event vocabulary.

Its sampling is studio_lm's shared loop (the one text.gpt uses: key/value cache,
temperature, top-k, top-p, draws from a per-item CPU generator so a seed means the same
piece on any device). What is musical lives here, as that loop's hooks: a piece lasts
the seconds asked (a Clock counts TIME_SHIFT events and ends it; BOS and EOS are never
drawn), and may be longer than the model's context (the window slides, refilled from its
latest half after a BOS).
"""

from __future__ import annotations

from typing import Callable

from studio_music.events import BOS, EOS, TIME_SHIFT, VELOCITY, VOCAB_SIZE

EVENTS_PER_SECOND = 150  # an upper bound on how densely a piece is written, for max_tokens
SHIFT_S = 0.01  # a TIME_SHIFT event moves time on by (its step + 1) x 10 ms


def gpt2_config(n_layer: int = 4, n_embd: int = 192, n_head: int = 6, n_positions: int = 512):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB_SIZE, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, bos_token_id=BOS, eos_token_id=EOS, resid_pdrop=0.1, embd_pdrop=0.1,
                      attn_pdrop=0.1)


class Clock:
    """Seconds of music in the events a row keeps (a Row.on_token hook): ends the row
    once `duration_s` is reached, and reports progress at each time shift."""

    def __init__(self, duration_s: float, on_progress: Callable[[float, float], None] | None = None):
        self.duration_s, self.on_progress = duration_s, on_progress
        self.elapsed = 0.0

    def __call__(self, token: int) -> str | None:
        if TIME_SHIFT <= token < VELOCITY:
            self.elapsed += (token - TIME_SHIFT + 1) * SHIFT_S
            if self.on_progress:
                self.on_progress(min(self.elapsed, self.duration_s), self.duration_s)
        return "duration_s" if self.elapsed >= self.duration_s else None


def sample(model, prefix: list[int], *, duration_s: float, temperature: float, top_k: int, top_p: float,
           generator, max_tokens: int | None = None, on_progress=None) -> list[int]:
    """Continue `prefix` (starting with BOS) until `duration_s` seconds of new music or
    max_tokens. Returns the new tokens only. The key/value cache is as long as the
    model's context; when the context is full, its latest half is kept and the cache
    refilled from it."""
    from studio_lm.sampling import Row, Settings, Slide
    from studio_lm.sampling import sample as sample_rows

    settings = Settings(
        max_new_tokens=max_tokens or int(duration_s * EVENTS_PER_SECOND) + 64,
        temperature=temperature, top_k=top_k, top_p=top_p,
        banned=(BOS, EOS),  # the user asked for duration_s: a piece may not end sooner
        top_p_rule="likeliest_first",  # the rule this model has always sampled with
        slide=Slide(start=(BOS,)))
    row = Row(prompt=list(prefix), generator=generator, on_token=Clock(duration_s, on_progress))
    sample_rows(model, [row], settings, context=model.config.n_positions)
    return row.new
