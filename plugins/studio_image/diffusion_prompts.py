"""Weighted prompts for image.diffusion, through compel.

Two syntaxes, picked by `prompt_weighting`:
- "a1111", the one A1111 and ComfyUI users write: `(word)` is 1.1x, `((word))` 1.21x,
  `(word:1.3)` 1.3x, `[word]` 1/1.1x, `\\(` a literal bracket. It is read into
  (text, weight) fragments here and handed to compel as such;
- "compel", compel's own: `word+`, `(word)1.3`, `("a", "b").blend(0.7, 0.3)` ...
Either way compel builds the embeddings, and prompts longer than the tokenizer's window
(77 tokens for Stable Diffusion) are encoded in windows and joined, as compel does with
truncate_long_prompts=False, instead of being cut.

SDXL conditions on two CLIP encoders (the refiner on the second alone): each encoder's
penultimate layer, un-normalised, joined along the width, plus the second encoder's
pooled output, as diffusers' SDXL pipelines encode a prompt. One compel per encoder
builds them (compel's own CompelForSDXL does the same); `clip_skip` reaches deeper by
handing compel the encoder's layers minus the skipped ones (SkippedLayers).
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


def prompt_arguments(pipe: Any, batch: list) -> dict[str, Any]:
    """A batch's prompts as the diffusers call takes them: text (and clip_skip), or
    compel's weighted embeddings. An embedding's token is written as it was loaded,
    however the prompt capitalises it (diffusion_embeddings)."""
    from studio_image.diffusion_embeddings import spelled_as_loaded

    first = batch[0]
    # absent: the empty prompt, as diffusers samples
    prompts = [spelled_as_loaded(p.prompt, p.embeddings) or "" for p in batch]
    negative = spelled_as_loaded(first.negative_prompt, first.embeddings)
    expand = bool(first.embeddings)
    if first.prompt_weighting != "off" and getattr(pipe, "text_encoder_2", None) is not None:
        return sdxl_embeddings(pipe, prompts, negative, first.prompt_weighting, first.clip_skip, expand_tokens=expand)
    if first.prompt_weighting != "off":
        prompt_embeds, negative_embeds = embeddings(
            pipe, prompts, negative, first.prompt_weighting, first.clip_skip, expand_tokens=expand)
        return {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}
    call: dict[str, Any] = {"prompt": prompts, "negative_prompt": [negative] * len(batch) if negative else None}
    if first.clip_skip is not None:
        call["clip_skip"] = first.clip_skip
    return call


def embeddings(pipe: Any, prompts: list[str], negative: str | None, syntax: str, clip_skip: int | None,
               expand_tokens: bool = False):
    """(prompt embeddings, negative embeddings) for `prompts`, padded to one length.
    `expand_tokens`: textual inversions are loaded (inversion_manager)."""
    from compel import Compel, ReturnedEmbeddingsType

    layer = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED if clip_skip
             else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
    compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False,
                    returned_embeddings_type=layer, device=pipe._execution_device,
                    textual_inversion_manager=inversion_manager(pipe, expand_tokens),
                    dtype_for_device_getter=lambda device: pipe.text_encoder.dtype)

    import torch

    with torch.no_grad():
        tensors = [compel.build_conditioning_tensor_for_conjunction(parsed(text, syntax))[0]
                   for text in [*prompts, negative or ""]]
        tensors = compel.pad_conditioning_tensors_to_same_length(tensors)
    return torch.cat(tensors[:-1]), torch.cat([tensors[-1]] * len(prompts))


def inversion_manager(pipe: Any, expand_tokens: bool) -> Any:
    """compel's DiffusersTextualInversionManager when embeddings are loaded: it expands a
    multi-vector token into its vectors' tokens (token, token_1, ...) as diffusers does."""
    if not expand_tokens:
        return None
    from compel import DiffusersTextualInversionManager

    return DiffusersTextualInversionManager(pipe)


