"""The CycleGAN networks, laid out exactly as the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py) lays them out, so its
published generators (`latest_net_G.pth`: horse2zebra, style_monet, ...) load unchanged.

ResnetGenerator: reflection pad + 7x7 conv, two stride-2 convs, n residual blocks,
two transposed convs, reflection pad + 7x7 conv, tanh; instance norm without affine
parameters or running statistics, so the state_dict holds convolutions only:
`model.1.weight` ... `model.26.bias` for 9 blocks (`model.23.bias` for 6).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

LEGACY_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class ResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=True), nn.InstanceNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks
        norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, bias=True),
                                   norm(ngf), nn.ReLU(True)]
        for i in range(2):  # downsample
            mult = 2 ** i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                       norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):  # upsample
            mult = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                          output_padding=1, bias=True),
                       norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """The reference 70x70 PatchGAN (n_layers 3): a grid of real/fake scores."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=True),
                       norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's 'normal' initialisation: N(0, 0.02) weights, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def clean_state_dict(state: dict) -> dict[str, torch.Tensor]:
    """A checkpoint's state_dict as ResnetGenerator takes it: `module.` prefixes from
    DataParallel stripped, InstanceNorm running stats that old PyTorch saved dropped
    (the reference repository's issues #262, #296 and #461)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.rsplit(".", 1)[-1] in LEGACY_BUFFERS:
            continue
        out[key] = value
    return out


def generator_from_state_dict(state: dict[str, torch.Tensor]) -> ResnetGenerator:
    """Build the ResnetGenerator a (clean) state_dict describes: channels and width from
    the first convolution, block count from the `model.N.conv_block` keys."""
    first = state.get("model.1.weight")
    if first is None or first.ndim != 4:
        raise ValueError("no 'model.1.weight' convolution: not a CycleGAN ResnetGenerator state_dict")
    blocks = {int(k.split(".")[1]) for k in state if ".conv_block." in k}
    if not blocks:
        raise ValueError("no residual blocks ('model.N.conv_block...'): not a ResnetGenerator state_dict")
    last = f"model.{max(blocks) + 8}.weight"  # after 2 upsampling stages of 3 layers and a pad
    if last not in state:
        raise ValueError(f"expected the output convolution {last!r} after {len(blocks)} residual blocks")
    net = ResnetGenerator(input_nc=first.shape[1], output_nc=state[last].shape[0], ngf=first.shape[0],
                          n_blocks=len(blocks))
    net.load_state_dict(state, strict=True)
    return net
