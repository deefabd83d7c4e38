"""text.gpt on a tiny GPT-2 and BPE tokenizer saved here the way a user's checkpoint is:
seeds, greedy decoding against transformers' generate(), stop strings, batches, long
prompts, bad parameters, text flowing downstream, and a short training run."""

import json

import numpy as np
import pytest
import torch

from studio.errors import PipelineError
from studio.testing import make_context, run_yaml

TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles "
        "and by opposing end them. To die, to sleep, no more; and by a sleep to say we end "
        "the heart-ache and the thousand natural shocks that flesh is heir to. ") * 8


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 2-layer GPT-2 with a 300-token byte-level BPE, saved with save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from studio_text.gpt_train import train_tokenizer

    tokenizer = train_tokenizer([TEXT], vocab_size=300)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=eos, eos_token_id=eos))
    path = tmp_path_factory.mktemp("lm") / "tiny"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run(tmp_path, steps):
    return run_yaml(json.dumps({"name": "t", "device": "cpu", "steps": steps}), tmp_path)


def gpt(model, step_id="t", sweep=None, **with_):
    step = {"id": step_id, "uses": "text.gpt", "with": {"model": str(model), **with_}}
    if sweep:
        step["sweep"] = sweep
    return step


def texts(result, step_id="t"):
    assert result.status == "done", [i.error for i in result.failed]
    return [a.read_text() for a in result.artifacts(step_id)]


def notes(result, step_id="t"):
    return [i["notes"] for i in json.loads(result.manifest_path.read_text())["steps"][step_id]["items"]]


def test_same_seed_same_text_and_seeds_differ(tiny_lm, tmp_path):
    result = run(tmp_path, [gpt(tiny_lm, prompt="To be", max_new_tokens=20, sweep={"seed": [1, 2]}),
                            gpt(tiny_lm, "again", prompt="To be", max_new_tokens=20, seed=1)])
    one, two = texts(result)
    again, = texts(result, "again")
    assert one == again and one != two
    assert one.startswith("To be") and len(one) > len("To be")


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_temperature_zero_is_transformers_greedy_decoding(tiny_lm, tmp_path, penalty):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run(tmp_path, [gpt(tiny_lm, prompt="whether 'tis", temperature=0, max_new_tokens=25,
                                repetition_penalty=penalty, include_prompt=False, sweep={"seed": [1, 2]})])
    first, second = texts(result)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    ids = tokenizer("whether 'tis", return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, do_sample=False, max_new_tokens=25, repetition_penalty=penalty,
                         pad_token_id=tokenizer.eos_token_id)
    expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert first == second == expected


def test_stop_strings_end_the_text_and_are_not_kept(tiny_lm, tmp_path):
    full, = texts(run(tmp_path / "a", [gpt(tiny_lm, prompt="To be", temperature=0, max_new_tokens=30,
                                           include_prompt=False)]))
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip()
    result = run(tmp_path / "b", [gpt(tiny_lm, prompt="To be", temperature=0, max_new_tokens=30,
                                      include_prompt=False, stop=["NEVER-THERE", stop])])
    cut, = texts(result)
    assert cut == full[: full.index(stop)]
    assert notes(result)[0]["stopped_by"] == stop


def test_a_batch_writes_what_each_item_writes_alone(tiny_lm):
    from studio_text.gpt import TextGPT

    gen = TextGPT()
    items = [("To be, or not", 3), ("the", 4), ("and by opposing end them. To die", 5), ("", 6)]
    params = [TextGPT.Params(model=str(tiny_lm), prompt=p, max_new_tokens=15, top_k=20, seed=s) for p, s in items]
    batched = gen.generate_batch(params, [make_context(seed=s) for _, s in items])
    alone = [gen.generate(p, make_context(seed=s)) for p, (_, s) in zip(params, items)]
    assert [b["text"] for b in batched] == [a["text"] for a in alone]
    assert len({b["text"] for b in batched}) == 4


