"""Trains image.gan: alternating discriminator and generator updates with the
non-saturating loss (Goodfellow et al. 2014), and a mode-collapse check in the log:
the spread of a fixed batch of samples against the spread of real images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field

from studio.training import OneOf, Trainer, TrainerOptions

COLLAPSE_CHECK_EVERY = 100
COLLAPSE_WARNING = 0.35  # sample spread below this fraction of the data's: collapsing


def spread(images) -> float:
    """Mean pairwise L2 distance between images (B, C, H, W)."""
    import torch

    flat = images.flatten(1)
    d = torch.cdist(flat, flat)
    n = len(flat)
    return (d.sum() / (n * (n - 1))).item()


class GANTrainer(Trainer):
    generator = "image.gan"
    description = "DCGAN with a spectrally normalised discriminator."
    default_steps = 3000
    default_batch_size = 64
    default_lr = 2e-4

    class Options(TrainerOptions):
        size: Annotated[int, OneOf((8, 16, 32, 64, 128, 256, 512, 1024))] = Field(16, description=(
            "Side of the square images, in pixels; every training image is resized to it. A power of two: "
            "the generator doubles a 4 x 4 start up to it."))
        channels: Annotated[int, OneOf((1, 3))] = Field(1, description="1: greyscale, 3: RGB.")
        z_dim: int = Field(64, ge=1, le=4096, description="Size of the random vector each image is made from.")

    options: Options

    def setup(self) -> None:
        import torch

        from studio_imagedata.sources import load_images
        from studio_image.gan_network import DCDiscriminator, DCGenerator, GANConfig

        self.gan_config = GANConfig(image_size=self.options.size, channels=self.options.channels,
                                    z_dim=self.options.z_dim)
        data = load_images(self.config.data, self.gan_config.image_size, self.gan_config.channels)
        self.train_data, self.held_out = data.split()
        self.G = DCGenerator(self.gan_config).to(self.device)
        self.D = DCDiscriminator(self.gan_config).to(self.device)
        self.modules = {"G": self.G, "D": self.D}
        betas = (0.5, 0.999)
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=betas),
                           "D": torch.optim.Adam(self.D.parameters(), lr=self.lr, betas=betas)}
        self.fixed_z = torch.randn(64, self.gan_config.z_dim, generator=torch.Generator().manual_seed(99))
        sample = self.held_out.images[:64]
        self.data_spread = spread(sample)

    def learning_rate(self, step: int) -> float:
        return self.lr  # GANs train at a constant rate

    def train_step(self, step: int) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        index = torch.randint(len(self.train_data.images), (self.batch_size,), generator=self.rng)
        real = self.train_data.images[index].to(self.device)
        z = torch.randn(self.batch_size, self.gan_config.z_dim, generator=self.rng).to(self.device)
        self.G.train()
        # discriminator: real -> 1, fake -> 0
        fake = self.G(z)
        d_loss = F.softplus(-self.D(real)).mean() + F.softplus(self.D(fake.detach())).mean()
        self.optimize(d_loss, "D")
        # generator: non-saturating, make D call fakes real
        g_loss = F.softplus(-self.D(fake)).mean()
        self.optimize(g_loss, "G")
        losses = {"d_loss": d_loss.item(), "g_loss": g_loss.item()}
        if (step + 1) % COLLAPSE_CHECK_EVERY == 0:
            losses["diversity"] = self._diversity()
            if losses["diversity"] < COLLAPSE_WARNING:
                print(f"step {step + 1}: warning: samples spread {losses['diversity']:.2f} of the data's; "
                      "the generator may be collapsing onto few modes")
        return losses

    def _diversity(self) -> float:
        import torch

        self.G.eval()
        with torch.no_grad():
            samples = self.G(self.fixed_z.to(self.device)).cpu()
        self.G.train()
        return spread(samples) / self.data_spread

    def evaluate(self) -> dict[str, float]:
        return {"diversity": self._diversity()}

    def samples(self) -> dict:
        """Sixteen images from the same fixed noise at every checkpoint, 4 x 4, enlarged."""
        from studio_image.samples import sheet

        self.G.eval()
        images = self.G(self.fixed_z[:16].to(self.device))
        self.G.train()
        return {"fixed-noise": sheet(images, 4)}

    def export(self, out: Path) -> None:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.G.state_dict().items()}
        save_file(state, out / "model.safetensors")
        (out / "config.json").write_text(json.dumps(
            {**self.gan_config.to_dict(), "data": self.config.data, "classes": self.train_data.classes}, indent=2))
