"""Text-set metrics: diversity across the set (distinct-n), repetition inside each
text, and perplexity under a reference language model (text.gpt's, by default)."""

from __future__ import annotations

import math
import re
from typing import Any

WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
MAX_TOKENS_SCORED = 200_000  # perplexity reads at most this many tokens of a set


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the set (Li et al. 2016): 1 when nothing
    repeats, near 0 when every text says the same."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(text: str, n: int = 4) -> float:
    """The share of a text's n-grams that already occurred earlier in it (the
    degenerate loops of greedy decoding score high)."""
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams)


def perplexity(texts: list[str], lm: dict[str, Any]) -> dict[str, float]:
    """Per-token perplexity of the texts under `lm` ({"model", "tokenizer"}, as
    text.gpt loads it), each text scored on its own, in windows of the model's context."""
    import torch

    from studio_lm.likelihood import causal_lm_nll

    model, tokenizer = lm["model"], lm["tokenizer"]
    window = int(getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 512))
    total, count, chars = 0.0, 0, 0
    for text in texts:
        if count >= MAX_TOKENS_SCORED:
            break
        ids = torch.tensor(tokenizer(text)["input_ids"][:MAX_TOKENS_SCORED], dtype=torch.long)
        nll, scored = causal_lm_nll(model, ids, window - 1, "cpu")
        total, count, chars = total + nll, count + scored, chars + len(text)
    if not count:
        return {}
    return {"perplexity": math.exp(total / count), "nll_per_char": total / max(chars, 1), "tokens_scored": count}


def describe_texts(texts: list[str]) -> dict[str, float]:
    lengths = [len(words(t)) for t in texts]
    return {"texts": len(texts), "mean_words": sum(lengths) / max(len(lengths), 1),
            "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "distinct_3": distinct_n(texts, 3),
            "repetition_4": sum(repetition(t) for t in texts) / max(len(texts), 1)}
