"""studio_lm.sampling, the one sampling loop of text.gpt and music.transformer: its hooks
(banned tokens, a per-row on_token hook that ends a row, a sliding window past the
context, the likeliest-first top-p rule), and that the music model samples through it
exactly as its own loop did before there was a shared one."""

import pytest
import torch

from studio_lm.sampling import Row, Settings, Slide, TopPLikeliestFirst, processors, sample

CONTEXT = 32


@pytest.fixture(scope="module")
def lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def rows(*prompts, seed=0, on_token=None):
    return [Row(prompt=list(p), generator=torch.Generator().manual_seed(seed + i), on_token=on_token)
            for i, p in enumerate(prompts)]


def greedy_first_token(lm, prompt):
    return sample(lm, rows(prompt), Settings(max_new_tokens=1, temperature=0), context=CONTEXT)[0].new[0]


def test_a_banned_token_is_never_drawn(lm):
    favourite = greedy_first_token(lm, [5, 6, 7])
    greedy = sample(lm, rows([5, 6, 7]), Settings(max_new_tokens=20, temperature=0, banned=(favourite,)),
                    context=CONTEXT)
    assert greedy[0].new[0] != favourite and favourite not in greedy[0].new
    # a hot temperature makes every token likely: the banned ones still never come
    banned = tuple(range(0, 97, 2))
    drawn = sample(lm, rows([5, 6, 7], [9], seed=3), Settings(max_new_tokens=25, temperature=3.0, banned=banned),
                   context=CONTEXT)
    assert all(len(r.new) == 25 and not set(r.new) & set(banned) for r in drawn)


def test_on_token_ends_its_own_row_with_its_reason(lm):
    seen = []

    def five_tokens(token):
        seen.append(token)
        return "enough" if len(seen) == 5 else None

    short, long = rows([5, 6, 7], [8, 9])
    short.on_token = five_tokens
    sample(lm, [short, long], Settings(max_new_tokens=12), context=CONTEXT)
    assert seen == short.new and len(short.new) == 5 and (short.done, short.stopped_by) == (True, "enough")
    assert len(long.new) == 12 and long.stopped_by is None


def test_the_loop_ends_when_every_row_is_done(lm):
    steps = []
    done = sample(lm, rows([1], [2, 3], on_token=lambda token: "one"), Settings(max_new_tokens=20), context=CONTEXT,
                  on_step=lambda step, total: steps.append(step))
    assert [len(r.new) for r in done] == [1, 1] and steps == [1]


