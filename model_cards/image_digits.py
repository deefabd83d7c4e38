"""Measures the image defaults the way the model cards report them.

A small CNN classifier is trained on the same data (held-out accuracy reported); then
it scores samples from a generator:
- confidence: mean top-class probability (do samples look like some class?),
- coverage: how many classes get at least 2% of the samples (mode collapse lowers it),
- label agreement (class-conditional models): the classifier agrees with the class asked for.
The same numbers for an untrained generator of the same architecture are the baseline.

    python -m model_cards.image_digits [--diffusion DIR] [--gan DIR] [--samples 500] [--json OUT]

(--diffusion: a class-conditional UNet2DModel directory; the digit model by default.)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
import torch.nn.functional as F

from studio_imagedata.sources import load_images
from studio_image.diffusion import DIGITS_WEIGHTS as DIGITS


class Classifier(nn.Module):
    def __init__(self, channels: int, classes: int, size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * (size // 4) ** 2, classes))

    def forward(self, x):
        return self.net(x)


def train_classifier(data_source: str, size: int, channels: int, steps: int = 1500):
    torch.manual_seed(0)
    data = load_images(data_source, size, channels)
    train, test = data.split()
    model = Classifier(channels, len(data.classes), size)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(len(train.images), (64,), generator=gen)
        x = train.images[i] + 0.05 * torch.randn(train.images[i].shape, generator=gen)  # robust to sample noise
        loss = F.cross_entropy(model(x), train.labels[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    return model, accuracy, data.classes


def score(classifier, images, asked=None, classes: int = 10) -> dict[str, float]:
    with torch.no_grad():
        probs = classifier(images).softmax(1)
    top = probs.argmax(1)
    counts = torch.bincount(top, minlength=classes).float() / len(top)
    out = {"confidence": probs.max(1).values.mean().item(),
           "coverage": int((counts >= 0.02).sum().item()), "classes": classes}
    if asked is not None:
        out["label_agreement"] = (top == asked).float().mean().item()
    return out


def _images_from_pil(pil_images) -> torch.Tensor:
    import numpy as np

    arrays = np.stack([np.asarray(im, dtype=np.float32) for im in pil_images])
    x = torch.from_numpy(arrays)
    return (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)) / 127.5 - 1.0


def sample_diffusion(model_dir: str | None, n: int, steps: int, guidance: float, classes: int):
    """Samples through the generator itself (the code path users run); model_dir None:
    the same architecture with untrained weights."""
    from studio.testing import make_context
    from studio_image.diffusion import ImageDiffusion

    gen = ImageDiffusion()
    asked = torch.arange(n) % classes
    if model_dir is None:
        from diffusers import UNet2DModel

        from studio_image.diffusion_train import unet_config

        torch.manual_seed(1)
        loaded = gen.load(ImageDiffusion.Params(model=str(DIGITS)), make_context())
        loaded = loaded.with_unet(UNet2DModel(**unet_config(16, 1, classes)).eval())
        gen.load = lambda params, ctx: loaded
        model_dir = str(DIGITS)
    params = [ImageDiffusion.Params(model=model_dir, steps=steps, guidance_scale=guidance,
                                    class_label=int(a), seed=i) for i, a in enumerate(asked)]
    ctxs = [make_context(seed=i) for i in range(n)]
    runtime = ctxs[0].runtime
    for c in ctxs:
        c.runtime = runtime  # one model cache
    images = []
    for start in range(0, n, 100):
        out = gen.generate_batch(params[start:start + 100], ctxs[start:start + 100])
        images += [o["image"] for o in out]
    return _images_from_pil(images), asked


def sample_gan(model_dir: str | None, n: int):
    from studio.testing import make_context
    from studio_image.gan import ImageGAN
    from studio_image.gan_network import DCGenerator, GANConfig

    gen = ImageGAN()
    if model_dir is None:
        torch.manual_seed(1)
        untrained = DCGenerator(GANConfig()).eval()
        gen.load = lambda params, ctx: untrained
        model_dir = "default"
    ctx = make_context()
    params = [ImageGAN.Params(model=model_dir, seed=i) for i in range(n)]
    ctxs = [make_context(seed=i) for i in range(n)]
    for c in ctxs:
        c.runtime = ctx.runtime
    out = gen.generate_batch(params, ctxs)
    return _images_from_pil([o["image"] for o in out])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="sklearn:digits")
    parser.add_argument("--diffusion", default=str(DIGITS))
    parser.add_argument("--gan", default="default")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    began = time.time()
    classifier, accuracy, classes = train_classifier(args.data, 16, 1)
    report = {"classifier_held_out_accuracy": accuracy, "samples": args.samples}
    real = load_images(args.data, 16, 1)
    report["real_data"] = score(classifier, real.images, real.labels, len(classes))
    for name, model_dir in (("diffusion", args.diffusion), ("diffusion_untrained", None)):
        images, asked = sample_diffusion(model_dir, args.samples, args.steps, args.guidance, len(classes))
        report[name] = score(classifier, images, asked, len(classes))
    for name, model_dir in (("gan", args.gan), ("gan_untrained", None)):
        report[name] = score(classifier, sample_gan(model_dir, args.samples), None, len(classes))
    report["seconds"] = round(time.time() - began, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
