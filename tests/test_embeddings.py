"""Textual-inversion embeddings on image.diffusion (`embeddings: [{path|name, token}]`).

Tiny embeddings are built here in each layout the tools write (A1111's .pt and
.safetensors, kohya's SDXL pair, diffusers' learned_embeds) for the embedded default
model (its CLIP text encoder is 128 wide); the real families' widths are checked on
sparse single files (header only). Images are compared with diffusers' own
load_textual_inversion on the same pipeline, within 1 grey level.
"""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from studio.cli import cli
from studio.testing import run_yaml
from studio_image.diffusion import DEFAULT_WEIGHTS

WIDTH = 128  # the embedded model's text encoder
PROMPT = "a cat face, zqneg"


def vectors(count: int, width: int = WIDTH, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed)) * 0.4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One embedding in each layout, and the pipeline folder they sit beside."""
    root = tmp_path_factory.mktemp("emb")
    save_file({"emb_params": vectors(3)}, root / "ZqNeg.safetensors")  # A1111, 3 vectors, a capitalised name
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(vectors(2, seed=1))},
                "name": "zqstyle", "step": 100}, root / "zqstyle.pt")  # A1111's .pt as it saves it
    save_file({"<zq-toy>": vectors(1, seed=2)[0]}, root / "learned_embeds.safetensors")  # diffusers
    save_file({"clip_l": vectors(2, 768), "clip_g": vectors(2, 1280)}, root / "xlemb.safetensors")  # kohya SDXL
    save_file({"emb_params": vectors(1, 768)}, root / "sd15emb.safetensors")
    return root


@pytest.fixture(scope="module")
def theirs(files):
    """diffusers' own images: the default model in fp32, each file loaded by its path with
    its load_textual_inversion, each prompt sampled with torch.Generator('cpu').manual_seed(5)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_WEIGHTS, dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for name, token in (("ZqNeg.safetensors", "zqneg"), ("zqstyle.pt", "zqstyle"),
                        ("learned_embeds.safetensors", "<zq-toy>")):
        pipe.load_textual_inversion(str(files / name), token=token, local_files_only=True)
    prompts = {"a1111": "a cat face, zqneg", "both": "a cat face, zqstyle <zq-toy>"}
    return {key: np.asarray(pipe.numpy_to_pil(pipe(p, num_inference_steps=2, output_type="np",
                                                   generator=torch.Generator("cpu").manual_seed(5)).images)[0]
                            ).astype(np.int16) for key, p in prompts.items()}


def step(id_: str, prompt: str, embeddings: list | None = None, **more):
    return {"id": id_, "uses": "image.diffusion",
            "with": {"prompt": prompt, "steps": 2, "seed": 5, **({"embeddings": embeddings} if embeddings else {}),
                     **more}}


@pytest.fixture(scope="module")
def ours(files):
    """One run (one loaded model): no embedding, each layout, no embedding again, and one
    with compel's weighted prompts."""
    weighted = {"prompt_weighting": "a1111"}
    text = json.dumps({"name": "e", "device": "cpu", "steps": [
        step("before", PROMPT),
        step("a1111", "a cat face, ZqNeg", [{"path": "ZqNeg.safetensors"}]),
        step("both", "a cat face, zqstyle <zq-toy>", [{"path": "zqstyle.pt"}, {"path": "learned_embeds.safetensors"}]),
        step("after", PROMPT),
        step("weighted", "a cat face, (ZqNeg:1.0)", [{"path": "ZqNeg.safetensors"}], **weighted),
    ]})
    result = run_yaml(text, files)
    assert result.status == "done", result.failed
    return {a.path.parent.name: np.asarray(Image.open(a.path)).astype(np.int16) for a in result.artifacts()}, result


