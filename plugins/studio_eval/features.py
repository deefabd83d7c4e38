"""The image feature network image metrics measure in (FID, KID, precision and recall).

Inception-v3, which the usual FID uses, is a 100 MB download; Studio runs offline. So it
ships its own small network, trained by `studio train eval.metrics` on what installs
here: scikit-learn's digits and the Noto Color Emoji glyphs, classified together (digits
0-9 and the emoji's CLDR groups). Its 128 features are what distances are taken in.
Numbers measured in them are comparable with each other, never with Inception-based FID.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from studio.errors import clip, echo, printable

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


MAX_CLASSES = 100_000  # the training head's width: 100,000 classes are 51 MB of weights
NETWORK = "studio-features-v1"
FIX = ("give 'default', or a directory that `studio train eval.metrics` wrote (config.json and "
       "model.safetensors)")


def network_problem(root: Path) -> str | None:
    """Why the feature network at `root` cannot be loaded, or None; read before anything
    is allocated: config.json and model.safetensors must be regular files (a FIFO would
    block, /dev/zero never end), the config small JSON with a sane class count, the
    weights free of code, complete, and each tensor of the shape the network has."""
    import stat

    from studio.weights import MAX_CONFIG_BYTES, read_config, safetensors_problem, safetensors_shapes, \
        weights_problem

    if not root.is_dir():
        return f"{root} is not a directory; {FIX}"
    for name in ("config.json", "model.safetensors"):
        try:
            mode = os.stat(root / name).st_mode
        except OSError as exc:
            return f"{root / name} cannot be read ({exc.strerror or exc}); {FIX}"
        if not stat.S_ISREG(mode):
            return f"{root / name} is not a regular file (a pipe, a device or a folder); {FIX}"
    try:
        settings = read_config(root / "config.json")
    except ValueError as exc:
        return f"{exc}; {FIX}"
    if settings is None:
        return f"{root / 'config.json'} cannot be read (at most {MAX_CONFIG_BYTES >> 20} MB of JSON); {FIX}"
    network = settings.get("network", NETWORK)
    if network != NETWORK:
        return f"{root / 'config.json'}: network {echo(network)}; Studio's feature network is {NETWORK!r}; {FIX}"
    classes = settings.get("classes")
    if type(classes) is not int or not 1 <= classes <= MAX_CLASSES:
        return (f"{root / 'config.json'}: classes {echo(classes)}; an integer from 1 to {MAX_CLASSES:,} (the "
                f"classes the network was trained on); {FIX}")
    problem = weights_problem(str(root), root) or safetensors_problem(root / "model.safetensors")
    if problem:
        return f"{problem}; {FIX}" if not problem.startswith("model ") else problem
    try:
        found = safetensors_shapes(root / "model.safetensors")
    except Exception as exc:  # a header safetensors_problem let through, read differently
        return f"{root / 'model.safetensors'}: its header cannot be read ({type(exc).__name__}); {FIX}"
    expected = expected_shapes(classes)
    if set(found) != set(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        what = (f"lacks {', '.join(missing[:3])}" if missing else "") + ("; " if missing and extra else "") + (
            f"holds {clip(', '.join(extra[:3]), 200)}, which the network has not" if extra else "")
        return f"{root / 'model.safetensors'}: {what}; not weights of {NETWORK}; {FIX}"
    for key, shape in expected.items():
        if list(found[key]) != shape:
            return (f"{root / 'model.safetensors'}: {key} has the shape {clip(str(found[key]), 100)}, the network "
                    f"with {classes:,} classes (config.json) needs {shape}; {FIX}")
    return None


def expected_shapes(classes: int) -> dict[str, list[int]]:
    """Each weight's shape in the network `build(classes)` makes, worked out without
    torch (validation stays cheap; a test holds it to build's)."""
    shapes: dict[str, list[int]] = {}
    index = 0
    for cin, cout in ((3, 32), (32, 64), (64, 128)):  # stage(cin, cout): conv, norm, relu, conv, norm, relu
        for conv_in in (cin, cout):
            shapes.update({f"body.{index}.weight": [cout, conv_in, 3, 3], f"body.{index}.bias": [cout],
                           f"body.{index + 1}.weight": [cout], f"body.{index + 1}.bias": [cout]})
            index += 3
        index += 1  # MaxPool2d, or AdaptiveAvgPool2d after the last stage
    index += 1  # Flatten
    shapes.update({f"body.{index}.weight": [FEATURES, 128], f"body.{index}.bias": [FEATURES],
                   "head.weight": [classes, FEATURES], "head.bias": [classes]})
    return shapes


def load_network(root: Path) -> Any:
    """The feature network saved in `root` (config.json + model.safetensors), in eval
    mode. A directory that is not one (see network_problem), or weights that do not
    load or hold NaN, is a UserError naming it."""
    import torch
    from safetensors.torch import load_file

    from studio import UserError
    from studio.weights import read_config, short

    root = Path(root)
    trusted = root == DEFAULT_WEIGHTS
    problem = None if trusted else network_problem(root)
    if problem:
        raise UserError(f"the feature network {_shown(root)}: {problem}")
    net = build(int(read_config(root / "config.json")["classes"]))  # type: ignore[index]
    try:
        weights = load_file(root / "model.safetensors")
        if not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
            raise ValueError("the weights hold NaN or infinite values")
        net.load_state_dict(weights)
    except Exception as exc:
        if trusted or isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            raise
        raise UserError(f"the feature network {_shown(root)}: model.safetensors could not be loaded ({short(exc)}); "
                        f"{FIX}") from None
    return net.eval()


def _shown(path: Path) -> str:
    return printable(clip(str(path), 300))


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
