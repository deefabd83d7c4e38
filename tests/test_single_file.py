"""Single-file Stable Diffusion checkpoints (`model: x.safetensors`): recognised from the
header, loaded offline through diffusers' single-file loading.

A tiny pipeline with random weights is written in the key layout model sites ship (the
original LDM names: model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.text_model.*), and must give the image diffusers' own
from_single_file gives handed the same config. Real-size headers are sparse files: the
header, then os.truncate to the size it declares, so no gigabytes are written.
"""

import json
import os
import re
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from studio.testing import run_yaml

# -- the single-file layout, from a diffusers pipeline --------------------------------

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def ldm_unet_key(key: str, layers: int, up_attention: set[int]) -> str:
    """A diffusers UNet2DConditionModel key as the original Stable Diffusion names it."""
    for ours, theirs in UNET_TOP.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours):]
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", key)
    if m:
        side, i, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if side == "down":
            index = (i + 1) * (layers + 1) if part == "downsamplers" else 1 + i * (layers + 1) + j
            where = {"resnets": "0", "attentions": "1", "downsamplers": "0"}[part]
            rest = "op." + rest.removeprefix("conv.") if part == "downsamplers" else rest
            block = f"input_blocks.{index}.{where}"
        else:
            index = i * (layers + 1) + (layers if part == "upsamplers" else j)
            where = {"resnets": "0", "attentions": "1"}.get(part) or ("2" if i in up_attention else "1")
            block = f"output_blocks.{index}.{where}"
        return f"{block}.{resnet_key(rest) if part == 'resnets' else rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    assert m, key
    index = 1 if m.group(1) == "attentions" else 2 * int(m.group(2))
    return f"middle_block.{index}.{resnet_key(m.group(3)) if m.group(1) == 'resnets' else m.group(3)}"


