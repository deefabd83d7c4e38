"""Trains style.cyclegan with the full CycleGAN objective of the reference implementation:
two ResnetGenerators (G_A: A -> B, G_B: B -> A), two 70x70 PatchGAN discriminators
(D_A judges B images, D_B judges A images), least-squares GAN losses, cycle consistency
(lambda 10) and identity (0.5 x lambda), a pool of 50 past fakes for the discriminators,
Adam (lr 2e-4, betas 0.5/0.999), constant learning rate for half the steps, then
linear decay to zero.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pydantic import Field

from studio.training import Trainer, TrainerOptions

CYCLE = 10.0
IDENTITY = 0.5


class ImagePool:
    """The reference's history buffer: half the time the discriminator sees an older
    fake instead of the newest, which steadies training."""

    def __init__(self, size: int, seed: int):
        self.size, self.images, self.random = size, [], random.Random(seed)

    def query(self, batch):
        import torch

        out = []
        for image in batch.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.random.random() < 0.5:
                i = self.random.randrange(self.size)
                out.append(self.images[i])
                self.images[i] = image
            else:
                out.append(image)
        return torch.stack(out)


class CycleGANTrainer(Trainer):
    generator = "style.cyclegan"
    description = "CycleGAN (2 ResNet generators, 2 PatchGANs) on two unpaired image domains."
    default_steps = 3000
    default_batch_size = 4
    default_lr = 2e-4

    class Options(TrainerOptions):
        size: int = Field(64, ge=32, le=1024, multiple_of=4, description=(
            "Side of the square crops trained on, in pixels. A multiple of 4 (the generators halve it twice); "
            "at least 32, what the PatchGAN discriminators need."))
        ngf: int = Field(16, ge=1, le=256, description="Width of the generators' first layer (the reference: 64).")
        ndf: int = Field(16, ge=1, le=256, description=(
            "Width of the discriminators' first layer (the reference: 64)."))
        blocks: int = Field(6, ge=1, le=32, description="Residual blocks in each generator (the reference: 9).")

    options: Options

    def setup(self) -> None:
        import numpy as np
        import torch

        from studio_style.cyclegan_data import load_domains, random_crop, split_held_out
        from studio_style.cyclegan_network import NLayerDiscriminator, ResnetGenerator, init_weights

        self.size = self.options.size
        ngf, ndf = self.options.ngf, self.options.ndf
        self.n_blocks = self.options.blocks
        domain_a, domain_b = load_domains(self.config.data, seed=self.config.seed)
        if len(domain_a) < 2 or len(domain_b) < 2:
            raise ValueError("each domain needs at least 2 images")
        self.train_a, self.test_a = split_held_out(domain_a)
        self.train_b = domain_b
        self.np_rng = np.random.default_rng(self.config.seed)
        torch.manual_seed(self.config.seed)
        self.G_A, self.G_B = ResnetGenerator(3, 3, ngf, self.n_blocks), ResnetGenerator(3, 3, ngf, self.n_blocks)
        self.D_A, self.D_B = NLayerDiscriminator(3, ndf), NLayerDiscriminator(3, ndf)
        for net in (self.G_A, self.G_B, self.D_A, self.D_B):
            init_weights(net)
            net.to(self.device)
        self.modules = {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}
        adam = dict(lr=self.lr, betas=(0.5, 0.999))
        self.optimizers = {
            "G": torch.optim.Adam(list(self.G_A.parameters()) + list(self.G_B.parameters()), **adam),
            "D": torch.optim.Adam(list(self.D_A.parameters()) + list(self.D_B.parameters()), **adam)}
        self.pool_a, self.pool_b = ImagePool(50, self.config.seed), ImagePool(50, self.config.seed + 1)
        test_rng = np.random.default_rng(1234)
        self.test_crops = torch.stack([random_crop(img, self.size, test_rng)
                                       for img in self.test_a for _ in range(8)])
        self.counts = {"photos_train": len(self.train_a), "photos_held_out": len(self.test_a), "b_images": len(domain_b)}

    def learning_rate(self, step: int) -> float:
        half = self.steps // 2
        return self.lr if step < half else self.lr * (1 - (step - half) / max(1, self.steps - half))

    def _batch(self, images):
        import torch

        from studio_style.cyclegan_data import random_crop

        picks = self.np_rng.integers(0, len(images), self.batch_size)
        return torch.stack([random_crop(images[i], self.size, self.np_rng) for i in picks]).to(self.device)

    def train_step(self, step: int) -> dict[str, float]:
        import torch
        from torch.nn.functional import l1_loss, mse_loss

        real_a, real_b = self._batch(self.train_a), self._batch(self.train_b)
        for net in self.modules.values():
            net.train()
        # generators: fool both discriminators, come back round the cycle, leave the target domain alone
        self.D_A.requires_grad_(False)
        self.D_B.requires_grad_(False)
        fake_b, fake_a = self.G_A(real_a), self.G_B(real_b)
        pred_b, pred_a = self.D_A(fake_b), self.D_B(fake_a)
        gan = mse_loss(pred_b, torch.ones_like(pred_b)) + mse_loss(pred_a, torch.ones_like(pred_a))
        cycle = l1_loss(self.G_B(fake_b), real_a) + l1_loss(self.G_A(fake_a), real_b)
        identity = l1_loss(self.G_A(real_b), real_b) + l1_loss(self.G_B(real_a), real_a)
        loss_g = gan + CYCLE * cycle + CYCLE * IDENTITY * identity
        self.optimize(loss_g, "G")
        # discriminators: real is 1, a pooled fake is 0
        self.D_A.requires_grad_(True)
        self.D_B.requires_grad_(True)
        loss_d = 0.0
        for disc, real, fake in ((self.D_A, real_b, self.pool_b.query(fake_b)),
                                 (self.D_B, real_a, self.pool_a.query(fake_a))):
            pred_real, pred_fake = disc(real), disc(fake)
            loss_d = loss_d + 0.5 * (mse_loss(pred_real, torch.ones_like(pred_real))
                                     + mse_loss(pred_fake, torch.zeros_like(pred_fake)))
        self.optimize(loss_d, "D")
        return {"loss_G": loss_g.item(), "gan_G": gan.item(), "cycle": cycle.item(), "identity": identity.item(),
                "loss_D": loss_d.item()}

    def evaluate(self) -> dict[str, float]:
        """Cycle-consistency on held-out photos: mean |G_B(G_A(x)) - x| in [-1, 1] units."""
        import torch

        self.G_A.eval()
        self.G_B.eval()
        with torch.no_grad():
            x = self.test_crops.to(self.device)
            stylized = self.G_A(x)
            cycle = (self.G_B(stylized) - x).abs().mean().item()
            change = (stylized - x).abs().mean().item()
        return {"held_out_cycle_l1": cycle, "held_out_change_l1": change, **self.counts}

    def samples(self) -> dict:
        """Four held-out photos (top) and their translation by G_A (below), side by side."""
        import torch
        from PIL import Image

        x = self.test_crops[:4].to(self.device)
        self.G_A.eval()
        stylized = self.G_A(x)
        self.G_A.train()
        rows = [torch.cat(list(batch), dim=2) for batch in (x, stylized)]  # C x H x 4W each
        pixels = ((torch.cat(rows, dim=1).clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return {"held-out-translated": Image.fromarray(pixels, "RGB")}

    def export(self, out: Path) -> None:
        from safetensors.torch import save_file

        for name in ("G_A", "G_B"):
            state = {k: v.detach().cpu().contiguous() for k, v in self.modules[name].state_dict().items()}
            save_file(state, str(out / f"{name}.safetensors"))
        (out / "studio.json").write_text(json.dumps({"data": self.config.data, "size": self.size,
                                                     "n_blocks": self.n_blocks, **self.counts}, indent=1))
