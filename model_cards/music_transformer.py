"""Measures music.transformer the way its model card reports it:

- key fit: the fraction of notes inside the best-fitting major or minor scale
  (the key found by correlating the pitch-class histogram with Krumhansl-Kessler profiles),
- note density (notes per second) and pitch range (semitones between the 5th and 95th
  percentile pitch), against held-out pieces of the training data,
for N generated pieces, and for an untrained model of the same size as a baseline.

    python -m model_cards.music_transformer [--model DIR] [--pieces 20] [--duration 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MAJOR = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]
MINOR = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]
MAJOR_SCALE = [0, 2, 4, 5, 7, 9, 11]
MINOR_SCALE = [0, 2, 3, 5, 7, 8, 10, 11]  # harmonic and natural minor share these but the 7th


def key_fit(pitches: list[int]) -> float:
    histogram = np.bincount(np.asarray(pitches) % 12, minlength=12).astype(float)
    best, best_scale = -2.0, None
    for tonic in range(12):
        for profile, scale in ((MAJOR, MAJOR_SCALE), (MINOR, MINOR_SCALE)):
            r = np.corrcoef(histogram, np.roll(profile, tonic))[0, 1]
            if r > best:
                best, best_scale = r, {(tonic + s) % 12 for s in scale}
    return float(np.mean([p % 12 in best_scale for p in pitches]))


def describe_piece(notes) -> dict[str, float]:
    pitches = [n.pitch for n in notes]
    span = max(n.end for n in notes) - min(n.start for n in notes)
    return {"key_fit": key_fit(pitches), "notes_per_s": len(notes) / max(span, 1e-6),
            "pitch_range": float(np.percentile(pitches, 95) - np.percentile(pitches, 5))}


def summarise(pieces: list[dict]) -> dict[str, float]:
    return {k: round(float(np.mean([p[k] for p in pieces])), 3) for k in pieces[0]}


def main() -> None:
    import torch
    from transformers import GPT2LMHeadModel

    from studio.testing import make_context
    from studio_music.transformer_data import load_pieces
    from studio_music.events import BOS, decode, notes_of
    from studio_music.transformer import MusicTransformer
    from studio_music.transformer_network import sample

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="music21:bach")
    parser.add_argument("--dataset", help="dataset.json of a training run (skips converting the corpus)")
    parser.add_argument("--pieces", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json")
    args = parser.parse_args()

    gen = MusicTransformer()
    trained = gen.load(MusicTransformer.Params(model=args.model), None).eval()
    torch.manual_seed(1)
    untrained = GPT2LMHeadModel(trained.config).eval()
    report: dict = {}
    for name, model in (("model", trained), ("untrained", untrained)):
        pieces = []
        for seed in range(args.pieces):
            ctx = make_context(seed)
            tokens = sample(model, [BOS], duration_s=args.duration, temperature=1.0, top_k=0, top_p=0.95,
                            generator=ctx.torch_generator())
            notes = notes_of(decode(tokens))
            if len(notes) >= 2:
                pieces.append(describe_piece(notes))
        report[name] = {**summarise(pieces), "pieces_with_notes": len(pieces)}
    corpus = json.loads(Path(args.dataset).read_text()) if args.dataset else load_pieces(args.data)
    data = [describe_piece(notes_of(decode(p))) for p in corpus[:100]]
    report["training_data"] = {**summarise(data), "pieces": len(data)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
