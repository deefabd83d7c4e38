"""Trains the image feature network of eval.metrics: one classifier over several
labelled image sets at once (by default the handwritten digits and the emoji's CLDR
groups), so its features separate strokes, shapes and colours. Light augmentation
(shifts of up to 3 pixels, small rotations, colour jitter) keeps the features steady
under changes that do not change what an image shows."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from studio import UserError
from studio.training import Trainer, TrainerOptions

DEFAULT_DATA = "sklearn:digits+emoji:noto"


class FeatureTrainer(Trainer):
    generator = "eval.metrics"
    description = ("The image feature network that eval.metrics and `studio eval` measure FID, KID, precision and "
                   "recall in. --data: image sources joined with '+', each keeping its own classes "
                   f"(default weights: {DEFAULT_DATA}).")
    default_steps = 3000
    default_batch_size = 128
    default_lr = 2e-3

    class Options(TrainerOptions):
        label_smoothing: float = Field(0.1, ge=0.0, le=0.5, description="Cross-entropy label smoothing.")

    options: Options

    def setup(self) -> None:
        import torch
        from torchvision.transforms import v2

        from studio_eval.features import SIZE, build
        from studio_imagedata.sources import load_images

        sources = [s for s in self.config.data.split("+") if s]
        if not sources:
            raise UserError(f"--data {self.config.data!r}: name at least one image source, e.g. {DEFAULT_DATA}")
        train_x, train_y, test_x, test_y, self.classes = [], [], [], [], []
        for source in sources:
            data = load_images(source, SIZE, 3)
            if len(data.classes) < 2:
                raise UserError(f"--data {source!r}: {len(data.classes)} class(es); the feature network learns by "
                                "telling classes apart: give a folder with one sub-folder per class")
            train, test = data.split()
            offset = len(self.classes)
            train_x.append(train.images)
            train_y.append(train.labels + offset)
            test_x.append(test.images)
            test_y.append(test.labels + offset)
            self.classes += [f"{source}:{name}" for name in data.classes]
        self.train_x, self.train_y = torch.cat(train_x), torch.cat(train_y)
        self.test_x, self.test_y = torch.cat(test_x), torch.cat(test_y)
        # each source weighs the same in a batch, however many images it has
        weights = torch.cat([torch.full((len(y),), 1.0 / len(y)) for y in train_y])
        self.sampling_weights = weights / weights.sum()
        self.augment = v2.Compose([
            v2.RandomAffine(degrees=8, translate=(3 / SIZE, 3 / SIZE), scale=(0.9, 1.1), fill=1.0),
            v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15)])
        self.net = build(len(self.classes)).to(self.device)
        self.modules = {"net": self.net}
        self.optimizers = {"net": torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=1e-4)}

    def train_step(self, step: int) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        index = torch.multinomial(self.sampling_weights, self.batch_size, replacement=True, generator=self.rng)
        # torchvision draws its augmentation from torch's global generator: seed it from ours
        torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=self.rng)))
        images = (self.train_x[index] + 1) / 2  # ColorJitter works in [0, 1]
        x = torch.stack([self.augment(image) for image in images]) * 2 - 1
        self.net.train()
        loss = F.cross_entropy(self.net.classify(x.to(self.device)), self.train_y[index].to(self.device),
                               label_smoothing=self.options.label_smoothing)
        self.optimize(loss, "net", clip=1.0)
        return {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        """Held-out accuracy, overall and per source."""
        import torch

        self.net.eval()
        with torch.no_grad():
            predicted = torch.cat([self.net.classify(self.test_x[i:i + 512].to(self.device)).argmax(1).cpu()
                                   for i in range(0, len(self.test_x), 512)])
        right = predicted == self.test_y
        out = {"held_out_accuracy": right.float().mean().item(), "held_out_images": len(self.test_y),
               "classes": len(self.classes)}
        sources = sorted({name.rsplit(":", 1)[0] for name in self.classes})
        for source in sources:
            ids = torch.tensor([i for i, name in enumerate(self.classes) if name.rsplit(":", 1)[0] == source])
            mask = torch.isin(self.test_y, ids)
            out[f"held_out_accuracy[{source}]"] = right[mask].float().mean().item()
        return out

    def export(self, out: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  out / "model.safetensors")
        (out / "config.json").write_text(json.dumps({"network": "studio-features-v1", "classes": len(self.classes),
                                                     "class_names": self.classes, "data": self.config.data},
                                                    indent=1) + "\n")
