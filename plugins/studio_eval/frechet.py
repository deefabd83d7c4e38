"""Fréchet and kernel distances between two sets of feature vectors, through
torchmetrics' FID and KID with the features given directly (an identity "network"), so
every Fréchet distance Studio reports, in whatever features, is torchmetrics' own."""

from __future__ import annotations

from typing import Any


def _identity(width: int) -> Any:
    from torch import nn

    class Given(nn.Identity):
        num_features = width  # torchmetrics reads it instead of probing with an image

    return Given()


def frechet_distance(real: Any, fake: Any) -> float:
    """The Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    from studio_eval.requires import require

    FrechetInceptionDistance = require("torchmetrics.image.fid", "the Fréchet distance").FrechetInceptionDistance
    metric = FrechetInceptionDistance(feature=_identity(real.shape[1]), normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(real: Any, fake: Any, subsets: int = 50, seed: int = 0) -> tuple[float, float]:
    """KID: the squared MMD with a cubic polynomial kernel, mean and standard deviation
    over `subsets` random subsets of up to 1,000 of each set. Unbiased: near 0 (and
    possibly below it) for sets from one distribution."""
    import torch

    from studio_eval.requires import require

    KernelInceptionDistance = require("torchmetrics.image.kid", "the kernel distance (KID)").KernelInceptionDistance

    import warnings

    size = min(1000, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": these sets are bounded
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        metric = KernelInceptionDistance(feature=_identity(real.shape[1]), subsets=subsets, subset_size=size,
                                         normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws its subsets from the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)