def test_each_layout_gives_diffusers_own_image_and_nothing_leaks(ours, theirs, files):
    images, result = ours
    assert np.array_equal(images["before"], images["after"])  # the tokens were unloaded
    assert np.abs(images["a1111"] - images["before"]).max() > 8  # the token changes the image
    for key in ("a1111", "both"):  # A1111 .safetensors; A1111 .pt and diffusers' learned_embeds together
        assert np.abs(images[key] - theirs[key]).max() <= 1, key
    text = (result.run_dir / "manifest.json").read_text()
    assert json.dumps(str((files / "ZqNeg.safetensors").resolve())) in text and '"token": "zqneg"' in text
    from studio.weights import file_sha256

    parameters = Image.open(result.run_dir / "a1111" / "image.png").info["parameters"]
    assert f"TI hashes: ZqNeg: {file_sha256(files / 'ZqNeg.safetensors')[:10]}" in parameters.replace('"', "")
    from studio.interop.a1111 import parse
    from studio.interop.importing import from_infotext

    imported = from_infotext(parse(parameters, "a.png"), "a.png", "t").pipeline["steps"][0]["with"]
    assert imported["embeddings"] == [{"name": "ZqNeg"}] and imported["prompt"] == "a cat face, ZqNeg"


def test_prompt_weighting_expands_a_multi_vector_token(ours, theirs):
    """With compel (prompt_weighting) the token still calls all its vectors (after other
    embeddings were loaded and unloaded): the image is diffusers' own with the embedding."""
    images, _ = ours
    assert np.abs(images["weighted"] - theirs["a1111"]).max() <= 1


def validate(root, with_: dict) -> tuple[int, str]:
    pipeline = root / "p.yaml"
    pipeline.write_text(json.dumps({"name": "d", "device": "cpu", "steps": [
        {"id": "img", "uses": "image.diffusion", "with": {"prompt": "x", "steps": 2, **with_}}]}))
    result = CliRunner().invoke(cli, ["validate", str(pipeline)])
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_bad_embeddings_are_refused_before_the_run(files, tmp_path):
    (tmp_path / "text.safetensors").write_bytes(b"not safetensors at all, just words")
    save_file({"a": torch.zeros(2, WIDTH), "b": torch.zeros(2, WIDTH)}, tmp_path / "twokeys.safetensors")
    save_file({"emb_params": torch.zeros(2, WIDTH, dtype=torch.int32)}, tmp_path / "ints.safetensors")
    save_file({"emb_params": torch.tensor([[float("nan")] * WIDTH])}, tmp_path / "nan.safetensors")
    torch.save({"string_to_param": {"*": torch.full((1, WIDTH), float("inf"))}}, tmp_path / "inf.pt")
    save_file({"emb_params": vectors(1)}, tmp_path / "cat.safetensors")  # 'cat' is a word the tokenizer has
    with open(tmp_path / "big.safetensors", "wb") as f:
        f.truncate(60 * 2**20)
    class Pwn:  # what a booby-trapped checkpoint holds: unpickling it runs a shell command
        def __reduce__(self):
            import os

            return (os.system, (f"echo pwned > {tmp_path / 'pwned.txt'}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": Pwn()}}))
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as archive:  # kilobytes, 60 MB unpacked
        archive.writestr("bomb/data.pkl", bytes(60 * 2**20))
    for name in ("ZqNeg.safetensors", "xlemb.safetensors", "sd15emb.safetensors"):
        (tmp_path / name).symlink_to(files / name)
    cases = [
        ({"path": "missing.safetensors"}, "embeddings[0] 'missing.safetensors' not found"),
        ({"path": "text.safetensors"}, "embeddings[0] 'text.safetensors': "),
        ({"path": "twokeys.safetensors"}, "is not a textual-inversion embedding Studio reads (it holds a, b)"),
        ({"path": "ints.safetensors"}, "holds I32 numbers"),
        ({"path": "big.safetensors"}, "is 60 MB; an embedding is kilobytes"),
        ({"path": "evil.pt"}, "is a pickle that would call posix.system"),
        ({"path": "nan.safetensors"}, "holds NaN or Inf values (tensor 'emb_params', F32)"),
        ({"path": "inf.pt"}, "holds NaN or Inf values (tensor 'string_to_param.*')"),
        ({"path": "bomb.pt"}, "unpacks to 60 MB; an embedding is kilobytes"),
        ({"path": "xlemb.safetensors"}, ("is an SDXL embedding (kohya SDXL layout, vectors 768 + 1280 wide); the "
                                         "model's text encoder is 128 wide")),
        ({"path": "sd15emb.safetensors"}, "is an SD 1.x embedding (A1111 layout, vectors 768 wide)"),
        ({"path": "cat.safetensors"}, "has token 'cat', which the model's tokenizer already has as a word"),
        ({"path": "ZqNeg.safetensors", "token": "two words"}, "token 'two words' cannot be one prompt word"),
        ({"path": "ZqNeg.safetensors", "token": "  "}, "token '' cannot be one prompt word"),
    ]
    for entry, message in cases:
        code, output = validate(tmp_path, {"embeddings": [{"path": "ZqNeg.safetensors"}, entry]})
        message = message.replace("embeddings[0]", "embeddings[1]")
        assert code == 2 and message in output, (entry, output)
        assert "steps[0].with.embeddings" in output and "p.yaml:" in output
    code, output = validate(tmp_path, {"embeddings": [{"path": "ZqNeg.safetensors"},
                                                      {"path": "sd15emb.safetensors", "token": "ZQNEG"}]})
    assert code == 2 and "token 'zqneg' is also the token of embeddings[0]" in output
    assert not (tmp_path / "pwned.txt").exists()
    code, output = validate(tmp_path, {"embeddings": [{"path": "ZqNeg.safetensors"}], "model": str(DEFAULT_WEIGHTS
                                                                                                   .parent / "digits")})
    assert code == 2 and "UNet2DModel checkpoint without a text encoder" in output


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    """Sparse SD 1.x and SDXL single files (header only, real sizes)."""
    from test_single_file import family_shapes, sparse_file

    root = tmp_path_factory.mktemp("families")
    for family in ("sd1", "sdxl"):
        sparse_file(root / f"{family}.safetensors", family_shapes(family))
    return root


