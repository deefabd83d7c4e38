"""Measure a style.cyclegan model for its model card.

    python -m model_cards.style_cyclegan [--model default] [--data photo2clipart] [--crops 200]

- cycle consistency on held-out photos: mean |G_B(G_A(x)) - x| (pixel units of [-1, 1]);
- a domain classifier (logistic regression on colour histograms, whiteness and edge
  density, scikit-learn) trained on real crops of both domains: the probability it gives
  "clip art" for held-out photos before and after stylizing. Also writes before/after
  pairs to `--pairs` (a PNG) to look at.
"""

from __future__ import annotations

import argparse
import json


def features(batch):
    """Per image in a [-1, 1] batch (n, 3, h, w): 8-bin histograms of each channel,
    the share of near-white pixels, mean saturation, and edge density."""
    import numpy as np

    x = ((batch.numpy() + 1) / 2).clip(0, 1)
    out = []
    for img in x:
        hist = [np.histogram(img[c], bins=8, range=(0, 1))[0] / img[c].size for c in range(3)]
        white = float((img.min(axis=0) > 0.92).mean())
        saturation = float((img.max(axis=0) - img.min(axis=0)).mean())
        grey = img.mean(axis=0)
        edges = float((np.abs(np.diff(grey, axis=0)) > 0.1).mean() + (np.abs(np.diff(grey, axis=1)) > 0.1).mean())
        out.append(np.concatenate([*hist, [white, saturation, edges]]))
    return np.array(out)


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    from studio_style.cyclegan_data import load_domains, random_crop, split_held_out
    from studio_style.cyclegan import load_generator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="photo2clipart")
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--pairs", default=None, help="write before/after pairs to this PNG")
    args = parser.parse_args()

    domain_a, domain_b = load_domains(args.data, seed=0)
    train_a, test_a = split_held_out(domain_a)
    rng = np.random.default_rng(7)

    def crops(images, n):
        return torch.stack([random_crop(images[int(rng.integers(len(images)))], args.size, rng) for _ in range(n)])

    real_a, real_b = crops(train_a, args.crops), crops(domain_b, args.crops)
    classifier = LogisticRegression(max_iter=2000).fit(
        np.concatenate([features(real_a), features(real_b)]), np.array([0] * len(real_a) + [1] * len(real_b)))
    test_photos, test_b = crops(test_a, args.crops // 2), crops(domain_b[::-1], args.crops // 2)
    accuracy = classifier.score(np.concatenate([features(test_photos), features(test_b)]),
                                np.array([0] * len(test_photos) + [1] * len(test_b)))
    g_a, g_b = load_generator(args.model, "AtoB").eval(), load_generator(args.model, "BtoA").eval()
    with torch.no_grad():
        stylized = g_a(test_photos)
        cycle = float((g_b(stylized) - test_photos).abs().mean())
    report = {
        "held_out_photo_crops": len(test_photos), "classifier_accuracy_on_real_crops": round(accuracy, 3),
        "p_clipart_photos": round(float(classifier.predict_proba(features(test_photos))[:, 1].mean()), 3),
        "p_clipart_stylized_photos": round(float(classifier.predict_proba(features(stylized.clamp(-1, 1)))[:, 1].mean()), 3),
        "p_clipart_real_clipart": round(float(classifier.predict_proba(features(test_b))[:, 1].mean()), 3),
        "cycle_l1": round(cycle, 4), "change_l1": round(float((stylized - test_photos).abs().mean()), 4)}
    print(json.dumps(report, indent=2))
    if args.pairs:
        rows = [torch.cat([test_photos[i], stylized[i].clamp(-1, 1)], dim=2) for i in range(min(8, len(test_photos)))]
        grid = ((torch.cat(rows, dim=1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(args.pairs)


if __name__ == "__main__":
    main()
