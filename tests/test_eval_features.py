"""`studio train eval.metrics`: the image feature network trains on joined labelled
sources, exports what `studio eval --features` loads, and refuses data without classes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.errors import UserError
from studio.testing import make_host
from studio.training import TrainConfig, train


def shapes(root, names=("circle", "square"), n=12):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(n):
            im = Image.new("RGB", (24, 24), "white")
            r = int(rng.integers(4, 9))
            x, y = (int(v) for v in rng.integers(r, 24 - r, size=2))
            draw = ImageDraw.Draw(im).ellipse if name == "circle" else ImageDraw.Draw(im).rectangle
            draw((x - r, y - r, x + r, y + r), fill=(200, 30, 30))
            im.save(root / name / f"{i}.png")
    return root


def test_it_trains_on_joined_sources_and_exports_a_network_the_metrics_load(tmp_path):
    from studio_eval.features import features_of, image_tensor, load_network

    data = f"{shapes(tmp_path / 'shapes')}+sklearn:digits"
    trainer = make_host().registry.trainer("eval.metrics")
    result = train(trainer, TrainConfig(data=data, out=tmp_path / "net", steps=3, batch_size=8, device="cpu",
                                        checkpoint_every=100), show_progress=False)
    assert result.metrics["classes"] == 12  # 2 shapes + 10 digits, each source keeping its own classes
    assert set(result.metrics) >= {"held_out_accuracy", "held_out_accuracy[sklearn:digits]"}
    net = load_network(tmp_path / "net")
    images = [Image.open(p) for p in sorted((tmp_path / "shapes" / "circle").glob("*.png"))[:5]]
    assert tuple(features_of(net, image_tensor(images)).shape) == (5, 128)


@pytest.mark.parametrize("data, words", [
    ("+", "name at least one image source"),
    ("{one}", r"1 class\(es\); the feature network learns by telling classes apart"),
])
def test_data_it_cannot_learn_from_is_refused(tmp_path, data, words):
    shapes(tmp_path / "one", names=("circle",))
    trainer = make_host().registry.trainer("eval.metrics")
    with pytest.raises(UserError, match=words):
        train(trainer, TrainConfig(data=data.format(one=tmp_path / "one"), out=tmp_path / "net", steps=1,
                                   device="cpu"), show_progress=False)
