"""Weighted prompts for image.diffusion, through compel.

Two syntaxes, picked by `prompt_weighting`:
- "a1111", the one A1111 and ComfyUI users write: `(word)` is 1.1x, `((word))` 1.21x,
  `(word:1.3)` 1.3x, `[word]` 1/1.1x, `\\(` a literal bracket. It is read into
  (text, weight) fragments here and handed to compel as such;
- "compel", compel's own: `word+`, `(word)1.3`, `("a", "b").blend(0.7, 0.3)` ...
Either way compel builds the embeddings, and prompts longer than the tokenizer's window
(77 tokens for Stable Diffusion) are encoded in windows and joined, as compel does with
truncate_long_prompts=False, instead of being cut.
"""

from __future__ import annotations

import re
from typing import Any

# A1111's tokens: escapes, brackets, a ":weight)" closing, runs of plain text
TOKENS = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:")
UP, DOWN = 1.1, 1 / 1.1  # what one () or [] does in A1111


def a1111_fragments(text: str) -> list[tuple[str, float]]:
    """A prompt in A1111's syntax as (text, weight) fragments, neighbours of equal weight
    joined. Unclosed brackets apply to the end of the prompt, as in A1111."""
    parts: list[list[Any]] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    for token in TOKENS.finditer(text):
        piece, weight = token.group(0), token.group(1)
        if piece.startswith("\\") and len(piece) == 2:
            parts.append([piece[1], 1.0])
        elif piece == "(":
            rounds.append(len(parts))
        elif piece == "[":
            squares.append(len(parts))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif piece == ")" and rounds:
            scale(rounds.pop(), UP)
        elif piece == "]" and squares:
            scale(squares.pop(), DOWN)
        else:
            parts.append([piece, 1.0])
    for start in rounds:
        scale(start, UP)
    for start in squares:
        scale(start, DOWN)
    joined: list[list[Any]] = []
    for piece, weight in parts:
        if joined and joined[-1][1] == weight:
            joined[-1][0] += piece
        else:
            joined.append([piece, weight])
    return [(piece, weight) for piece, weight in joined if piece.strip()] or [("", 1.0)]


def embeddings(pipe: Any, prompts: list[str], negative: str | None, syntax: str, clip_skip: int | None,
               expand_tokens: bool = False):
    """(prompt embeddings, negative embeddings) for `prompts`, padded to one length.
    `expand_tokens`: textual inversions are loaded, and compel expands a multi-vector
    token into its vectors' tokens as diffusers does (its DiffusersTextualInversionManager)."""
    from compel import Compel, DiffusersTextualInversionManager, ReturnedEmbeddingsType
    from compel.prompt_parser import Conjunction, FlattenedPrompt

    layer = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED if clip_skip
             else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
    compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False,
                    returned_embeddings_type=layer, device=pipe._execution_device,
                    textual_inversion_manager=DiffusersTextualInversionManager(pipe) if expand_tokens else None,
                    dtype_for_device_getter=lambda device: pipe.text_encoder.dtype)

    def encode(text: str):
        if syntax == "compel":
            try:
                conjunction = Compel.parse_prompt_string(text)
            except Exception as exc:  # pyparsing's errors: not compel's syntax
                from studio import UserError

                raise UserError(f"prompt {text[:80]!r} is not compel's prompt syntax ({str(exc)[:200]}); use "
                                "prompt_weighting: a1111 for (word:1.3)") from None
            return compel.build_conditioning_tensor_for_conjunction(conjunction)[0]
        conjunction = Conjunction([FlattenedPrompt(a1111_fragments(text))])
        return compel.build_conditioning_tensor_for_conjunction(conjunction)[0]

    import torch

    with torch.no_grad():
        tensors = [encode(text) for text in [*prompts, negative or ""]]
        tensors = compel.pad_conditioning_tensors_to_same_length(tensors)
    return torch.cat(tensors[:-1]), torch.cat([tensors[-1]] * len(prompts))
