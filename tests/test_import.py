"""`studio import`: A1111's parameters, from a PNG, a JPEG's or WebP's EXIF or a text file,
into a pipeline that validates and runs; hostile files refused, located, in bounded time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from studio.errors import UserError
from studio.interop.a1111 import pairs, parse
from studio.interop.imagetext import MAX_TEXT_BYTES, read_texts
from studio.interop.importing import from_infotext

A1111 = ("masterpiece, a (cat:1.2) on a mat <lora:outline_v2:0.8>, <hypernet:sketch:1>\n"
         "Negative prompt: blurry, lowres\n"
         "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123456, Face restoration: "
         "CodeFormer, Size: 512x768, Model hash: 6ce0161689, Model: dreamshaper_8, Clip skip: 2, ENSD: 31337, "
         'Lora hashes: "outline_v2: 3c5b6b3f5a1e", Version: v1.10.1')
# the embedded default, tiny and one step: what the test runs
SMALL = ("red heart\nNegative prompt: blurry\n"
         "Steps: 1, Sampler: Euler a, CFG scale: 6.5, Seed: 9, Size: 32x32, Model: default, Token merging ratio: 0.5")


def _import(text: str, **kwargs):
    return from_infotext(parse(text, "t.txt"), "t.txt", "t", **kwargs)


def test_an_a1111_infotext_maps_onto_image_diffusion():
    done = _import(A1111)
    assert done.pipeline["steps"][0]["uses"] == "image.diffusion"
    assert done.pipeline["steps"][0]["with"] == {
        "prompt": "masterpiece, a (cat:1.2) on a mat", "negative_prompt": "blurry, lowres",
        "loras": [{"name": "outline_v2", "scale": 0.8}], "prompt_weighting": "a1111",
        "steps": 30, "guidance_scale": 7.0, "seed": 123456, "width": 512, "height": 768, "clip_skip": 1,
        "scheduler": "dpm++-karras", "model": "dreamshaper_8"}
    assert done.dropped == ["prompt tag <hypernet:sketch:1>", "Face restoration: CodeFormer", "ENSD: 31337"]
    assert "Model hash: 6ce0161689" in done.notes and any("model folders" in n for n in done.notes)
    # A1111 before 1.9 named the schedule in the sampler; samplers Studio lacks are listed
    old = _import(SMALL.replace("Euler a", "DPM++ 2M Karras"))
    assert old.pipeline["steps"][0]["with"]["scheduler"] == "dpm++-karras"
    tags = _import(SMALL.replace("red heart", "red heart <lora:x:0.8:0.5> <lora:y> <lora:z:abc>"))
    assert tags.pipeline["steps"][0]["with"]["loras"] == [{"name": "x", "scale": 0.8}, {"name": "y", "scale": 1.0}]
    assert tags.dropped[0] == "prompt tag <lora:z:abc> (its weight is not a number from -10 to 10)"
    lms = _import(SMALL.replace("Euler a", "LMS"))
    assert "scheduler" not in lms.pipeline["steps"][0]["with"] and lms.dropped[0].startswith("Sampler: LMS")


def test_an_sdxl_refiner_in_the_infotext_becomes_refiner_and_its_switch():
    text = SMALL + ', Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.7'
    with_ = _import(text).pipeline["steps"][0]["with"]
    assert with_["refiner"] == "sd_xl_refiner_1.0" and with_["refiner_switch"] == 0.7
    assert "refiner_switch" not in _import(SMALL + ", Refiner: xl_refiner").pipeline["steps"][0]["with"]
    with pytest.raises(UserError, match="'Refiner switch at' is '1.5'; Studio takes"):
        _import(SMALL + ", Refiner: r, Refiner switch at: 1.5")


def test_image_to_image_needs_the_image_the_infotext_does_not_name(tmp_path):
    text = SMALL + ", Denoising strength: 0.6"
    with pytest.raises(UserError, match="--image FILE"):
        _import(text)
    done = _import(text, image=tmp_path / "start.png")
    assert done.pipeline["steps"][0]["with"]["strength"] == 0.6
    # with A1111's hires fix the strength is the second pass's: listed, not a refusal
    hires = _import(text + ", Hires upscale: 2, Hires steps: 10")
    assert "Denoising strength: 0.6 (of A1111's hires fix)" in hires.dropped


def test_the_parameters_are_read_from_a_png_a_jpeg_a_webp_and_a_text_file(tmp_path):
    png = tmp_path / "a.png"
    info = PngInfo()
    info.add_text("parameters", SMALL + ", Note: ünï", zip=True)  # compressed iTXt: not Latin-1
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + SMALL.encode("utf-16-be")  # as A1111 (piexif) writes it
    for name in ("a.jpg", "a.webp"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, exif=exif.tobytes())
    (tmp_path / "a.txt").write_text(SMALL, encoding="utf-8")
    assert read_texts(png, ("parameters",)) == ("png", {"parameters": SMALL + ", Note: ünï"})
    for name, kind in (("a.jpg", "jpeg"), ("a.webp", "webp"), ("a.txt", "text")):
        assert read_texts(tmp_path / name, ("parameters",)) == (kind, {"parameters": SMALL})


def test_an_import_from_a_jpeg_or_webp_keeps_its_format(tmp_path):
    import yaml
    from click.testing import CliRunner

    from studio.cli import cli

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + SMALL.encode("utf-16-be")
    info = PngInfo()
    info.add_text("parameters", SMALL)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png", pnginfo=info)
    (tmp_path / "a.txt").write_text(SMALL, encoding="utf-8")
    for name in ("a.jpg", "a.webp"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, exif=exif.tobytes())
    for name, kind in (("a.jpg", "jpeg"), ("a.webp", "webp"), ("a.png", None), ("a.txt", None)):
        out = CliRunner().invoke(cli, ["import", str(tmp_path / name), "-o", str(tmp_path / f"{name}.yaml")])
        assert out.exit_code == 0, out.output
        text = (tmp_path / f"{name}.yaml").read_text(encoding="utf-8")
        pipeline = yaml.safe_load(text)
        assert pipeline.get("format") == kind and "quality" not in pipeline, (name, text)
        assert (f"format: {kind}, as the imported file; its quality is not known" in text) == (kind is not None)
    checked = CliRunner().invoke(cli, ["validate", str(tmp_path / "a.webp.yaml")])
    assert checked.exit_code == 0, checked.output


def test_import_validate_run_on_the_embedded_default(tmp_path):
    from click.testing import CliRunner

    from studio import api
    from studio.cli import cli
    from studio.testing import make_host

    (tmp_path / "a1111.txt").write_text(SMALL, encoding="utf-8")
    out = CliRunner().invoke(cli, ["import", str(tmp_path / "a1111.txt"), "-o", str(tmp_path / "pipeline.yaml")])
    assert out.exit_code == 0, out.output
    assert "not imported (no Studio equivalent): Token merging ratio: 0.5" in out.output
    text = (tmp_path / "pipeline.yaml").read_text()
    assert "# not imported (no Studio equivalent): Token merging ratio: 0.5" in text and "on the GPU" in text
    run = api.run(tmp_path / "pipeline.yaml", out=tmp_path / "runs", host=make_host([]))
    (item,) = run.step("image")
    assert item.status == "done", item.error
    made = Image.open(item.artifacts["image"].path)
    assert made.size == (32, 32) and item.seed == 9
    back = parse(made.info["parameters"], "made.png").pairs
    assert (back["Steps"], back["Sampler"], back["CFG scale"], back["Seed"], back["Size"]) == (
        "1", "Euler a", "6.5", "9", "32x32")


def test_hostile_infotexts_are_refused_located_and_quickly(tmp_path):
    cases = {
        "huge.txt": b"a" * (MAX_TEXT_BYTES + 1),
        "binary.txt": bytes(range(256)) * 4,
        "lines.txt": b"a\n" * 100_000,
        "empty.txt": b"\n \n",
        "steps.txt": b"cat\nSteps: many, Sampler: Euler, Seed: 1",
        "size.txt": b"cat\nSteps: 2, Sampler: Euler, Size: 99999x2",
        "seed.txt": b"cat\nSteps: 2, Sampler: Euler, Seed: -1",
    }
    expected = {"huge.txt": "at most 256 KB", "binary.txt": "not UTF-8", "lines.txt": "not an A1111 infotext",
                "empty.txt": "empty", "steps.txt": "infotext key 'Steps' is 'many'",
                "size.txt": "infotext key 'Size'", "seed.txt": "infotext key 'Seed' is '-1'"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        started = time.perf_counter()
        with pytest.raises(UserError, match=expected[name]) as caught:
            _, texts = read_texts(tmp_path / name, ("parameters",))
            _import(texts["parameters"])
        assert time.perf_counter() - started < 1.0, name
        assert name in str(caught.value) or "t.txt" in str(caught.value)
    # a last line built to make a backtracking reader take quadratic time: one pass
    for line in ("a" * 200_000, "ab:\"" * 50_000, " " * 200_000 + "x", "kk: \"\\" * 40_000):
        started = time.perf_counter()
        pairs(line)
        assert time.perf_counter() - started < 1.0


def test_hostile_pngs_and_files_are_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    info = PngInfo()
    Image.new("RGB", (8, 8)).save(bomb)
    data = bomb.read_bytes()
    body = b"parameters\0\0" + zlib.compress(b"a" * (64 * 2**20), 9)
    chunk = len(body).to_bytes(4, "big") + b"zTXt" + body + zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    bomb.write_bytes(data[:33] + chunk + data[33:])  # after IHDR
    with pytest.raises(UserError, match="once decompressed"):
        read_texts(bomb, ("parameters",))
    comfy = tmp_path / "comfy.png"
    info.add_text("prompt", '{"3": {"class_type": "KSampler", "inputs": {}}}')
    Image.new("RGB", (8, 8)).save(comfy, pnginfo=info)
    out = _studio("import", comfy)
    assert out.returncode == 2 and "ComfyUI" in out.stdout and "Traceback" not in out.stdout
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        read_texts(fifo, ("parameters",))


def _studio(*args) -> subprocess.CompletedProcess:
    """The command as a user runs it: its exit code and everything it printed."""
    return subprocess.run([sys.executable, "-m", "studio", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          check=False)


# ComfyUI's default graph, as "Save (API Format)" writes it, with a LoRA, clip skip and an
# upscale node Studio does not have
COMFY = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": 20, "cfg": 8, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1,
        "model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/dreamshaper_8.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "beautiful scenery", "clip": ["11", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["11", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "outline.safetensors", "strength_model": 0.7,
                                                  "strength_clip": 0.7, "model": ["4", 0], "clip": ["4", 1]}},
    "11": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["10", 1]}},
    "12": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-UltraSharp.pth"}},
}


def _graph(graph: dict, tmp_path: Path, **kwargs):
    from studio.interop.comfyui import from_graph

    return from_graph(json.dumps(graph), "g.json", "g", tmp_path, **kwargs)


def test_a_comfyui_graph_maps_onto_image_diffusion(tmp_path):
    from click.testing import CliRunner

    from studio.cli import cli

    done = _graph(COMFY, tmp_path)
    assert done.pipeline["steps"][0]["with"] == {
        "steps": 20, "guidance_scale": 8.0, "seed": 42, "scheduler": "dpm++-karras", "model": "sd15/dreamshaper_8",
        "loras": [{"name": "outline", "scale": 0.7}], "prompt": "beautiful scenery",
        "negative_prompt": "text, watermark", "clip_skip": 1, "width": 512, "height": 768}
    assert done.dropped == ["node 12 (UpscaleModelLoader)"] and done.source == "ComfyUI graph"
    (tmp_path / "workflow_api.json").write_text(json.dumps(COMFY), encoding="utf-8")  # "Save (API Format)"
    out = CliRunner().invoke(cli, ["import", str(tmp_path / "workflow_api.json")])
    assert out.exit_code == 0 and "(ComfyUI graph)" in out.output and "node 12 (UpscaleModelLoader)" in out.output
    euler = json.loads(json.dumps(COMFY))
    euler["3"]["inputs"].update(sampler_name="euler_ancestral", scheduler="sgm_uniform")
    assert _graph(euler, tmp_path).pipeline["steps"][0]["with"]["scheduler"] == "euler-a"
    assert "scheduler: sgm_uniform" in _graph(euler, tmp_path).dropped[0]


def test_a_comfyui_image_to_image_graph_imports_validates_and_runs(tmp_path):
    from click.testing import CliRunner

    from studio import api
    from studio.cli import cli
    from studio.testing import make_host

    graph = {k: v for k, v in json.loads(json.dumps(COMFY)).items() if k not in ("10", "11", "12")}
    graph["3"]["inputs"].update(steps=2, cfg=5, sampler_name="euler", scheduler="normal", denoise=0.5,
                                model=["4", 0], latent_image=["13", 0])
    graph["6"]["inputs"]["clip"] = graph["7"]["inputs"]["clip"] = ["4", 1]
    graph.update({"13": {"class_type": "VAEEncode", "inputs": {"pixels": ["14", 0], "vae": ["4", 2]}},
                  "14": {"class_type": "ImageScale", "inputs": {"image": ["15", 0], "upscale_method": "lanczos",
                                                                "width": 32, "height": 32, "crop": "disabled"}},
                  "15": {"class_type": "LoadImage", "inputs": {"image": "start.png"}}})
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    Image.new("RGB", (8, 8)).save(tmp_path / "comfy.png", pnginfo=info)
    refused = _studio("import", tmp_path / "comfy.png")
    assert refused.returncode == 2 and "LoadImage" in refused.stdout and "--image" in refused.stdout
    Image.new("RGB", (40, 40), "red").save(tmp_path / "start.png")  # beside the file, as ComfyUI's input
    out = CliRunner().invoke(cli, ["import", str(tmp_path / "comfy.png"), "--model", "default",
                                   "-o", str(tmp_path / "pipeline.yaml")])
    assert out.exit_code == 0, out.output
    run = api.run(tmp_path / "pipeline.yaml", out=tmp_path / "runs", host=make_host([]))
    (item,) = run.step("image")
    assert item.status == "done", item.error
    back = parse(Image.open(item.artifacts["image"].path).info["parameters"], "made.png").pairs
    assert (back["Size"], back["Denoising strength"], back["Seed"], back["Sampler"]) == ("32x32", "0.5", "42", "Euler")


def test_hostile_comfyui_graphs_are_refused(tmp_path):
    cyclic = json.loads(json.dumps(COMFY))
    cyclic["10"]["inputs"]["model"] = ["16", 0]
    cyclic["16"] = {"class_type": "LoraLoader", "inputs": {**COMFY["10"]["inputs"], "model": ["10", 0]}}
    huge = {str(i): {"class_type": "Note", "inputs": {}} for i in range(3000)}
    broken = json.loads(json.dumps(COMFY))
    broken["3"]["inputs"]["model"] = ["99", 0]
    cases = [(cyclic, "cycle"), (huge, "3,000 nodes"), ([1, 2], "mapping of node id"),
             ({"1": {"inputs": {}}}, "not {class_type, inputs}"), (broken, "not a link to a node"),
             ({**COMFY, "3": {**COMFY["3"], "inputs": {**COMFY["3"]["inputs"], "steps": ["5", 0]}}}, "not a literal")]
    for graph, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            _graph(graph, tmp_path)
    from studio.interop.comfyui import from_graph

    for text in ("{" * 100_000, '{"a": '):
        with pytest.raises(UserError, match="not JSON"):
            from_graph(text, "g.json", "g", tmp_path)


def test_an_imported_lora_tag_resolves_through_the_model_folders(tmp_path):
    import shutil

    from click.testing import CliRunner

    from studio.cli import cli

    lora = Path(__file__).parents[1] / "plugins" / "studio_image" / "weights" / "lora-outline"
    folder = tmp_path / "webui" / "models" / "Lora"  # A1111's layout
    folder.mkdir(parents=True)
    shutil.copy(lora / "pytorch_lora_weights.safetensors", folder / "outline.safetensors")
    (tmp_path / "a1111.txt").write_text(SMALL.replace("red heart", "red heart <lora:outline:0.5>"), encoding="utf-8")
    out = CliRunner().invoke(cli, ["import", str(tmp_path / "a1111.txt"), "-o", str(tmp_path / "p.yaml")])
    assert out.exit_code == 0, out.output
    assert "loras:\n    - name: outline\n      scale: 0.5" in (tmp_path / "p.yaml").read_text()
    checked = CliRunner().invoke(cli, ["validate", str(tmp_path / "p.yaml"), "--models", str(tmp_path / "webui")])
    assert checked.exit_code == 0, checked.output


def _advanced(**inputs) -> dict:
    """COMFY with its KSampler made a KSamplerAdvanced (noise_seed for seed)."""
    graph = json.loads(json.dumps(COMFY))
    sampler = graph["3"]["inputs"]
    sampler["noise_seed"] = sampler.pop("seed")
    sampler.pop("denoise")
    sampler.update({"add_noise": "enable", "start_at_step": 0, "end_at_step": 10000,
                    "return_with_leftover_noise": "disable", **inputs})
    graph["3"]["class_type"] = "KSamplerAdvanced"
    return graph


def _image_to_image(graph: dict, tmp_path: Path) -> dict:
    graph.update({"13": {"class_type": "VAEEncode", "inputs": {"pixels": ["15", 0], "vae": ["4", 2]}},
                  "15": {"class_type": "LoadImage", "inputs": {"image": "start.png"}}})
    graph["3"]["inputs"]["latent_image"] = ["13", 0]
    del graph["5"]
    Image.new("RGB", (16, 16)).save(tmp_path / "start.png")
    return _graph(graph, tmp_path).pipeline["steps"][0]["with"]


def test_comfyuis_ksampleradvanced_maps_what_studio_can_express(tmp_path):
    plain = _graph(COMFY, tmp_path)
    whole = _graph(_advanced(), tmp_path)  # the whole schedule, noise added: a KSampler
    assert whole.pipeline == plain.pipeline and whole.dropped == plain.dropped
    leftover = _graph(_advanced(return_with_leftover_noise="enable"), tmp_path)
    assert leftover.pipeline == plain.pipeline and any("return_with_leftover_noise" in n for n in leftover.notes)
    assert "node 3 start_at_step: 4 (on an empty latent)" in _graph(_advanced(start_at_step=4), tmp_path).dropped
    # a start past 0 on image-to-image is diffusers' strength: int(steps * strength) steps run, exactly
    for steps, start in ((20, 4), (100, 71), (7, 6), (1000, 1)):
        made = _image_to_image(_advanced(steps=steps, start_at_step=start), tmp_path)
        assert made["steps"] == steps and int(made["steps"] * made["strength"]) == steps - start, (steps, start)
    # KSampler's denoise d runs its steps as the last of int(steps / d) (ComfyUI's rule)
    graph = json.loads(json.dumps(COMFY))
    graph["3"]["inputs"].update(steps=20, denoise=0.3)
    made = _image_to_image(graph, tmp_path)
    assert made["steps"] == 66 and int(66 * made["strength"]) == 20 and abs(made["strength"] - 0.3) < 0.01


def test_comfyui_samplers_studio_cannot_express_are_refused_with_the_equivalent(tmp_path):
    cases = [(_advanced(add_noise="disable"), ("node 3 (KSamplerAdvanced)", "add_noise: disable")),
             (_advanced(end_at_step=12), ("end_at_step 12 of 20 steps", "jumps to the end")),
             (_advanced(end_at_step=12, return_with_leftover_noise="enable"), ("leftover noise",)),
             (_advanced(start_at_step=20), ("start_at_step is 20", "0 to 19"))]
    # two samplers that are not SDXL's base/refiner pair (the first one jumps to the end of its schedule instead of
    # returning its leftover noise; the pair itself imports: tests/test_import_comfy_sdxl.py)
    pair = _advanced(steps=25, start_at_step=20, add_noise="disable", latent_image=["20", 0], model=["21", 0])
    pair["20"] = _advanced(steps=25, end_at_step=20)["3"]
    pair["21"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_refiner_1.0.safetensors"}}
    cases.append((pair, ("node 3 (KSamplerAdvanced) finishes the latent of sampler node 20", "stops at step 20 of 25",
                         "model: sd15/dreamshaper_8, refiner: sd_xl_refiner_1.0, refiner_switch: 0.8")))
    for graph, expected in cases:
        if expected == ("start_at_step is 20", "0 to 19"):
            graph.update({"13": {"class_type": "VAEEncode", "inputs": {"pixels": ["15", 0], "vae": ["4", 2]}},
                          "15": {"class_type": "LoadImage", "inputs": {"image": "start.png"}}})
            graph["3"]["inputs"]["latent_image"] = ["13", 0]
            Image.new("RGB", (16, 16)).save(tmp_path / "start.png")
        with pytest.raises(UserError) as info:
            _graph(graph, tmp_path)
        assert all(words in str(info.value) for words in ("g.json", *expected)), str(info.value)