def test_the_vectors_must_fit_the_familys_text_encoders(files, family_files):
    from studio_image.diffusion_embeddings import Embedding, checked_all

    def check(model: str, name: str, token: str | None = None):
        return checked_all([Embedding(path=name, token=token)], lambda p: files / p, str(family_files / model), None,
                           DEFAULT_WEIGHTS)

    (found,) = check("sdxl.safetensors", "xlemb.safetensors")
    assert found.token == "xlemb" and found.sha256
    (found,) = check("sd1.safetensors", "sd15emb.safetensors", "MyStyle")
    assert found.token == "mystyle"
    with pytest.raises(ValueError, match=r"is an SDXL embedding .* the model's text encoder is 768 wide \(SD 1.x\)"):
        check("sd1.safetensors", "xlemb.safetensors")
    with pytest.raises(ValueError, match=r"is an SD 1.x embedding .* text encoders are 768 \+ 1280 wide \(SDXL\)"):
        check("sdxl.safetensors", "sd15emb.safetensors")
    with pytest.raises(ValueError, match="'photo', which the model's tokenizer already has"):  # CLIP's own vocabulary
        check("sd1.safetensors", "sd15emb.safetensors", "photo")


def test_a_name_resolves_in_an_a1111_tree(files, tmp_path, monkeypatch):
    from studio.models.library import ModelLibrary
    from studio_image.diffusion_embeddings import Embedding

    monkeypatch.delenv("STUDIO_MODELS", raising=False)
    webui = tmp_path / "stable-diffusion-webui"
    (webui / "embeddings" / "negative").mkdir(parents=True)
    (webui / "embeddings" / "negative" / "ZqNeg.safetensors").symlink_to(files / "ZqNeg.safetensors")
    library = ModelLibrary.from_dirs([webui])
    entry = Embedding.model_validate({"name": "ZqNeg"}, context={"models": library})
    assert entry.path == str((files / "ZqNeg.safetensors").resolve())
    with pytest.raises(ValueError, match="Did you mean 'negative/ZqNeg'|Did you mean 'ZqNeg'"):
        Embedding.model_validate({"name": "ZqNag"}, context={"models": library})
    with pytest.raises(ValueError, match="not both"):
        Embedding.model_validate({"name": "ZqNeg", "path": "x.pt"}, context={"models": library})
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(json.dumps({"name": "d", "device": "cpu", "steps": [{"id": "img", "uses": "image.diffusion",
                                    "with": {"prompt": "x, zqneg", "steps": 2, "embeddings": [{"name": "ZqNeg"}]}}]}))
    result = CliRunner().invoke(cli, ["validate", str(pipeline), "--models", str(webui)])
    assert result.exit_code == 0, result.output
    for name in ("xlemb", "sd15emb"):
        (webui / "embeddings" / f"{name}.safetensors").symlink_to(files / f"{name}.safetensors")
    listed = CliRunner().invoke(cli, ["models", "list", "--kind", "embedding", "--json", "--models", str(webui)])
    assert {row["name"]: row["family"] for row in json.loads(listed.stdout)} == {
        "negative/ZqNeg": None, "xlemb": "SDXL", "sd15emb": "SD1"}


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    """An SDXL pipeline at toy size (text encoders 16 and 32 wide, the embedded model's
    tokenizer for both), saved as a diffusers folder, and a kohya SDXL embedding for it."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    root = tmp_path_factory.mktemp("sdxl")

    def config(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=2000, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                              num_attention_heads=2, max_position_embeddings=32, projection_dim=width, bos_token_id=0,
                              eos_token_id=1, pad_token_id=1)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16 + 32, attention_head_dim=2, norm_num_groups=4, addition_embed_type="text_time",
        addition_time_embed_dim=4, projection_class_embeddings_input_dim=32 + 6 * 4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16),
                        latent_channels=4, norm_num_groups=4, sample_size=16)
    tokenizer = DEFAULT_WEIGHTS / "tokenizer"
    StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(config(16)), text_encoder_2=CLIPTextModelWithProjection(config(32)),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer), tokenizer_2=CLIPTokenizer.from_pretrained(tokenizer),
        unet=unet, scheduler=EulerDiscreteScheduler(num_train_timesteps=100)).save_pretrained(root / "model")
    save_file({"clip_l": vectors(2, 16, seed=3) * 5, "clip_g": vectors(2, 32, seed=4) * 5}, root / "ZqXl.safetensors")
    return root


def test_an_sdxl_embedding_runs_on_an_sdxl_pipeline(tiny_sdxl):
    """clip_l into text_encoder and tokenizer, clip_g into text_encoder_2 and tokenizer_2,
    as diffusers documents: Studio's image is diffusers' own, and a later step without the
    embedding is the image without it."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    with_ = {"model": str(tiny_sdxl / "model"), "steps": 2, "seed": 3}
    text = json.dumps({"name": "x", "device": "cpu", "steps": [
        {"id": "plain", "uses": "image.diffusion", "with": {**with_, "prompt": "a cat, ZqXl"}},
        {"id": "loaded", "uses": "image.diffusion",
         "with": {**with_, "prompt": "a cat, ZqXl", "embeddings": [{"path": "ZqXl.safetensors"}]}},
        {"id": "after", "uses": "image.diffusion", "with": {**with_, "prompt": "a cat, ZqXl", "steps": 2}}]})
    result = run_yaml(text, tiny_sdxl)
    assert result.status == "done", result.failed
    images = {a.path.parent.name: np.asarray(Image.open(a.path)).astype(np.int16) for a in result.artifacts()}
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl / "model"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    state = load_file(tiny_sdxl / "ZqXl.safetensors")
    pipe.load_textual_inversion(state["clip_l"], token="zqxl", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token="zqxl", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    theirs = pipe("a cat, zqxl", num_inference_steps=2, output_type="np", guidance_scale=7.5,  # Studio's default
                  generator=torch.Generator("cpu").manual_seed(3)).images[0]
    theirs = np.asarray(pipe.numpy_to_pil(theirs[None])[0]).astype(np.int16)
    assert np.abs(images["loaded"] - images["plain"]).max() > 8
    assert np.array_equal(images["after"], images["plain"])  # unloaded from both encoders
    assert np.abs(images["loaded"] - theirs).max() <= 1
    save_file({"emb_params": vectors(1, 16)}, tiny_sdxl / "one.safetensors")
    code, output = validate(tiny_sdxl, {"model": str(tiny_sdxl / "model"), "embeddings": [{"path": "one.safetensors"}]})
    assert code == 2 and "the model's text encoders are 16 + 32 wide" in output, output
