"""A DCGAN (Radford et al. 2016) sized for small images: transposed convolutions up from
a latent vector, strided convolutions down to one logit. Spectral norm in the
discriminator keeps the game stable on small data (Miyato et al. 2018)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class GANConfig:
    image_size: int = 16  # a power of two, >= 8
    channels: int = 1
    z_dim: int = 64
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width

    def to_dict(self) -> dict:
        return {"architecture": "dcgan", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> GANConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def ups(self) -> int:  # 4x4 -> image_size
        n = (self.image_size // 4).bit_length() - 1
        assert 4 * 2**n == self.image_size, "image_size must be a power of two >= 8"
        return n


class DCGenerator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        width = config.ngf * 2 ** (config.ups - 1)
        self.project = nn.Sequential(nn.Linear(config.z_dim, width * 16, bias=False),
                                     nn.BatchNorm1d(width * 16), nn.ReLU(True))
        layers = []
        for _ in range(config.ups):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.Conv2d(width, config.channels, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z)  # (B, width*16)
        x = x.view(len(z), -1, 4, 4)  # (B, width, 4, 4)
        return self.body(x)  # (B, C, H, W) in [-1, 1]


class DCDiscriminator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers, width, channels = [], config.ndf, config.channels
        for _ in range(config.ups):
            layers += [sn(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            channels, width = width, width * 2
        self.body = nn.Sequential(*layers)
        self.head = sn(nn.Linear(channels * 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1)).squeeze(1)  # (B,) logits


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: stays on the shell where Gaussian latents live."""
    omega = torch.arccos(torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
