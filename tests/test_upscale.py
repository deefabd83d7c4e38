"""image.upscale: tiny upscalers in the key layouts model sites ship (ESRGAN old and new
names, Real-ESRGAN's compact SRVGGNet, SPAN), built here with random weights; Studio's output
against spandrel's model on the whole image, tiled against whole, batches, alpha and
grey, names from A1111's and ComfyUI's folders, and files refused before they load."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact as SRVGGNetCompact
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SPAN import SPAN

from studio.testing import make_artifact, make_context
from studio_upscale.upscale import ImageUpscale
from studio_upscale.upscale_tiles import starts


def esrgan_state(seed=0):
    """A 4x ESRGAN (RRDBNet, 8 filters, 1 block) in the original repo's key names (model.N...)."""
    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    return {k: v.clone() for k, v in net.state_dict().items()}


def new_names(old):
    """The same ESRGAN in BasicSR's (Real-ESRGAN's) names: conv_first, body.N.rdbR.convC, ..."""
    new = {}
    for key, value in old.items():
        parts = key.split(".")
        if key.startswith("model.1.sub.") and "RDB" in key:  # model.1.sub.0.RDB1.conv1.0.weight
            name = f"body.{parts[3]}.rdb{parts[4][3:]}.{parts[5]}.{parts[7]}"
        elif key.startswith("model.1.sub."):
            name = f"conv_body.{parts[-1]}"
        else:
            name = {"0": "conv_first", "3": "conv_up1", "6": "conv_up2", "8": "conv_hr", "10": "conv_last"}[parts[1]]
            name = f"{name}.{parts[-1]}"
        new[name] = value
    return new


def compact_state(seed=0):
    """Real-ESRGAN's SRVGGNetCompact, 2x, 8 features, 2 convolutions (body.N...)."""
    torch.manual_seed(seed)
    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2, act_type="prelu")
    return {k: v.clone() for k, v in net.state_dict().items()}


def span_state(seed=0):
    """SPAN (the NTIRE 2024 efficient-SR winner's architecture), 2x, 8 feature channels."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2).state_dict().items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscalers")
    save_file(esrgan_state(), str(root / "esrgan_old.safetensors"))
    torch.save(new_names(esrgan_state()), root / "esrgan_new.pth")
    save_file(compact_state(), str(root / "compact.safetensors"))
    save_file(span_state(), str(root / "span.safetensors"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (44, 40, 3), dtype=np.uint8)).save(root / "small.png")
    Image.fromarray(rng.integers(0, 256, (96, 200, 3), dtype=np.uint8)).save(root / "wide.png")
    return root


def spandrel_whole(state, image_path):
    """What spandrel's model makes of the whole image, as 8-bit values."""
    descriptor = ModelLoader().load_from_state_dict(state).eval()
    array = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255.0
    with torch.inference_mode():
        out = descriptor(torch.from_numpy(array.transpose(2, 0, 1))[None])
    return (out[0].clamp(0, 1) * 255).round().byte().numpy().transpose(1, 2, 0)


def upscale(files, model, image, **kw):
    params = ImageUpscale.Params(image=make_artifact(files / image), model=str(files / model), **kw)
    return ImageUpscale().generate(params, make_context())["image"]


@pytest.mark.parametrize("model, state", [("esrgan_old.safetensors", esrgan_state), ("esrgan_new.pth", esrgan_state),
                                          ("compact.safetensors", compact_state), ("span.safetensors", span_state)])
def test_output_equals_spandrel_on_the_whole_image(files, model, state):
    got = np.asarray(upscale(files, model, "small.png", tile=0), dtype=np.int16)
    want = spandrel_whole(state(), files / "small.png").astype(np.int16)
    assert got.shape == want.shape == (44 * (4 if "esrgan" in model else 2), 40 * (4 if "esrgan" in model else 2), 3)
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("model, tile, overlap", [("esrgan_old.safetensors", 160, 80), ("compact.safetensors", 32, 16)])
def test_tiled_equals_whole_when_the_model_reach_fits_the_overlap(files, model, tile, overlap):
    whole = np.asarray(upscale(files, model, "wide.png", tile=0), dtype=np.int16)
    tiles = np.asarray(upscale(files, model, "wide.png", tile=tile, tile_overlap=overlap), dtype=np.int16)
    assert np.abs(whole - tiles).max() <= 1


def test_tiles_cover_the_image_and_end_flush():
    assert starts(100, 100, 16) == [0]
    assert starts(240, 160, 80) == [0, 80]
    assert starts(500, 256, 128) == [0, 128, 244]


