import json
import os
import textwrap
from pathlib import Path

import pytest

from studio.testing import FakeImage, FakePlugin, make_host


@pytest.fixture(scope="session", autouse=True)
def _own_cache_folder(tmp_path_factory):
    """The remembered model hashes (studio.models.hashes, in $XDG_CACHE_HOME/studio) go to
    a folder of the test session's, never the user's ~/.cache; subprocesses inherit it."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture
def host():
    """The built-in utilities plus the fake generators from studio.testing (the model
    families stay out, so pinned messages do not change as families land)."""
    return make_host([("fake", FakePlugin())], env={"STUDIO_LOAD_PLUGINS": "utils,fake"})


@pytest.fixture
def write_yaml(tmp_path):
    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _reset_fake_calls():
    FakeImage.calls.clear()
    yield


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A Stable Diffusion layout at toy size: CLIP text encoder and tokenizer, a
    cross-attention UNet, a VAE."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    import torch

    root = tmp_path_factory.mktemp("sd")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=4, sample_size=16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(num_train_timesteps=100), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "tiny-sd")
    return root / "tiny-sd"


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that runs on one (a few seconds to start):
    2 CPUs, like the machines CI runs on. `address="local"` starts a new one even when
    another cluster runs on this machine."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.cluster_resources()
    ray.shutdown()


@pytest.fixture(scope="session")
def example_run(tmp_path_factory):
    """`example_run(path)`: the example pipeline at `path` run once on this machine for
    the whole session. Several tests read the same run (that it finishes, what it made,
    that Ray makes the same bytes): a run is a few seconds to a quarter of a minute, so
    each is made once. Tests only read it."""
    from studio import api
    from studio.testing import make_host

    made = {}

    def run(path):
        path = Path(path)
        if path not in made:
            made[path] = api.run(path, out=tmp_path_factory.mktemp(f"example-{path.stem}"), host=make_host())
        return made[path]

    return run


@pytest.fixture
def studio_main(monkeypatch, capsys):
    """`studio_main(*args, cwd=PATH)`: the `studio` command run in this process through
    studio.cli.main, as the console script runs it (errors become messages and exit
    codes), for tests about what a command computes rather than about its process: no
    interpreter start and no second import of torch and the metrics libraries. Returns a
    CompletedProcess with the exit code, stdout and stderr."""
    import subprocess
    import sys

    from studio.cli import main

    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["studio", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(["studio", *map(str, args)], code, captured.out, captured.err)

    return run
