"""style.cyclegan: checkpoints laid out as the reference implementation saves them (built
here with random weights), `module.` prefixes and legacy InstanceNorm buffers, odd sizes
and image modes, batches, refusing pickles that are not tensors, and a short training run."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from studio.errors import UserError
from studio.testing import run_yaml
from studio_style.cyclegan_network import ResnetGenerator, init_weights

# every key of the reference ResnetGenerator with 9 blocks (ngf 64): convolutions only
REFERENCE_KEYS_9 = (["model.1.weight", "model.1.bias", "model.4.weight", "model.4.bias", "model.7.weight",
                     "model.7.bias"]
                    + [f"model.{i}.conv_block.{j}.{p}" for i in range(10, 19) for j in (1, 5) for p in ("weight", "bias")]
                    + ["model.19.weight", "model.19.bias", "model.22.weight", "model.22.bias", "model.26.weight",
                       "model.26.bias"])


def reference_state_dict(blocks=9, ngf=64, seed=0):
    """What the reference repo's latest_net_G.pth holds, with random weights."""
    torch.manual_seed(seed)
    net = ResnetGenerator(3, 3, ngf, blocks)
    init_weights(net)
    return net.state_dict()


def test_the_state_dict_has_the_reference_keys_and_shapes():
    state = reference_state_dict()
    assert list(state) == REFERENCE_KEYS_9
    assert state["model.1.weight"].shape == (64, 3, 7, 7)
    assert state["model.4.weight"].shape == (128, 64, 3, 3)
    assert state["model.10.conv_block.1.weight"].shape == (256, 256, 3, 3)
    assert state["model.19.weight"].shape == (256, 128, 3, 3)  # ConvTranspose2d: (in, out, k, k)
    assert state["model.26.weight"].shape == (3, 64, 7, 7)
    assert sum(v.numel() for v in state.values()) == 11_378_179  # the reference's printed count
    assert list(reference_state_dict(blocks=6, ngf=8))[-1] == "model.23.bias"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A .pth as the reference saves it, one saved from DataParallel with legacy
    InstanceNorm buffers, and a 6-block pair directory (reference file names)."""
    root = tmp_path_factory.mktemp("cyclegan")
    state = reference_state_dict(blocks=6, ngf=8)
    torch.save(state, root / "latest_net_G.pth")
    legacy = {f"module.{k}": v for k, v in state.items()}
    for norm in ("model.2", "model.5", "model.10.conv_block.2"):
        legacy[f"module.{norm}.running_mean"] = torch.zeros(8)
        legacy[f"module.{norm}.running_var"] = torch.ones(8)
        legacy[f"module.{norm}.num_batches_tracked"] = torch.tensor(0)
    torch.save(legacy, root / "legacy.pth")
    (root / "pair").mkdir()
    torch.save(state, root / "pair" / "latest_net_G_A.pth")
    torch.save(reference_state_dict(blocks=6, ngf=8, seed=1), root / "pair" / "latest_net_G_B.pth")
    return root, state


def reference_forward(state, image):
    """What the reference test script does: Normalize to [-1, 1], G, back to uint8."""
    net = ResnetGenerator(3, 3, state["model.1.weight"].shape[0], 6)
    net.load_state_dict(state)
    net.eval()
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)[0]
    return ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def run(tmp_path, steps):
    return run_yaml(json.dumps({"name": "s", "device": "cpu", "steps": steps}), tmp_path)


def styled(result, step_id="s"):
    assert result.status == "done", [i.error for i in result.failed]
    return [Image.open(a.path) for a in result.artifacts(step_id)]


def photo(path, size=(40, 32), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    image = Image.fromarray(array, "RGBA")
    (image if mode == "RGBA" else image.convert("RGB")).convert(mode).save(path)
    return path


def test_a_reference_pth_gives_the_reference_output(checkpoints, tmp_path):
    root, state = checkpoints
    photo(tmp_path / "in.png")
    for model in ("latest_net_G.pth", "legacy.pth", "pair"):
        out, = styled(run(tmp_path / model, [{"id": "s", "uses": "style.cyclegan",
                                               "with": {"model": str(root / model), "image": str(tmp_path / "in.png")}}]))
        expected = reference_forward(state, Image.open(tmp_path / "in.png"))
        assert np.abs(np.asarray(out).astype(int) - expected.astype(int)).max() <= 1, model


def test_direction_picks_the_generator_of_a_pair(checkpoints, tmp_path):
    root, _ = checkpoints
    photo(tmp_path / "in.png")
    result = run(tmp_path, [{"id": "s", "uses": "style.cyclegan",
                             "with": {"model": str(root / "pair"), "image": "in.png"},
                             "sweep": {"direction": ["AtoB", "BtoA"]}}])
    forward, back = styled(result)
    assert not np.array_equal(np.asarray(forward), np.asarray(back))
    from studio.errors import PipelineError

    with pytest.raises(PipelineError) as refused:  # validate looks at which files the model has
        run(tmp_path / "single", [{"id": "s", "uses": "style.cyclegan",
                                   "with": {"model": str(root / "latest_net_G.pth"),
                                            "image": str(tmp_path / "in.png"), "direction": "BtoA"}}])
    assert "steps[0].with (step 's'): " in str(refused.value)
    assert "only goes one way" in str(refused.value)


@pytest.mark.parametrize("size,mode", [((37, 23), "RGB"), ((5, 3), "RGB"), ((30, 30), "RGBA"), ((33, 17), "L"),
                                       ((24, 24), "P"), ((600, 90), "RGB")])
def test_any_size_and_mode_comes_back_the_same_size(checkpoints, tmp_path, size, mode):
    root, _ = checkpoints
    photo(tmp_path / "in.png", size=size, mode=mode)
    out, = styled(run(tmp_path, [{"id": "s", "uses": "style.cyclegan",
                                  "with": {"model": str(root / "latest_net_G.pth"), "image": "in.png",
                                           "max_size": 256}}]))
    assert out.size == size
    assert out.mode == ("RGBA" if mode == "RGBA" else "RGB")
    if mode == "RGBA":
        assert np.array_equal(np.asarray(out)[..., 3], np.asarray(Image.open(tmp_path / "in.png"))[..., 3])


def test_a_batch_gives_what_each_image_gives_alone(checkpoints, tmp_path):
    from studio.testing import make_context
    from studio_style.cyclegan import StyleCycleGAN

    root, _ = checkpoints
    gen = StyleCycleGAN()
    paths = [photo(tmp_path / f"{i}.png", size=(32, 24) if i < 3 else (20, 20), seed=i) for i in range(4)]
    from studio.generator import Artifact

    params = [StyleCycleGAN.Params(model=str(root / "latest_net_G.pth"), seed=i,
                                   image=Artifact(path=p, media_type="image/png", sha256="", size=0))
              for i, p in enumerate(paths)]
    batched = gen.generate_batch(params, [make_context(seed=i) for i in range(4)])
    for p, b in zip(params, batched):
        alone = gen.generate(p, make_context())
        assert np.abs(np.asarray(alone["image"]).astype(int) - np.asarray(b["image"]).astype(int)).max() <= 1


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch exploited",))


def test_a_pth_that_is_not_tensors_is_refused_without_running_it(tmp_path, monkeypatch):
    from studio_style.cyclegan import load_generator

    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model.1.weight": Exploit()}, f)
    with pytest.raises(UserError, match="not a plain state_dict of tensors, refused without running it"):
        load_generator(str(tmp_path / "evil.pth"), "AtoB")
    assert not (tmp_path / "exploited").exists()
    torch.save({"epoch": 3, "note": "hello"}, tmp_path / "notes.pth")
    with pytest.raises(UserError, match="expected a state_dict"):
        load_generator(str(tmp_path / "notes.pth"), "AtoB")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a CycleGAN ResnetGenerator checkpoint"):
        load_generator(str(tmp_path / "other.pth"), "AtoB")


def test_save_and_load_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import save_file

    from studio_style.cyclegan import load_generator

    state = reference_state_dict(blocks=6, ngf=8)
    (tmp_path / "m").mkdir()
    save_file(state, str(tmp_path / "m" / "G_A.safetensors"))
    loaded = load_generator(str(tmp_path / "m"), "AtoB")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert (loaded.ngf, loaded.n_blocks) == (8, 6)


def test_training_lowers_the_losses_and_exports_a_loadable_pair(tmp_path):
    from studio.testing import make_host
    from studio.training import TrainConfig, train

    rng = np.random.default_rng(0)
    for domain, colour in (("A", (200, 40, 40)), ("B", (40, 40, 200))):
        (tmp_path / "data" / domain).mkdir(parents=True)
        for i in range(6):
            array = np.clip(np.array(colour) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(array).save(tmp_path / "data" / domain / f"{i}.png")
    options = {"size": "32", "ngf": "4", "ndf": "4", "blocks": "2"}
    config = TrainConfig(data=str(tmp_path / "data"), out=tmp_path / "cg", steps=60, batch_size=2, lr=2e-3,
                         log_every=10, checkpoint_every=100, options=options)
    result = train(make_host().registry.trainer("style.cyclegan"), config, show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "cg" / "training" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["cycle"] < log[0]["cycle"] * 0.7
    assert log[-1]["loss_G"] < log[0]["loss_G"]
    assert result.metrics["held_out_cycle_l1"] < 0.5
    sample = Image.open(tmp_path / "cg" / "training" / "samples" / "step-0000060" / "held-out-translated.png")
    assert sample.mode == "RGB" and sample.size[1] == 2 * 32 and sample.size[0] % 32 == 0  # photos over translations
    photo(tmp_path / "in.png", size=(20, 20))
    result = run(tmp_path / "run", [{"id": "s", "uses": "style.cyclegan",
                                     "with": {"model": str(tmp_path / "cg"), "image": str(tmp_path / "in.png")},
                                     "sweep": {"direction": ["AtoB", "BtoA"]}}])
    assert len(styled(result)) == 2