def test_a_batch_equals_each_item_alone_and_alpha_and_grey_keep_their_mode(files):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), "RGBA").save(files / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8), "L").save(files / "grey.png")
    gen, model = ImageUpscale(), str(files / "compact.safetensors")
    params = [ImageUpscale.Params(image=make_artifact(files / name), model=model, scale=scale)
              for name, scale in (("small.png", None), ("small.png", 3.0), ("alpha.png", None), ("grey.png", None))]
    batch = gen.generate_batch(params, [make_context(seed=i) for i in range(4)])
    for p, out in zip(params, batch):
        alone = gen.generate(p, make_context())["image"]
        assert np.array_equal(np.asarray(out["image"]), np.asarray(alone))
    assert batch[1]["image"].size == (120, 132)  # scale 3 from a 2x model: Lanczos on its output
    assert batch[2]["image"].mode == "RGBA" and batch[2]["image"].size == (48, 40)
    assert batch[3]["image"].mode == "L" and batch[3]["image"].size == (48, 40)


def pipeline(tmp_path, model, **extra):
    lines = ["name: up", "steps:", "  - id: up", "    uses: image.upscale", "    with:",
             f"      image: {tmp_path / 'in.png'}", f"      model: {model}"]
    lines += [f"      {key}: {value}" for key, value in extra.items()]
    (tmp_path / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    Image.new("RGB", (16, 12), "red").save(tmp_path / "in.png")
    return tmp_path / "pipeline.yaml"


class Booby:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_files_that_are_not_upscalers_are_refused_at_validate(tmp_path, files, studio_main):
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(4, 4)}, str(tmp_path / "lora.safetensors"))
    path = pipeline(tmp_path, tmp_path / "lora.safetensors")
    done = studio_main("validate", path, cwd=tmp_path)
    assert done.returncode == 2 and "pipeline.yaml:7" in done.stdout + done.stderr
    assert "seems to be a LoRA" in done.stdout + done.stderr
    booby = Booby()
    booby.marker = tmp_path / "ran"
    with open(tmp_path / "trap.pth", "wb") as f:
        pickle.dump({"w": booby}, f)
    done = studio_main("validate", pipeline(tmp_path, tmp_path / "trap.pth"), cwd=tmp_path)
    assert done.returncode == 2 and "pickled code" in done.stdout + done.stderr and "system" in done.stdout + done.stderr
    assert not (tmp_path / "ran").exists()
    done = studio_main("validate", pipeline(tmp_path, files / "compact.safetensors", tile=64, tile_overlap=40),
                       cwd=tmp_path)
    assert done.returncode == 2 and "tile_overlap 40 is more than half of tile 64" in done.stdout + done.stderr


def test_an_architecture_spandrel_does_not_know_is_refused_at_run(tmp_path, studio_main):
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(tmp_path / "odd.safetensors"))
    path = pipeline(tmp_path, tmp_path / "odd.safetensors")
    done = studio_main("run", path, "--out", tmp_path / "runs", cwd=tmp_path)
    text = done.stdout + done.stderr
    assert done.returncode == 2 and "no architecture spandrel recognises" in text and "Traceback" not in text


@pytest.mark.parametrize("layout", ["webui/models/ESRGAN", "comfy/models/upscale_models"])
def test_a_name_from_a1111_and_comfyui_folders(tmp_path, files, studio_main, layout):
    folder = tmp_path / layout
    folder.mkdir(parents=True)
    (folder / "4x_tiny.safetensors").write_bytes((files / "compact.safetensors").read_bytes())
    root = tmp_path / layout.split("/")[0]
    path = pipeline(tmp_path, "4x_tiny")
    done = studio_main("run", path, "--models", root, "--out", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = [p for p in (tmp_path / "runs" / "up").glob("*/up/image.png") if p.parts[-3] != "latest"]
    assert len(outputs) == 1 and Image.open(outputs[0]).size == (32, 24)
    manifest = json.loads((outputs[0].parent.parent / "manifest.json").read_text())
    assert str(folder / "4x_tiny.safetensors") in json.dumps(manifest)
    notes = json.dumps(manifest)
    assert '"model_sha256"' in notes and '"tile": 256' in notes and '"architecture": "RealESRGAN Compact"' in notes


def test_half_precision_only_where_spandrel_says_the_architecture_allows_it():
    gen = ImageUpscale()
    for half, bf16, want in ((True, True, torch.float16), (False, True, torch.bfloat16), (False, False, torch.float32)):
        descriptor = ModelLoader().load_from_state_dict(compact_state())
        descriptor.supports_half, descriptor.supports_bfloat16 = half, bf16
        assert gen.prepare(descriptor, make_context(precision="fp16")).dtype == want


def test_an_image_too_large_for_a_cpu_is_refused_before_the_run(tmp_path, files, studio_main):
    path = pipeline(tmp_path, files / "compact.safetensors")
    path.write_text(path.read_text().replace("name: up\n", "name: up\ndevice: cpu\n"))
    Image.new("RGB", (1100, 1000), "red").save(tmp_path / "in.png")
    done = studio_main("validate", path, cwd=tmp_path)
    text = done.stdout + done.stderr
    assert done.returncode == 2 and "on a CPU image.upscale takes at most 1.0 megapixels" in text