def test_a_compiled_model_decodes_over_a_static_cache_and_writes_the_same_text(tiny_lm, tmp_path):
    """`compile: true`: decode steps run through torch.compile over a static cache (CUDA
    graphs on a GPU); the prompt is prefilled eagerly. Same seeds, same text."""
    sweep = {"seed": [1, 2], "prompt": ["To be", "and by opposing end them, to"]}
    steps = [gpt(tiny_lm, "eager", max_new_tokens=12, top_k=20, sweep=sweep),
             {**gpt(tiny_lm, "compiled", max_new_tokens=12, top_k=20, sweep=sweep), "compile": True}]
    result = run_yaml(json.dumps({"name": "t", "device": "cpu", "steps": steps}), tmp_path, use_cache=False)
    assert texts(result, "compiled") == texts(result, "eager")
    runtime = json.loads(result.manifest_path.read_text())["runtime"]
    assert runtime["compile"]["modules"] == 1


def test_a_prompt_longer_than_the_context_keeps_its_end(tiny_lm, tmp_path):
    result = run(tmp_path, [gpt(tiny_lm, prompt=TEXT, max_new_tokens=10, include_prompt=False)])
    text, = texts(result)
    assert text and notes(result)[0]["prompt_tokens_dropped"] > 0


@pytest.mark.parametrize("with_,message", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"stop": "END"}, "stop"),
    ({"repetition_penalty": 0.5}, "repetition_penalty"),
])
def test_bad_parameters_are_caught_before_running(with_, message, write_yaml):
    from studio.errors import PipelineError
    from studio.pipeline.validate import load_spec
    from studio.testing import make_host

    path = write_yaml(json.dumps({"name": "t", "steps": [{"id": "t", "uses": "text.gpt", "with": with_}]}))
    with pytest.raises(PipelineError) as caught:
        load_spec(path, make_host().registry)
    text = str(caught.value)
    assert f"steps[0].with.{message}" in text and "(step 't')" in text and "Allowed:" in text


def test_more_new_tokens_than_the_context_is_a_clear_error(tiny_lm, tmp_path):
    with pytest.raises(PipelineError) as refused:  # validate reads the context from the model's config.json
        run(tmp_path, [gpt(tiny_lm, max_new_tokens=64)])
    assert ("with.max_new_tokens (step 't'): max_new_tokens 64 does not fit the model's context of 64 tokens; "
            "give at most 63") in str(refused.value)


def test_a_directory_without_a_model_is_a_clear_error(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(PipelineError) as refused:
        run(tmp_path, [gpt(tmp_path / "nothing")])
    assert "with.model (step 't'): model '" in str(refused.value)
    assert "is a directory without config.json" in str(refused.value)


def test_written_text_feeds_a_text_to_image_model(tiny_lm, tiny_sd_dir, tmp_path):
    result = run(tmp_path, [
        {"id": "subject", "uses": "text.template", "with": {"template": "a sea of"}},
        gpt(tiny_lm, "words", prompt="${steps.subject.outputs.text}", max_new_tokens=5),
        {"id": "img", "uses": "image.diffusion",
         "with": {"model": str(tiny_sd_dir), "prompt": "${steps.words.outputs.text}", "steps": 2}},
    ])
    words, = texts(result, "words")
    assert words.startswith("a sea of")
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["steps"]["img"]["items"][0]["params"]["prompt"] == words
    assert result.artifacts("img")[0].path.suffix == ".png"


def test_training_lowers_the_loss_and_the_model_writes(tmp_path):
    from studio.testing import make_host
    from studio.training import TrainConfig, train

    (tmp_path / "corpus").mkdir()
    for i in range(10):  # ten documents: one is held out
        (tmp_path / "corpus" / f"{i}.txt").write_text(TEXT)
    options = {"layers": "1", "width": "32", "heads": "2", "block": "32", "vocab_size": "300"}
    config = TrainConfig(data=str(tmp_path / "corpus"), out=tmp_path / "lm", steps=40, batch_size=8, lr=3e-3,
                         log_every=5, checkpoint_every=100, options=options)
    result = train(make_host().registry.trainer("text.gpt"), config, show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "lm" / "training" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 1.0
    assert result.metrics["val_loss_per_token"] < np.log(300)  # better than guessing
    assert result.metrics["val_loss_per_char"] < result.metrics["val_loss_per_token"]
    text, = texts(run(tmp_path / "run", [gpt(tmp_path / "lm", prompt="To be", max_new_tokens=10)]))
    assert text.startswith("To be")


def test_training_data_errors_are_clear(tmp_path):
    from studio.errors import UserError
    from studio_text.gpt_data import load_documents

    with pytest.raises(UserError, match="neither a file nor a folder"):
        load_documents(str(tmp_path / "missing"))
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8 text"):
        load_documents(str(tmp_path / "bad.txt"))