def reference_sliding_greedy(lm, prompt, new, start):
    """The window rule written out for one row: when the context plus the token just
    chosen fills the model's context, `start` and the latest half of the tokens refill
    the cache."""
    from studio_lm.decoding import Decoder

    decoder = Decoder(lm, 1, CONTEXT)
    context, out = list(prompt)[-CONTEXT:], []
    logits = decoder.prefill(torch.tensor([context]))[0]
    for _ in range(new):
        token = int(logits.argmax())
        out.append(token)
        context.append(token)
        if len(context) >= CONTEXT:
            context = [*start, *context[-(CONTEXT // 2):]]
            logits = decoder.prefill(torch.tensor([context]))[0]
        else:
            logits = decoder.step([token])[0]
    return out


@torch.inference_mode()
def test_the_window_slides_past_the_context(lm, monkeypatch):
    from studio_lm.decoding import Decoder

    widths = []
    prefill = Decoder.prefill
    monkeypatch.setattr(Decoder, "prefill", lambda self, ids, mask=None: widths.append(ids.shape[1]) or
                        prefill(self, ids, mask))
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    settings = Settings(max_new_tokens=3 * CONTEXT, temperature=0, slide=Slide(start=(0,)))
    row = sample(lm, rows(prompt), settings, context=CONTEXT)[0]
    assert len(row.new) == 3 * CONTEXT  # three contexts' worth: it wrote on past the first
    # the prompt, then refills of the start token and half the context, again and again
    assert widths[0] == len(prompt) and len(widths) > 3 and set(widths[1:]) == {1 + CONTEXT // 2}
    assert row.new == reference_sliding_greedy(lm, prompt, 3 * CONTEXT, start=(0,))


@torch.inference_mode()
def test_a_sliding_window_continues_the_end_of_a_prompt_longer_than_the_context(lm):
    prompt = list(range(1, 60))
    settings = Settings(max_new_tokens=10, temperature=0, slide=Slide())
    row = sample(lm, rows(prompt), settings, context=CONTEXT)[0]
    assert row.new == reference_sliding_greedy(lm, prompt, 10, start=())


@torch.inference_mode()
def test_sliding_rows_of_a_batch_come_out_as_they_do_alone(lm):
    """Prompts of one length: rows of different lengths slide together (see Slide)."""
    settings = Settings(max_new_tokens=50, temperature=1.0, top_k=20, slide=Slide(start=(0,)))
    prompts = ([4, 4, 2], [7, 1, 3])
    alone = [sample(lm, rows(p, seed=s), settings, context=CONTEXT)[0].new for s, p in enumerate(prompts)]
    batch = sample(lm, rows(*prompts), settings, context=CONTEXT)
    assert [r.new for r in batch] == alone


def test_a_context_too_short_to_slide_is_a_clear_error():
    assert Slide(start=(0,)).window([1, 2, 3, 4, 5], 4) == [0, 4, 5]
    with pytest.raises(ValueError, match="too short to slide"):
        Slide(start=(0,)).window([1, 2, 3], 1)


def test_likeliest_first_top_p_keeps_the_tokens_before_the_mass_is_reached():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(1)) * 3
    ordered, order = torch.sort(logits, descending=True)
    before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # the mass before each token
    for k in (1, 4, 9):
        top_p = float(before[0, k])  # exactly the mass of the k likeliest: the k-th is dropped
        kept = ~torch.isinf(TopPLikeliestFirst(top_p)(None, logits))
        assert set(order[0, :k].tolist()) == set(torch.nonzero(kept[0]).flatten().tolist())
    assert int((~torch.isinf(TopPLikeliestFirst(1e-9)(None, logits))).sum()) == 1  # the likeliest always stays


def test_the_two_top_p_rules_agree_away_from_the_boundary():
    from transformers import TopPLogitsWarper

    logits = torch.randn(8, 97, generator=torch.Generator().manual_seed(2)) * 2
    for top_p in (0.3, 0.8, 0.95):
        assert torch.equal(TopPLikeliestFirst(top_p)(None, logits), TopPLogitsWarper(top_p)(None, logits))


def test_an_unknown_top_p_rule_is_refused():
    with pytest.raises(ValueError, match="top_p_rule 'nearest'"):
        processors(Settings(max_new_tokens=1, top_p=0.5, top_p_rule="nearest"))


def music_loop_before_studio_lm(model, prefix, *, duration_s, temperature, top_k, top_p, generator):
    """music.transformer's own sampling loop, as it was before it used studio_lm (minus
    progress): the oracle the shared loop must match token for token."""
    from studio_lm.decoding import Decoder
    from studio_music.events import BOS, EOS, TIME_SHIFT, VELOCITY

    def filter_logits(logits, top_k, top_p):
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1, None]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_logits.softmax(-1) >= top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return logits

    window = model.config.n_positions
    max_tokens = int(duration_s * 150) + 64
    decoder = Decoder(model, batch=1, length=window)
    context, new, elapsed = list(prefix)[-window:], [], 0.0
    logits = decoder.prefill(torch.tensor([context]))[0]
    while elapsed < duration_s and len(new) < max_tokens:
        logits[BOS] = float("-inf")
        logits[EOS] = float("-inf")
        if temperature == 0:
            token = int(logits.argmax())
        else:
            logits = filter_logits(logits / temperature, top_k, top_p)
            token = int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator))
        new.append(token)
        context.append(token)
        if TIME_SHIFT <= token < VELOCITY:
            elapsed += (token - TIME_SHIFT + 1) * 0.01
        if elapsed >= duration_s or len(new) >= max_tokens:
            break
        if len(context) >= window:
            context = [BOS] + context[-(window // 2):]
            logits = decoder.prefill(torch.tensor([context]))[0]
        else:
            logits = decoder.step([token])[0]
    return new


@pytest.mark.parametrize("settings", [
    {"temperature": 1.0, "top_k": 0, "top_p": 0.95},
    {"temperature": 0, "top_k": 0, "top_p": 0.95},
    {"temperature": 1.3, "top_k": 8, "top_p": 0.7},
    {"temperature": 0.8, "top_k": 0, "top_p": 1.0},
])
@torch.inference_mode()
def test_music_samples_through_the_shared_loop_as_its_own_loop_did(settings):
    """Over a 64-event context, so the window slides several times in 30 seconds."""
    from transformers import GPT2LMHeadModel

    from studio_music.events import BOS
    from studio_music.transformer_network import gpt2_config
    from studio_music.transformer_network import sample as music_sample

    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(n_layer=1, n_embd=32, n_head=2, n_positions=64)).eval()
    prefix = [BOS, 60, 300, 188]
    ours = music_sample(model, prefix, duration_s=30, generator=torch.Generator().manual_seed(5), **settings)
    theirs = music_loop_before_studio_lm(model, prefix, duration_s=30, generator=torch.Generator().manual_seed(5),
                                         **settings)
    assert ours == theirs and len(ours) > 2 * 64
