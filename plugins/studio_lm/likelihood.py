"""Held-out likelihood of a causal language model, as the text and music trainers
report it."""

from __future__ import annotations

from typing import Any


def causal_lm_nll(model: Any, ids: Any, window: int, device: str) -> tuple[float, int]:
    """(summed next-token negative log-likelihood in nats, tokens scored) of a causal LM
    over `ids` (a 1-D tensor), read in consecutive windows of `window` tokens."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start:start + window + 1].to(device)
            if len(chunk) < 2:
                continue
            logits = model(input_ids=chunk[None, :-1]).logits[0]
            total += torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
    return total, count
