"""The parts of a small Stable Diffusion pipeline that `studio train image.diffusion`
builds for captioned data: an AutoencoderKL, a CLIP text encoder with a BPE tokenizer
learnt from the captions, and a cross-attention UNet2DConditionModel. They are the
classes a public Stable Diffusion checkpoint is made of, only smaller, so the trained
model saves as a standard pipeline folder that diffusers' own StableDiffusionPipeline
loads, and Studio runs it through the same code as a user's checkpoint."""

from __future__ import annotations

from typing import Any

BOS, EOS = "<|startoftext|>", "<|endoftext|>"  # CLIP's own special tokens


def caption_tokenizer(captions: list[str], vocab_size: int, max_length: int) -> Any:
    """A CLIPTokenizer whose BPE vocabulary is learnt from `captions`, with CLIP's own
    normalisation and byte-level word splitting (so it behaves as a CLIP tokenizer on any
    text: unseen words fall back to sub-words and bytes, never to an unknown token).

    The merges are learnt here rather than by `tokenizers`' BpeTrainer, which breaks ties
    between equally frequent pairs in hash order: the same captions gave other
    vocabularies in other processes, and so other weights from the same command."""
    from collections import Counter

    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    template = CLIPTokenizer()._tokenizer  # CLIP's normaliser and pre-tokenizer, empty vocabulary
    words: Counter[str] = Counter()
    for caption in captions:
        text = template.normalizer.normalize_str(caption)
        words.update(piece for piece, _ in template.pre_tokenizer.pre_tokenize_str(text))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {BOS: 0, EOS: 1}
    for symbol in alphabet + [a + "</w>" for a in alphabet]:
        vocab[symbol] = len(vocab)
    merges = learn_merges(words, vocab_size - len(vocab))
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def learn_merges(words: dict[str, int], count: int) -> list[tuple[str, str]]:
    """Byte-pair merges (Sennrich et al. 2016) of `words` (word -> frequency), the last
    symbol of each word marked "</w>" as CLIP's tokenizer expects: the most frequent
    pair each time, ties broken by the pair itself, so the result depends on the words
    alone. Pair counts are updated only for the words a merge touches."""
    from collections import defaultdict

    spelled = [list(w[:-1]) + [w[-1] + "</w>"] for w in sorted(words)]
    freq = [words[w] for w in sorted(words)]
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, symbols in enumerate(spelled):
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += freq[i]
            where[pair].add(i)
    merges: list[tuple[str, str]] = []
    while len(merges) < count and pairs:
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break  # a pair seen once teaches nothing
        merges.append(best)
        joined = best[0] + best[1]
        for i in sorted(where.pop(best, ())):
            symbols = spelled[i]
            for pair in zip(symbols, symbols[1:]):  # this word's pairs, before the merge
                pairs[pair] -= freq[i]
                if pairs[pair] <= 0:
                    del pairs[pair]
            merged, j = [], 0
            while j < len(symbols):
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == best:
                    merged.append(joined)
                    j += 2
                else:
                    merged.append(symbols[j])
                    j += 1
            spelled[i] = merged
            for pair in zip(merged, merged[1:]):  # and after
                pairs[pair] += freq[i]
                where[pair].add(i)
        pairs.pop(best, None)
    return merges


def text_encoder(vocab_size: int, max_length: int, width: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, projection_dim=width))


def autoencoder(size: int, channels: int) -> Any:
    """Halves each side once: 4 latent channels at size / 2 (Stable Diffusion's is 8x)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=channels, out_channels=channels,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64),
                         layers_per_block=1, latent_channels=4, sample_size=size, norm_num_groups=16)


def conditional_unet(latent_size: int, text_width: int) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 96, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_width, attention_head_dim=8, norm_num_groups=16)
