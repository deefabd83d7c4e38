"""CLIP's tokenizer, built offline from the vocabulary open_clip_torch installs.

Single-file Stable Diffusion checkpoints hold their text encoders' weights but not the
tokenizer. Its vocabulary is public data: open_clip_torch ships OpenAI CLIP's byte-pair
merges as `bpe_simple_vocab_16e6.txt.gz`, and the vocabulary follows from them exactly
as open_clip's SimpleTokenizer builds it (256 byte symbols, the same with `</w>`, one
entry per merge, then `<|startoftext|>` and `<|endoftext|>`: 49,408 entries). SD 1.x and
SDXL's first encoder pad with `<|endoftext|>`; the OpenCLIP encoders of SD 2.x and
SDXL's second pad with `!` (token 0), as their Hugging Face tokenizers do.
The merges are read once per process; nothing is downloaded or written.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

VOCAB_SIZE = 49408
MERGES = VOCAB_SIZE - 256 - 256 - 2  # 48,894 merges: open_clip reads lines 1 .. 49152-256-2


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's and CLIP's map of the 256 bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (token -> id) and its merges (pairs, in rank order)."""
    # found, not imported: importing open_clip would import torch and timm for a data file
    spec = find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; Studio reads CLIP's vocabulary from it "
                           "(pip install open_clip_torch)")
    source = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != VOCAB_SIZE:
        raise RuntimeError(f"open_clip's CLIP vocabulary gave {len(tokens)} entries, not {VOCAB_SIZE}")
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>", max_length: int = 77):
    """A transformers CLIPTokenizer with CLIP's vocabulary."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=max_length)
