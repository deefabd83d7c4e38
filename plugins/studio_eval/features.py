"""The image feature network image metrics measure in (FID, KID, precision and recall).

Inception-v3, which the usual FID uses, is a 100 MB download; Studio runs offline. So it
ships its own small network, trained by `studio train eval.metrics` on what installs
here: scikit-learn's digits and the Noto Color Emoji glyphs, classified together (digits
0-9 and the emoji's CLDR groups). Its 128 features are what distances are taken in.
Numbers measured in them are comparable with each other, never with Inception-based FID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "features"
SIZE = 32  # every image is measured at 32 x 32 RGB
FEATURES = 128
MAX_IMAGES = 20_000  # a set is read into memory at 32 x 32: 20,000 images are 240 MB in float32


def build(classes: int) -> Any:
    """The network: three convolution stages, global average pooling, a 128-wide
    embedding (the features) and a classification head used only while training."""
    import torch
    from torch import nn

    class FeatureNet(nn.Module):
        num_features = FEATURES  # torchmetrics reads this instead of probing with a dummy image

        def __init__(self, classes: int):
            super().__init__()

            def stage(cin, cout):
                return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(),
                        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU()]

            self.body = nn.Sequential(*stage(3, 32), nn.MaxPool2d(2), *stage(32, 64), nn.MaxPool2d(2),
                                      *stage(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(128, FEATURES), nn.ReLU())
            self.head = nn.Linear(FEATURES, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(N, 3, 32, 32) in [-1, 1] -> (N, 128) features."""
            return self.body(x)

        def classify(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    return FeatureNet(classes)


def load_network(root: Path) -> Any:
    """The feature network saved in `root` (config.json + model.safetensors), in eval mode."""
    import json

    from safetensors.torch import load_file

    settings = json.loads((root / "config.json").read_text())
    net = build(int(settings["classes"]))
    net.load_state_dict(load_file(root / "model.safetensors"))
    return net.eval()


def image_tensor(images: list) -> Any:
    """PIL images -> (N, 3, 32, 32) in [-1, 1]: transparency flattened onto white, the
    image squeezed to a square (no crop: a sheet loses nothing), bicubic resize."""
    import numpy as np
    import torch
    from PIL import Image

    arrays = []
    for image in images:
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
        image = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def features_of(net: Any, x: Any, batch: int = 256) -> Any:
    """(N, 3, 32, 32) -> (N, 128) float64 features, in batches."""
    import torch

    with torch.no_grad():
        return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)]).double()