def resnet_key(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{RESNET.get(head, head)}.{tail}"


def ldm_vae_key(key: str, blocks: int) -> str:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder.down.\1.block.\2", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)",
                 lambda m: f"decoder.up.{blocks - 1 - int(m.group(1))}." + (
                     f"block.{m.group(3)}" if m.group(3) is not None else "upsample"), key)
    key = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m.group(1)) + 1}", key)
    for ours, theirs in (("mid_block.attentions.0.", "mid.attn_1."), ("group_norm.", "norm."), ("to_q.", "q."),
                         ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")):
        key = key.replace(ours, theirs)
    return key


def single_file_state(pipe, vae: bool = True) -> dict:
    """The pipeline's weights under the original LDM names, as model sites ship SD 1.x.
    transformers 5 saves CLIP without its `text_model.` prefix; the files on model sites
    were written from transformers 4 and have it."""
    unet, layers = pipe.unet, pipe.unet.config.layers_per_block
    up_attention = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    state = {"model.diffusion_model." + ldm_unet_key(k, layers, up_attention): v for k, v in unet.state_dict().items()}
    if vae:
        blocks = len(pipe.vae.config.down_block_types)
        for k, v in pipe.vae.state_dict().items():
            name = ldm_vae_key(k, blocks)
            if re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight", name):
                v = v.reshape(*v.shape, 1, 1)  # the original VAE's attention is 1x1 convolutions
            state["first_stage_model." + name] = v
    for k, v in pipe.text_encoder.state_dict().items():
        state["cond_stage_model.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k] = v
    return {k: v.contiguous() for k, v in state.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SD 1.x-style pipeline: its diffusers folder, a configs-only copy (what
    `config:` takes), and single files in fp32 and fp16, and one without a VAE."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from studio_diffusers.clip_vocab import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, vocab_size=49408, max_position_embeddings=77))
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
                                   scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                           beta_end=0.012, clip_sample=False, steps_offset=1),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    root = tmp_path_factory.mktemp("single")
    pipe.save_pretrained(root / "folder")
    configs = root / "configs"
    shutil.copytree(root / "folder", configs, ignore=shutil.ignore_patterns("*.safetensors", "tokenizer"))
    state = single_file_state(pipe)
    save_file(state, root / "tiny.safetensors")
    save_file({k: v.half() for k, v in state.items()}, root / "tiny-fp16.safetensors")
    save_file(single_file_state(pipe, vae=False), root / "tiny-novae.safetensors")
    torch.save({"state_dict": state}, root / "tiny.ckpt")  # plain tensors: torch.load(weights_only=True) reads it
    return root


def run(tmp_path, with_):
    step = {"id": "img", "uses": "image.diffusion", "with": with_}
    return run_yaml(json.dumps({"name": "d", "device": "cpu", "steps": [step]}), tmp_path)


def diffusers_image(file, configs, seed, steps, prompt):
    from diffusers import StableDiffusionPipeline

    from studio_diffusers.clip_vocab import clip_tokenizer

    pipe = StableDiffusionPipeline.from_single_file(str(file), config=str(configs), local_files_only=True,
                                                    torch_dtype=torch.float32, tokenizer=clip_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    image = pipe(prompt, num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(seed),
                 output_type="np").images[0]
    return (image * 255).round().astype(np.int16)


@pytest.mark.parametrize("name", ["tiny.safetensors", "tiny-fp16.safetensors", "tiny.ckpt"])
def test_a_single_file_gives_diffusers_own_image(tiny, tmp_path, name):
    with_ = {"model": str(tiny / name), "config": str(tiny / "configs"), "prompt": "a red heart", "steps": 3,
             "seed": 7}
    result = run(tmp_path, with_)
    assert result.status == "done", result.failed
    (artifact,) = result.artifacts()
    ours = np.asarray(Image.open(artifact.path)).astype(np.int16)
    theirs = diffusers_image(tiny / name, tiny / "configs", 7, 3, "a red heart")
    assert ours.shape == theirs.shape == (16, 16, 3)
    assert np.abs(ours - theirs).max() <= 1


def test_image_to_image_and_inpainting_run_on_a_single_file(tiny, tmp_path):
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "init.png")
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (4, 4, 12, 12))
    mask.save(tmp_path / "mask.png")
    base = {"model": str(tiny / "tiny.safetensors"), "config": str(tiny / "configs"), "prompt": "x", "steps": 4,
            "image": str(tmp_path / "init.png")}
    for n, extra in enumerate(({"strength": 0.6}, {"mask": str(tmp_path / "mask.png")})):
        result = run(tmp_path / f"run{n}", {**base, **extra})
        assert result.status == "done", result.failed
        made = np.asarray(Image.open(result.artifacts()[0].path))
        assert made.shape == (16, 16, 3)
    assert np.array_equal(made[:4], np.asarray(Image.open(tmp_path / "init.png"))[:4])  # kept outside the mask


def test_the_single_file_holds_every_weight(tiny):
    """The layout written here is complete: diffusers reads back every weight of the
    folder it came from (so the image comparison above compares real weights)."""
    from diffusers import StableDiffusionPipeline

    from studio_diffusers.clip_vocab import clip_tokenizer

    loaded = StableDiffusionPipeline.from_single_file(str(tiny / "tiny.safetensors"), config=str(tiny / "configs"),
                                                      local_files_only=True, tokenizer=clip_tokenizer())
    original = StableDiffusionPipeline.from_pretrained(tiny / "folder", local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(original, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name


def refused(tmp_path, with_) -> str:
    from studio.errors import PipelineError

    with pytest.raises(PipelineError) as info:
        run(tmp_path, with_)
    return str(info.value)


def test_a_file_without_a_vae_needs_vae(tiny, tmp_path):
    """A file without a baked-in VAE is refused until `vae:` gives one: a diffusers VAE
    folder, or one .safetensors in either layout; each gives the baked-in VAE's image."""
    from safetensors.torch import load_file, save_file

    novae = str(tiny / "tiny-novae.safetensors")
    message = refused(tmp_path, {"model": novae, "config": str(tiny / "configs")})
    assert "has no VAE baked in" in message and "give vae" in message
    baked = load_file(tiny / "tiny.safetensors")
    save_file({k.removeprefix("first_stage_model."): v for k, v in baked.items() if k.startswith("first_stage_model.")},
              tmp_path / "vae-single.safetensors")
    with_ = {"config": str(tiny / "configs"), "steps": 2, "prompt": "x", "seed": 3}
    images = []
    for model, vae in ((str(tiny / "tiny.safetensors"), None), (novae, tiny / "folder" / "vae"),
                       (novae, tiny / "folder" / "vae" / "diffusion_pytorch_model.safetensors"),
                       (novae, tmp_path / "vae-single.safetensors")):
        result = run(tmp_path / f"run{len(images)}", {**with_, "model": model, **({"vae": str(vae)} if vae else {})})
        assert result.status == "done", result.failed
        images.append(np.asarray(Image.open(result.artifacts()[0].path)))
    assert all(np.array_equal(images[0], image) for image in images[1:])


# -- recognition on real-size headers (sparse files) ---------------------------------


def sparse_file(path, shapes: dict[str, tuple], dtype: str = "F16") -> None:
    """A safetensors file whose header declares these tensors, its data a hole."""
    size = {"F16": 2, "BF16": 2, "F32": 4}[dtype]
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
    os.truncate(path, 8 + len(text) + offset)


def family_shapes(family: str) -> dict[str, tuple]:
    """The tensors of a real-size checkpoint of `family`: its UNet, VAE and text encoders
    built on the meta device from Studio's shipped configs, under single-file names."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from studio_image.diffusion_single_file import CONFIGS

    folder = CONFIGS / family
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    layers = unet.config.layers_per_block
    up_attention = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    shapes = {}
    for k, v in unet.state_dict().items():
        if k.startswith("add_embedding.linear_"):  # SDXL's size conditioning
            name = "label_emb.0." + ("0" if k[21] == "1" else "2") + k[22:]
        else:
            name = ldm_unet_key(k, layers, up_attention)
        shapes["model.diffusion_model." + name] = tuple(v.shape)
    shapes.update({"first_stage_model." + ldm_vae_key(k, 4): tuple(v.shape) for k, v in vae.state_dict().items()})
    if family == "sdxl-refiner":
        return {**shapes, **open_clip_shapes("conditioner.embedders.0.model.", 1280, 32)}
    if family.startswith("sdxl"):
        shapes.update(open_clip_shapes("conditioner.embedders.1.model.", 1280, 32))
        return {**shapes, **clip_shapes("conditioner.embedders.0.transformer.text_model.", folder / "text_encoder")}
    if family.startswith("sd2"):
        return {**shapes, **open_clip_shapes("cond_stage_model.model.", 1024, 24)}
    return {**shapes, **clip_shapes("cond_stage_model.transformer.text_model.", folder / "text_encoder")}


def clip_shapes(prefix: str, config) -> dict[str, tuple]:
    """OpenAI CLIP's text encoder under transformers' names (SD 1.x, SDXL's first)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    text = json.loads((config / "config.json").read_text())
    with torch.device("meta"):
        encoder = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in text.items() if k != "architectures"}))
    return {prefix + k: tuple(v.shape) for k, v in encoder.state_dict().items()}


def open_clip_shapes(prefix: str, width: int, layers: int) -> dict[str, tuple]:
    """OpenCLIP's text encoder as SD 2.x and SDXL files hold it (ViT-H: 1024 wide, 24
    layers; ViT-bigG: 1280, 32)."""
    shapes = {prefix + "token_embedding.weight": (49408, width), prefix + "positional_embedding": (77, width),
              prefix + "ln_final.weight": (width,), prefix + "ln_final.bias": (width,),
              prefix + "text_projection": (width, width)}
    for n in range(layers):
        block = f"{prefix}transformer.resblocks.{n}."
        shapes.update({block + "ln_1.weight": (width,), block + "ln_1.bias": (width,), block + "ln_2.weight": (width,),
                       block + "ln_2.bias": (width,), block + "attn.in_proj_weight": (3 * width, width),
                       block + "attn.in_proj_bias": (3 * width,), block + "attn.out_proj.weight": (width, width),
                       block + "attn.out_proj.bias": (width,), block + "mlp.c_fc.weight": (4 * width, width),
                       block + "mlp.c_fc.bias": (4 * width,), block + "mlp.c_proj.weight": (width, 4 * width),
                       block + "mlp.c_proj.bias": (width,)})
    return shapes


@pytest.mark.parametrize("family,title,dtype", [
    ("sd1", "Stable Diffusion 1.x", "F16"), ("sd1-inpaint", "Stable Diffusion 1.x inpainting", "F32"),
    ("sd2", "Stable Diffusion 2.x", "BF16"), ("sd2-inpaint", "Stable Diffusion 2.x inpainting", "F16"),
    ("sdxl", "Stable Diffusion XL base", "F16"), ("sdxl-inpaint", "Stable Diffusion XL inpainting", "F16"),
    ("sdxl-refiner", "Stable Diffusion XL refiner", "F16")])
def test_each_family_is_recognised_from_its_header(tmp_path, family, title, dtype):
    from studio_image.diffusion_single_file import recognise

    path = tmp_path / f"{family}.safetensors"
    sparse_file(path, family_shapes(family), dtype)
    found = recognise(path)
    assert found.family is not None and found.family.name == family and found.found == title
    assert found.has_vae and found.has_text_encoder
    assert found.dtype == {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}[dtype]
    assert found.prediction() == ("v_prediction" if family == "sd2" else "epsilon")
    assert found.prediction("epsilon") == "epsilon"


def validate(tmp_path, with_) -> tuple[int, str]:
    """`studio validate` on an image.diffusion step: its exit code and what it printed."""
    from click.testing import CliRunner

    from studio.cli import cli

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(json.dumps({"name": "d", "device": "cpu",
                                    "steps": [{"id": "img", "uses": "image.diffusion", "with": with_}]}))
    result = CliRunner().invoke(cli, ["validate", str(pipeline)])
    return result.exit_code, result.output


def test_bad_files_are_refused_before_the_run(tmp_path):
    not_safetensors = tmp_path / "notes.safetensors"
    not_safetensors.write_bytes(b"hello, this is text and not a checkpoint at all")
    code, out = validate(tmp_path, {"model": str(not_safetensors)})
    assert code == 2 and "p.yaml" in out and "not a complete safetensors file" in out and "Traceback" not in out

    truncated = tmp_path / "sd1.safetensors"
    sparse_file(truncated, family_shapes("sd1"))
    os.truncate(truncated, truncated.stat().st_size - 1000)
    code, out = validate(tmp_path, {"model": str(truncated)})
    assert code == 2 and "truncated" in out

    lying = tmp_path / "lying.safetensors"
    header = json.dumps({"model.diffusion_model.input_blocks.0.0.weight":
                         {"dtype": "F16", "shape": [320, 4, 3, 3], "data_offsets": [0, 16]}}).encode()
    lying.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    code, out = validate(tmp_path, {"model": str(lying)})
    assert code == 2 and "does not match its data" in out

    lora = tmp_path / "lora.safetensors"
    sparse_file(lora, {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)})
    code, out = validate(tmp_path, {"model": str(lora)})
    assert code == 2 and "not a single-file checkpoint Studio recognises" in out and "LoRA weights" in out
    assert "config:" in out

    model = tmp_path / "sd1-whole.safetensors"
    sparse_file(model, family_shapes("sd1"))
    code, out = validate(tmp_path, {"model": str(model), "vae": str(lora)})
    assert code == 2 and "steps[0].with.vae" in out and "is not a VAE file" in out


