"""Trains image.diffusion's UNet: DDPM noise prediction (Ho et al. 2020) with a cosine
schedule, class labels dropped 10% of the time so classifier-free guidance works, and an
exponential moving average of the weights (what gets exported)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field

from studio.training import OneOf, Trainer, TrainerOptions

NULL_CLASS_DROPOUT = 0.1


def unet_config(size: int, channels: int, num_classes: int) -> dict:
    return dict(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(32, 64, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        # one extra embedding: the "no class" label used for guidance
        num_class_embeds=num_classes + 1 if num_classes else None,
    )


class DiffusionTrainer(Trainer):
    generator = "image.diffusion"
    description = "DDPM training of a small class-conditional UNet2DModel (diffusers)."
    default_steps = 2000
    default_batch_size = 64
    default_lr = 2e-3

    class Options(TrainerOptions):
        size: int = Field(16, ge=4, le=1024, multiple_of=4, description=(
            "Side of the square images the UNet learns, in pixels; every training image is resized to it. "
            "A multiple of 4: the UNet halves it twice."))
        channels: Annotated[int, OneOf((1, 3))] = Field(1, description="1: greyscale, 3: RGB.")

    options: Options

    def setup(self) -> None:
        import torch
        from diffusers import DDPMScheduler, UNet2DModel

        from studio_image.data import load_images

        self.size = self.options.size
        self.channels = self.options.channels
        data = load_images(self.config.data, self.size, self.channels)
        self.train_data, self.held_out = data.split()
        self.classes = data.classes
        self.unet = UNet2DModel(**unet_config(self.size, self.channels, len(self.classes))).to(self.device)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
        self.modules = {"unet": self.unet, "ema": self.ema}
        self.optimizers = {"unet": torch.optim.AdamW(self.unet.parameters(), lr=self.lr, weight_decay=0.01)}

    def _labels(self, labels, drop: bool):
        import torch

        if not self.classes:
            return None
        labels = labels.clone()
        if drop:
            mask = torch.rand(labels.shape, generator=self.rng) < NULL_CLASS_DROPOUT
            labels[mask] = len(self.classes)
        return labels.to(self.device)

    def _loss(self, model, x0, labels, noise, t):
        import torch.nn.functional as F

        noisy = self.scheduler.add_noise(x0, noise, t)
        return F.mse_loss(model(noisy, t.to(self.device), class_labels=labels).sample, noise)

    def train_step(self, step: int) -> dict[str, float]:
        import torch

        index = torch.randint(len(self.train_data.images), (self.batch_size,), generator=self.rng)
        x0 = self.train_data.images[index]
        noise = torch.randn(x0.shape, generator=self.rng)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x0),), generator=self.rng)
        labels = self._labels(self.train_data.labels[index], drop=True)
        self.unet.train()
        loss = self._loss(self.unet, x0.to(self.device), labels, noise.to(self.device), t)
        self.optimize(loss, "unet", clip=1.0)
        decay = min(0.999, (1 + step) / (10 + step))  # short runs: let the average warm up
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.unet.parameters()):
                e.lerp_(p, 1 - decay)
        return {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        """Noise-prediction MSE of the exported (EMA) weights on held-out images, at
        fixed timesteps and noise so runs compare."""
        import torch

        gen = torch.Generator().manual_seed(1234)
        x0 = self.held_out.images
        total = 0.0
        timesteps = (50, 250, 500, 750, 950)
        with torch.no_grad():
            for t in timesteps:
                noise = torch.randn(x0.shape, generator=gen)
                tt = torch.full((len(x0),), t)
                labels = self._labels(self.held_out.labels, drop=False)
                total += self._loss(self.ema.eval(), x0.to(self.device), labels, noise.to(self.device), tt).item()
        return {"held_out_noise_mse": total / len(timesteps), "held_out_images": len(x0)}

    def export(self, out: Path) -> None:
        from diffusers import DDIMScheduler

        self.ema.save_pretrained(out / "unet")
        DDIMScheduler.from_config(self.scheduler.config).save_pretrained(out / "scheduler")
        (out / "model_index.json").write_text(json.dumps({
            "_class_name": "DDIMPipeline", "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, indent=2))
        (out / "studio.json").write_text(json.dumps({
            "classes": self.classes, "null_class": len(self.classes) if self.classes else None,
            "data": self.config.data}, indent=2))
