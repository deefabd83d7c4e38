"""Measure a text.gpt model for its model card.

    python -m model_cards.text_gpt [--model default] [--data shakespeare] [--samples 8]

Writes `--samples` texts of 200 tokens (seeds 0..n-1, temperature 0.8, top_p 0.95, the
generator's defaults) and reports the fraction of their words found in the training
text's vocabulary, against the same for an untrained model of the same shape, and prints
the first sample to read.
"""

from __future__ import annotations

import argparse
import json
import re

WORD = re.compile(r"[A-Za-z']+")


def words(text: str) -> list[str]:
    return [w.lower().strip("'") for w in WORD.findall(text) if w.strip("'")]


def known_fraction(texts: list[str], vocabulary: set[str]) -> float:
    found = [w for t in texts for w in words(t)]
    return sum(w in vocabulary for w in found) / max(1, len(found))


def write(model, prompts_and_seeds, max_new_tokens: int = 200) -> list[str]:
    from studio.testing import make_context
    from studio_text.gpt import TextGPT

    gen = TextGPT()
    params = [TextGPT.Params(model=model, prompt=p, max_new_tokens=max_new_tokens, seed=s)
              for p, s in prompts_and_seeds]
    return [o["text"] for o in gen.generate_batch(params, [make_context(seed=s) for _, s in prompts_and_seeds])]


def main() -> None:
    import tempfile
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio_text.gpt_data import load_documents
    from studio.weights import resolve_weights
    from studio_text.gpt import DEFAULT_WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="shakespeare")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()

    path = resolve_weights(args.model, DEFAULT_WEIGHTS)
    info = Path(path, "studio.json")
    held_out = set(json.loads(info.read_text()).get("held_out", [])) if info.is_file() else set()
    docs = load_documents(args.data)
    vocabulary = {w for name, text in docs if name not in held_out for w in words(text)}
    runs = [("", seed) for seed in range(args.samples)]
    texts = write(args.model, runs)
    with tempfile.TemporaryDirectory() as tmp:  # an untrained model of the same shape and tokenizer
        config = AutoModelForCausalLM.from_pretrained(path).config
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(path).save_pretrained(tmp)
        untrained = write(tmp, runs)
    report = {"samples": len(texts), "words_written": sum(len(words(t)) for t in texts),
              "known_word_fraction": round(known_fraction(texts, vocabulary), 4),
              "untrained_known_word_fraction": round(known_fraction(untrained, vocabulary), 4),
              "training_vocabulary": len(vocabulary)}
    print(json.dumps(report, indent=2))
    print("\n--- sample 0 ---\n" + texts[0])


if __name__ == "__main__":
    main()