def parsed(text: str, syntax: str):
    """A prompt as compel's Conjunction, read in `syntax` ("a1111" or "compel")."""
    from compel import Compel
    from compel.prompt_parser import Conjunction, FlattenedPrompt

    if syntax != "compel":
        return Conjunction([FlattenedPrompt(a1111_fragments(text))])
    try:
        return Compel.parse_prompt_string(text)
    except Exception as exc:  # pyparsing's errors: not compel's syntax
        from studio import UserError

        raise UserError(f"prompt {text[:80]!r} is not compel's prompt syntax ({str(exc)[:200]}); use "
                        "prompt_weighting: a1111 for (word:1.3)") from None


def plain_text(conjunction: Any, text: str) -> str:
    """The words of a parsed prompt without its weights, for SDXL's pooled embedding
    (one vector for the whole prompt, which weights do not reach in diffusers either);
    the text as written for a blend or a conjunction of several prompts."""
    from compel.prompt_parser import FlattenedPrompt

    prompts = getattr(conjunction, "prompts", [])
    if len(prompts) == 1 and isinstance(prompts[0], FlattenedPrompt):
        return " ".join(fragment.text for fragment in prompts[0].children).strip()
    return text


class SkippedLayers:
    """A CLIP text encoder whose output lacks its last `skip` hidden states: compel reads
    the penultimate one of what is left, the layer diffusers' SDXL clip_skip picks
    (hidden_states[-(clip_skip + 2)]). The pooled output is the whole encoder's, as in
    diffusers. Everything else is the encoder's own."""

    def __init__(self, encoder: Any, skip: int):
        self.encoder, self.skip = encoder, skip

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self.encoder(*args, **kwargs)
        if self.skip and getattr(output, "hidden_states", None) is not None:
            output.hidden_states = output.hidden_states[:-self.skip]
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)


def sdxl_embeddings(pipe: Any, prompts: list[str], negative: str | None, syntax: str,
                    clip_skip: int | None, expand_tokens: bool = False) -> dict[str, Any]:
    """SDXL's prompt_embeds and pooled_prompt_embeds (and the negatives) for `prompts`.
    Without a negative prompt a pipeline that zeroes it (force_zeros_for_empty_prompt,
    SDXL base) gets none, and zeroes it as it does for text."""
    import torch
    from compel import Compel, ReturnedEmbeddingsType

    pairs = [(tok, enc) for tok, enc in ((getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
                                         (pipe.tokenizer_2, pipe.text_encoder_2)) if enc is not None]
    compels = [Compel(tokenizer=tok, text_encoder=SkippedLayers(enc, clip_skip) if clip_skip else enc,
                      truncate_long_prompts=False, device=pipe._execution_device,
                      textual_inversion_manager=inversion_manager(pipe, expand_tokens),
                      returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                      dtype_for_device_getter=lambda device, enc=enc: enc.dtype) for tok, enc in pairs]
    zeroed = not negative and bool(pipe.config.get("force_zeros_for_empty_prompt"))
    texts = [*prompts, *([] if zeroed else [negative or ""])]
    with torch.no_grad():
        conjunctions = [parsed(text, syntax) for text in texts]
        per_encoder = [[c.build_conditioning_tensor_for_conjunction(conj)[0] for conj in conjunctions] for c in compels]
        length = max(t.shape[1] for tensors in per_encoder for t in tensors)
        # every encoder's windows padded to the longest prompt's (a 2-D filler sets the length)
        per_encoder = [c.pad_conditioning_tensors_to_same_length([*ts, ts[0].new_zeros(length, ts[0].shape[-1])])[:-1]
                       for c, ts in zip(compels, per_encoder)]
        joined = [torch.cat(parts, dim=-1) for parts in zip(*per_encoder)]
        pooled = [compels[-1].conditioning_provider.get_pooled_embeddings([plain_text(conj, text)])
                  for conj, text in zip(conjunctions, texts)]
    n = len(prompts)
    call = {"prompt_embeds": torch.cat(joined[:n]), "pooled_prompt_embeds": torch.cat(pooled[:n])}
    if not zeroed:
        call.update(negative_prompt_embeds=torch.cat([joined[n]] * n),
                    negative_pooled_prompt_embeds=torch.cat([pooled[n]] * n))
    return call
