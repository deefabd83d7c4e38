"""Does generated data help a classifier trained on a few labelled digits, beyond what
classical augmentation already gives? scikit-learn's digits, measured as the issue that
asked for it lays out (docs/augmentation.md has the results):

- a fixed stratified half of the 1,797 digits is the test set; from the other half,
  k = 5, 10, 20, 50 labelled images per class, 10 random draws each; the rest of that
  half is the unlabelled pool;
- A: the k-shot images only; B: plus classical augmentation (image.augment's
  torchvision transforms); C1: plus images from a class-conditional diffusion model
  trained on the k-shot images only; C2: that model trained also on the unlabelled pool,
  labelled by A's classifier; D1/D2: B plus C1/C2;
- synthetic-to-real ratios 1, 3 and 10; generated images with and without confidence
  filtering (draw twice as many, keep the half A's classifier is surest of);
- classifiers: logistic regression and a small CNN; mean accuracy with a 95% confidence
  interval over the 10 draws, a paired t-test against B at the same ratio, and the
  classification accuracy score (CAS: a classifier trained on generated images only).

    python experiments/digits_augmentation.py [--draws 10] [--workers 2] [--out docs]

The generator is a small class-conditional DDPM (an MLP denoiser over the 8 x 8 pixels,
diffusers' DDPM scheduler for training and sampling): 80 of them are
trained, which the 32 x 32 UNet of image.diffusion could not do in the time budget.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

KS = (5, 10, 20, 50)
RATIOS = (1, 3, 10)
CLASSES = 10
GEN_STEPS = 1500
CNN_STEPS = 300
# image.augment's settings for small digits: no flips (a mirrored 2 is not a 2)
AUGMENT = SimpleNamespace(rotate=12.0, translate=0.12, scale=0.1, shear=5.0, flip=False, vertical_flip=False,
                          brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, blur=0.0, elastic=0.0, erase=0.0,
                          fill="#000000")


def load():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (N, 8, 8) ink in [0, 1] on black
    pool_x, test_x, pool_y, test_y = train_test_split(x, digits.target, test_size=0.5, stratify=digits.target,
                                                      random_state=0)
    return pool_x, pool_y, test_x, test_y


def draw(pool_y, k: int, seed: int):
    """Indexes of k labelled images per class, and of the unlabelled rest."""
    rng = np.random.default_rng(1000 * k + seed)
    labelled = np.concatenate([rng.choice(np.flatnonzero(pool_y == c), k, replace=False) for c in range(CLASSES)])
    rest = np.setdiff1d(np.arange(len(pool_y)), labelled)
    return labelled, rest


# --- classical augmentation (image.augment's transforms) ------------------------------

def classical(x, y, ratio: int, seed: int):
    import torch
    from PIL import Image

    from studio_image.augment import transforms

    images = [Image.fromarray((image * 255).astype(np.uint8)) for image in x]
    augment = transforms(AUGMENT, images[0])  # every image is 8 x 8 greyscale with a fixed fill: one pipeline
    out_x, out_y = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(ratio):
            for pil, label in zip(images, y):
                out_x.append(np.asarray(augment(pil), dtype=np.float32) / 255)
                out_y.append(label)
    return np.stack(out_x), np.array(out_y)


# --- the class-conditional generator -----------------------------------------------------

def train_generator(x, y, seed: int):
    """A class-conditional DDPM over the 64 pixels: an MLP denoiser with a class and a
    time embedding, classifier-free guidance (one label in ten dropped in training)."""
    import torch
    from torch import nn
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)

    class Denoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.label = nn.Embedding(CLASSES + 1, 64)  # the last is "no class"
            self.net = nn.Sequential(nn.Linear(64 + 64 + 64, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
                                     nn.Linear(256, 256), nn.SiLU(), nn.Linear(256, 64))

        def forward(self, noisy, t, label):
            half = torch.exp(-math.log(10_000) * torch.arange(32) / 32)
            angles = t.float()[:, None] * half[None]
            time = torch.cat([angles.sin(), angles.cos()], dim=1)
            return self.net(torch.cat([noisy, time, self.label(label)], dim=1))

    model = Denoiser()
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    data = torch.from_numpy(x.reshape(len(x), 64) * 2 - 1)
    labels = torch.from_numpy(np.asarray(y)).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    lr = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=GEN_STEPS)
    for _ in range(GEN_STEPS):
        index = torch.randint(len(data), (128,))
        clean, label = data[index], labels[index].clone()
        label[torch.rand(len(label)) < 0.1] = CLASSES
        noise = torch.randn_like(clean)
        t = torch.randint(0, 1000, (len(clean),))
        loss = nn.functional.mse_loss(model(schedule.add_noise(clean, noise, t), t, label), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr.step()
    return model.eval()


def sample(model, labels, seed: int, steps: int = 100, guidance: float = 2.0):
    """Ancestral DDPM sampling over `steps` of the 1,000 training steps (diffusers'
    DDPMScheduler), with classifier-free guidance."""
    import torch
    from diffusers import DDPMScheduler

    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    schedule.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    label = torch.as_tensor(labels).long()
    x = torch.randn(len(label), 64, generator=generator)
    none = torch.full_like(label, CLASSES)
    with torch.no_grad():
        for t in schedule.timesteps:
            tt = torch.full((len(x),), int(t))
            cond, uncond = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([label, none])).chunk(2)
            x = schedule.step(uncond + guidance * (cond - uncond), t, x, generator=generator).prev_sample
    return ((x.clamp(-1, 1) + 1) / 2).reshape(-1, 8, 8).numpy()


def generated(model, per_class: int, seed: int, judge=None):
    """per_class images of every class; with `judge` (A's classifier), twice as many
    drawn and the half it is surest of kept (per class)."""
    labels = np.repeat(np.arange(CLASSES), per_class * (2 if judge else 1))
    images = sample(model, labels, seed)
    if judge is None:
        return images, labels
    confidence = judge.predict_proba(images.reshape(len(images), 64))[np.arange(len(labels)), labels]
    keep = np.concatenate([np.flatnonzero(labels == c)[np.argsort(-confidence[labels == c])[:per_class]]
                           for c in range(CLASSES)])
    return images[keep], labels[keep]


# --- classifiers --------------------------------------------------------------------------

def logistic(x, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, C=1.0).fit(x.reshape(len(x), 64), y)


def cnn_accuracy(x, y, test_x, test_y, seed: int) -> float:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 16, CLASSES))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    data, labels = torch.from_numpy(x[:, None].astype(np.float32)), torch.from_numpy(np.asarray(y)).long()
    for _ in range(CNN_STEPS):
        index = torch.randint(len(data), (64,))
        loss = nn.functional.cross_entropy(net(data[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(test_x[:, None].astype(np.float32))).argmax(1).numpy()
    return float((predicted == test_y).mean())


def accuracies(x, y, test_x, test_y, seed: int) -> dict[str, float]:
    lr = logistic(x, y)
    return {"logreg": float((lr.predict(test_x.reshape(len(test_x), 64)) == test_y).mean()),
            "cnn": cnn_accuracy(x, y, test_x, test_y, seed)}


# --- one draw ----------------------------------------------------------------------------

def one_draw(task):
    """Every condition for one (k, draw): {condition: {classifier: accuracy}}."""
    k, seed = task
    import torch

    torch.set_num_threads(1)
    pool_x, pool_y, test_x, test_y = load()
    labelled, rest = draw(pool_y, k, seed)
    x, y = pool_x[labelled], pool_y[labelled]
    results: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    results["A"] = accuracies(x, y, test_x, test_y, seed)
    judge = logistic(x, y)  # A's classifier: the pseudo-labeller and the filter
    aug_x, aug_y = classical(x, y, max(RATIOS), seed)
    for ratio in RATIOS:
        n = ratio * len(x)
        results[f"B r{ratio}"] = accuracies(np.concatenate([x, aug_x[:n]]), np.concatenate([y, aug_y[:n]]),
                                            test_x, test_y, seed)
    pseudo = judge.predict(pool_x[rest].reshape(len(rest), 64))
    generators = {"C1": train_generator(x, y, seed),
                  "C2": train_generator(np.concatenate([x, pool_x[rest]]), np.concatenate([y, pseudo]), seed)}
    for name, model in generators.items():
        for filtered in (False, True):
            gen_x, gen_y = generated(model, max(RATIOS) * k, seed, judge if filtered else None)
            order = np.random.default_rng(seed).permutation(len(gen_x))  # prefixes hold every class evenly
            gen_x, gen_y = gen_x[order], gen_y[order]
            tag = " filtered" if filtered else ""
            if not filtered:  # CAS: trained on generated images alone, tested on real ones
                results[f"CAS {name}"] = accuracies(gen_x[:len(x) * max(RATIOS)], gen_y[:len(x) * max(RATIOS)],
                                                    test_x, test_y, seed)
            for ratio in RATIOS:
                n = ratio * len(x)
                results[f"{name} r{ratio}{tag}"] = accuracies(np.concatenate([x, gen_x[:n]]),
                                                              np.concatenate([y, gen_y[:n]]), test_x, test_y, seed)
                d = "D1" if name == "C1" else "D2"
                results[f"{d} r{ratio}{tag}"] = accuracies(
                    np.concatenate([x, aug_x[:n], gen_x[:n]]), np.concatenate([y, aug_y[:n], gen_y[:n]]),
                    test_x, test_y, seed)
    return {"k": k, "draw": seed, "seconds": time.perf_counter() - started, "results": results}


# --- statistics and the report -----------------------------------------------------------

@dataclass
class Summary:
    mean: float
    low: float
    high: float
    p_vs_b: float | None
    gain_vs_b: float | None


def summarise(rows: list[dict], k: int, condition: str, classifier: str) -> Summary:
    from scipy import stats

    runs = sorted((r for r in rows if r["k"] == k), key=lambda r: r["draw"])
    values = np.array([r["results"][condition][classifier] for r in runs])
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    p = gain = None
    ratio = next((part for part in condition.split() if part.startswith("r")), None)
    if ratio and not condition.startswith("B"):
        baseline = np.array([r["results"][f"B {ratio}"][classifier] for r in runs])
        gain = float((values - baseline).mean())
        p = float(stats.ttest_rel(values, baseline).pvalue) if np.any(values != baseline) else 1.0
    return Summary(float(values.mean()), float(values.mean() - half), float(values.mean() + half), p, gain)


def report(rows: list[dict], out: Path, seconds: float, workers: int) -> None:
    conditions = list(rows[0]["results"])
    lines = []
    for classifier in ("logreg", "cnn"):
        lines += [f"### {'Logistic regression' if classifier == 'logreg' else 'Small CNN'}", "",
                  "| condition | " + " | ".join(f"k = {k}" for k in KS) + " |",
                  "| --- |" + " --- |" * len(KS)]
        for condition in conditions:
            cells = []
            for k in KS:
                s = summarise(rows, k, condition, classifier)
                cell = f"{100 * s.mean:.1f} [{100 * s.low:.1f}, {100 * s.high:.1f}]"
                if s.gain_vs_b is not None:
                    cell += f" ({100 * s.gain_vs_b:+.1f} vs B, p={s.p_vs_b:.2g})"
                cells.append(cell)
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
        lines.append("")
    (out / "augmentation-table.md").write_text("\n".join(lines) + "\n")
    (out / "augmentation-results.json").write_text(json.dumps(
        {"seconds": round(seconds, 1), "workers": workers, "rows": rows}, indent=1) + "\n")
    plot(rows, out / "augmentation.png")
    print("\n".join(lines))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["A", "B r10", "C1 r10", "C2 r10", "D1 r10", "D2 r10"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, classifier in zip(axes, ("logreg", "cnn")):
        for condition in shown:
            summaries = [summarise(rows, k, condition, classifier) for k in KS]
            means = [100 * s.mean for s in summaries]
            errors = [[100 * (s.mean - s.low) for s in summaries], [100 * (s.high - s.mean) for s in summaries]]
            axis.errorbar(KS, means, yerr=errors, marker="o", capsize=3, label=condition)
        axis.set_xscale("log")
        axis.set_xticks(KS, [str(k) for k in KS])
        axis.minorticks_off()
        axis.set_xlabel("labelled images per class (k)")
        axis.set_title("logistic regression" if classifier == "logreg" else "small CNN")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy, % (95% CI over 10 draws)")
    figure.suptitle("10 synthetic images per real one (B: classical, C: generated, D: both)", fontsize=10)
    axes[1].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    global KS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--ks", default="5,10,20,50")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    parser.add_argument("--from-results", type=Path, default=None,
                        help="Rebuild the table and plot from a saved augmentation-results.json; train nothing.")
    args = parser.parse_args()
    if args.from_results:
        saved = json.loads(args.from_results.read_text())
        KS = tuple(sorted({row["k"] for row in saved["rows"]}))
        report(saved["rows"], args.out, saved["seconds"], saved["workers"])
        return
    KS = tuple(int(k) for k in args.ks.split(","))
    tasks = [(k, d) for k in KS for d in range(args.draws)]
    started = time.perf_counter()
    rows = []
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers) as pool:
            for row in pool.map(one_draw, tasks):
                rows.append(row)
                print(f"k={row['k']} draw {row['draw']}: {row['seconds']:.1f} s", flush=True)
    else:
        for task in tasks:
            rows.append(one_draw(task))
            print(f"k={task[0]} draw {task[1]}: {rows[-1]['seconds']:.1f} s", flush=True)
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    report(rows, args.out, seconds, args.workers)
    print(f"{len(tasks)} draws in {seconds / 60:.1f} min with {args.workers} workers")


if __name__ == "__main__":
    main()