def test_a_config_folder_that_would_run_code_is_refused(tiny, tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(tiny / "configs", configs)
    index = json.loads((configs / "model_index.json").read_text())
    (configs / "model_index.json").write_text(json.dumps({**index, "unet": ["my_unet", "MyUNet"]}))
    code, out = validate(tmp_path, {"model": str(tiny / "tiny.safetensors"), "config": str(configs)})
    assert code == 2 and "steps[0].with.model" in out and "config " in out and "code shipped with the model" in out


def test_a_refiner_is_not_a_base(tmp_path):
    refiner = tmp_path / "refiner.safetensors"
    sparse_file(refiner, family_shapes("sdxl-refiner"))
    code, out = validate(tmp_path, {"model": str(refiner), "prompt": "a cat"})
    assert code == 2 and "refiner" in out and "cannot start one from noise" in out


def test_a_ckpt_that_would_run_code_is_refused(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "model.ckpt"
    bad.write_bytes(pickle.dumps({"state_dict": Boom()}))
    code, out = validate(tmp_path, {"model": str(bad)})
    assert code == 2 and "pickled code" in out and "system" in out


def test_clip_tokenizer_matches_open_clip():
    from open_clip.tokenizer import SimpleTokenizer

    from studio_diffusers.clip_vocab import clip_tokenizer

    ours, reference = clip_tokenizer(), SimpleTokenizer()
    for text in ["a photo of an astronaut riding a horse on mars", "Naïve café, (masterpiece:1.2) 8k <lora:x>"]:
        assert ours(text).input_ids == [reference.sot_token_id, *reference.encode(text), reference.eot_token_id]
    assert len(ours) == 49408 and clip_tokenizer("!").pad_token_id == 0


def test_models_list_shows_the_family_image_diffusion_recognises(tmp_path, monkeypatch):
    """The image plugin answers identify_model: a checkpoint's family from its UNet, a
    LoRA's from kohya's metadata, nothing for a file it does not know."""
    import json

    from click.testing import CliRunner

    from studio.cli import cli

    from studio.models import hashes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # the sparse checkpoints are gigabytes of zeros: their hashes are not what this test is about
    monkeypatch.setattr(hashes, "_hash_file", lambda path: "0" * 64)
    root = tmp_path / "webui" / "models"
    (root / "Stable-diffusion").mkdir(parents=True)
    (root / "Lora").mkdir()
    sparse_file(root / "Stable-diffusion" / "base_xl.safetensors", family_shapes("sdxl"))
    sparse_file(root / "Stable-diffusion" / "v15.safetensors", family_shapes("sd1"))
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"lora_unet_x.lora_down.weight": np.zeros((4, 8), np.float32)}, str(root / "Lora" / "tweak.safetensors"),
              metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    save_file({"x": np.zeros(2, np.float32)}, str(root / "Lora" / "odd.safetensors"))
    listed = CliRunner().invoke(cli, ["models", "list", "--json", "--models", str(tmp_path / "webui")])
    assert listed.exit_code == 0, listed.output
    families = {row["name"]: row["family"] for row in json.loads(listed.stdout)}
    assert families == {"base_xl": "SDXL", "v15": "SD1", "tweak": "SDXL", "odd": None}


def test_a_tokenizer_studio_builds_has_the_text_encoders_window(tmp_path):
    """With `config:` but no tokenizer folder, Studio's CLIP tokenizer pads and cuts to the
    encoder's max_position_embeddings (77 in every real family), not always 77."""
    from studio_image.diffusion_single_file import tokenizers

    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / "config.json").write_text(json.dumps({"max_position_embeddings": 32,
                                                                      "hidden_act": "quick_gelu"}))
    made = tokenizers(tmp_path, {"tokenizer": ["transformers", "CLIPTokenizer"]})
    assert made["tokenizer"].model_max_length == 32 and made["tokenizer"].pad_token == "<|endoftext|>"
    (tmp_path / "text_encoder" / "config.json").write_text(json.dumps({"max_position_embeddings": 10**9}))
    assert tokenizers(tmp_path, {"tokenizer": ["transformers", "CLIPTokenizer"]})["tokenizer"].model_max_length == 77
