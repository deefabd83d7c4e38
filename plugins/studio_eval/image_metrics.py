"""Image-set metrics in the feature network's space (studio_eval.features).

- FID and KID against a reference set (torchmetrics), in Studio's features: comparable
  between runs measured here, not with published Inception-based numbers.
- Precision and recall with k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019):
  precision, the share of generated images inside the reference manifold (fidelity);
  recall, the share of reference images inside the generated one (diversity).
- Classes, when the reference has them (sub-folders): each generated image is given the
  class of its nearest reference neighbours; coverage is the share of reference classes
  that get a fair share of the images, and a collapse check compares the spread of the
  generated set with the reference's.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

K_NEIGHBOURS = 3  # the paper's k
FAIR_SHARE = 0.25  # a class is covered when it gets a quarter of the images a uniform share would give


def pairwise(a: Any, b: Any, chunk: int = 2048) -> Any:
    import torch

    return torch.cat([torch.cdist(a[i:i + chunk], b) for i in range(0, len(a), chunk)])


def manifold_radii(features: Any, k: int = K_NEIGHBOURS) -> Any:
    """Each point's distance to its k-th nearest other point of the same set."""
    distances = pairwise(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # the 1st is the point itself (0)


def precision_recall(real: Any, fake: Any, k: int = K_NEIGHBOURS) -> tuple[float, float]:
    """(precision, recall) with k-NN manifolds: a point is inside a set's manifold when
    it lies within some member's k-NN radius."""
    real_radii, fake_radii = manifold_radii(real, k), manifold_radii(fake, k)
    to_real = pairwise(fake, real)  # (fake, real)
    precision = (to_real <= real_radii[None, :]).any(dim=1).double().mean()
    recall = (to_real.T <= fake_radii[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def spread(features: Any) -> float:
    """Mean distance between two members of a set."""
    n = len(features)
    if n < 2:
        return 0.0
    return float(pairwise(features, features).sum() / (n * (n - 1)))


def nearest_classes(real: Any, labels: list[str], fake: Any, k: int = 5) -> list[str]:
    """The majority class among each generated image's k nearest reference images."""
    import torch

    nearest = pairwise(fake, real).topk(min(k, len(real)), largest=False).indices
    names = sorted(set(labels))
    index = torch.tensor([names.index(label) for label in labels])
    votes = index[nearest]  # (fake, k)
    return [names[int(torch.bincount(row, minlength=len(names)).argmax())] for row in votes]


def class_report(real_labels: list[str], predicted: list[str], asked: list[str | None]) -> dict[str, Any]:
    """Coverage, balance and (when the items asked for a class) agreement."""
    import math

    classes = sorted(set(real_labels))
    counts = Counter(predicted)
    fair = FAIR_SHARE * len(predicted) / len(classes)
    covered = [c for c in classes if counts[c] >= fair]
    shares = [counts[c] / len(predicted) for c in classes]
    entropy = -sum(p * math.log(p) for p in shares if p > 0)
    out: dict[str, Any] = {
        "classes": len(classes), "classes_covered": len(covered), "class_coverage": len(covered) / len(classes),
        # 1: the images spread over the classes evenly; 0: all in one class
        "class_balance": max(0.0, entropy / math.log(len(classes))) if len(classes) > 1 else 1.0,
        "class_counts": {c: counts[c] for c in classes},
        "classes_missing": [c for c in classes if counts[c] < fair],
    }
    pairs = [(a, p) for a, p in zip(asked, predicted) if a is not None]
    if pairs:
        out["label_agreement"] = sum(str(a) == p for a, p in pairs) / len(pairs)
    return out


def measure_images(real: Any, fake: Any, real_labels: list[str] | None = None,
                   asked: list[str | None] | None = None) -> dict[str, Any]:
    """Every image metric for generated features `fake` against reference `real`
    ((N, D) float64 tensors)."""
    from studio_eval.frechet import frechet_distance, kernel_distance

    out: dict[str, Any] = {"generated": len(fake), "reference": len(real)}
    out["fid_studio_features"] = frechet_distance(real, fake)
    kid, kid_std = kernel_distance(real, fake)
    out["kid_studio_features"], out["kid_std"] = kid, kid_std
    out["precision"], out["recall"] = precision_recall(real, fake)
    ratio = spread(fake) / max(spread(real), 1e-12)
    out["spread_ratio"] = ratio  # generated spread / reference spread: well below 1 is collapse
    if real_labels and len(set(real_labels)) > 1:
        predicted = nearest_classes(real, real_labels, fake)
        out.update(class_report(real_labels, predicted, asked or [None] * len(fake)))
    coverage = out.get("class_coverage", 1.0)
    out["mode_collapse"] = bool(ratio < 0.5 or coverage < 0.5)
    return out
