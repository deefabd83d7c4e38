"""studio_lm.decoding: the static cache (what a compiled model decodes with) gives the
tokens the dynamic cache and transformers' generate() give, with left padding too,
and one cache serves call after call."""

import pytest
import torch

from studio_lm.decoding import Decoder, cache_length


@pytest.fixture(scope="module")
def lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def greedy(model, prompts: list[list[int]], new: int, *, static: bool) -> list[list[int]]:
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    decoder = Decoder(model, len(prompts), cache_length(width + new, 128), static=static)
    out, logits = [[] for _ in prompts], decoder.prefill(ids, mask)
    for step in range(new):
        tokens = logits.argmax(-1).tolist()
        for row, token in zip(out, tokens):
            row.append(token)
        if step + 1 < new:
            logits = decoder.step(tokens)
    return out


@torch.inference_mode()
def test_static_and_dynamic_caches_decode_as_generate_does(lm):
    prompt = [5, 17, 30, 42, 9]
    expected = lm.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=40, min_new_tokens=40,
                           pad_token_id=0)[0, len(prompt):].tolist()
    assert greedy(lm, [prompt], 40, static=True) == [expected]
    assert greedy(lm, [prompt], 40, static=False) == [expected]


@torch.inference_mode()
def test_left_padded_rows_decode_as_they_do_alone(lm):
    short, long = [7, 8], [1, 2, 3, 4, 5, 6, 11]
    alone = greedy(lm, [short], 20, static=True) + greedy(lm, [long], 20, static=True)
    assert greedy(lm, [short, long], 20, static=True) == alone
    assert greedy(lm, [short, long], 20, static=False) == alone


@torch.inference_mode()
def test_one_static_cache_serves_call_after_call(lm):
    """A captured graph reads the cache where it was: the same tensors are reused (and
    cleared), so a second run is not polluted by the first."""
    first = Decoder(lm, 1, 64, static=True)
    first.prefill(torch.tensor([[3, 4, 5]]), torch.ones((1, 3), dtype=torch.long))
    keys = first.cache.layers[0].keys
    again = greedy(lm, [[9, 9, 2]], 10, static=True)
    assert Decoder(lm, 1, 64, static=True).cache.layers[0].keys is keys
    assert again == greedy(lm, [[9, 9, 2]], 10, static=False)


def test_cache_lengths_round_up_to_share_shapes_and_stop_at_the_context():
    assert cache_length(65, 1024) == cache_length(100, 1024) == 128
    assert cache_length(64, 1024) == 64
    assert cache_length(300, 256) == 256


@torch.inference_mode()
def test_a_full_cache_is_a_clear_error(lm):
    decoder = Decoder(lm, 1, 64, static=True)
    decoder.prefill(torch.ones((1, 63), dtype=torch.long), torch.ones((1, 63), dtype=torch.long))
    decoder.step([1])
    with pytest.raises(ValueError, match="full"):
        decoder.step([1])
