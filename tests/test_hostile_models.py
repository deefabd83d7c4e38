"""Issue 29's bad input, as a corpus: the model files, LoRAs, model folders, infotexts and
ComfyUI graphs an artist's folders may hold, each refused (exit 2) or cut with a note,
before anything loads.

Every case runs `studio ...` as the console script does (studio.cli.main, in this process:
fast) and checks what a user sees: the exit code, no traceback, the location (the pipeline
file's line, the step and field, the file), what was received, an answer within a time
budget, nothing written, and no code run from a pickle (a `pwned` file a pickle would
create). A few run through the real command line (test_hostile.check_case) where memory
is the point: a header that claims a terabyte, a 2 GB "infotext", a huge graph.

The checkpoints are headers over sparse data (os.truncate): a real-size file's layout,
no gigabytes written. Only the names and shapes Studio recognises a family by are there
(the UNet's first convolution and cross-attention or size conditioning, the text
encoders', the VAE's).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from test_hostile import BUDGET_S, SLACK_S, Case, _Pwn, check_case, cli_main, snapshot

UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
CROSS = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
LABEL = UNET + "label_emb.0.0.weight"
VAE = {"first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3)}
SD1 = {CONV_IN: (320, 4, 3, 3), CROSS: (320, 768), "cond_stage_model.transformer.text_model.final_layer_norm.weight":
       (768,), **VAE}
SDXL = {CONV_IN: (320, 4, 3, 3), LABEL: (1280, 2816), CROSS: (640, 2048),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
        "conditioner.embedders.1.model.ln_final.weight": (1280,), **VAE}
REFINER = {CONV_IN: (384, 4, 3, 3), LABEL: (1536, 2560), "conditioner.embedders.0.model.ln_final.weight": (1280,),
           **VAE}
KOHYA_XL = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"  # SDXL's files keep the sgm names
KOHYA_SD1 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


def header_bytes(tensors: dict[str, tuple], metadata: dict[str, str] | None = None,
                 dtype: str = "F16") -> tuple[bytes, int]:
    """A safetensors header for these tensors (data packed in order) and the data's size."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in tensors.items():
        n = 2 * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text, offset


def sparse_safetensors(tensors: dict[str, tuple], metadata: dict[str, str] | None = None,
                       cut: int = 0) -> Callable[[Path, Path], None]:
    """A maker of a safetensors file over sparse zero data; `cut` bytes short of whole."""
    def make(path: Path, root: Path) -> None:
        head, size = header_bytes(tensors, metadata)
        path.write_bytes(head)
        os.truncate(path, len(head) + size - cut)
    return make


def big_header(path: Path, root: Path) -> None:
    """A whole file whose header (its metadata) is past Studio's 16 MB bound."""
    text = json.dumps({"__metadata__": {"notes": "a" * (17 * 2**20)}}).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)


def lying(**entry: Any) -> bytes:
    """A one-tensor header whose entry says what `entry` says, over 16 bytes."""
    text = json.dumps({CONV_IN: {"dtype": "F16", "shape": [320, 4, 3, 3], "data_offsets": [0, 16], **entry}}).encode()
    return struct.pack("<Q", len(text)) + text + bytes(16)


def lora(tensors: dict[str, tuple], metadata: dict[str, str] | None = None) -> Callable[[Path, Path], None]:
    """A kohya LoRA maker: for each name, its down (rank 4) and up matrices."""
    layers = {}
    for name, (width, out) in tensors.items():
        layers[f"{name}.lora_down.weight"] = (4, width)
        layers[f"{name}.lora_up.weight"] = (out, 4)
    return sparse_safetensors(layers, metadata)


def pickle_with_code(path: Path, root: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": _Pwn(str(root / "pwned"))}))


def pipeline(**with_: Any) -> str:
    return json.dumps({"name": "t", "device": "cpu", "steps": [{"id": "a", "uses": "image.diffusion",
                                                                  "with": {"prompt": "a cat", **with_}}]})


def with_lora(model: str = "model.safetensors") -> str:
    return pipeline(model=model, loras=[{"path": "style.safetensors"}])


def run_case(tmp: Path, files: dict[str, Any], argv: list[str], monkeypatch, capsys) -> tuple[int, str, float]:
    """The files made, `studio ARGV` run in `tmp`: (exit code, output, seconds); nothing
    written when it is refused, and no pickle's code run."""
    for rel, content in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            content(path, tmp)
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp.parent / f"{tmp.name}-cache"))  # model hashes: outside the snapshot
    before = snapshot(tmp)
    code, output, seconds = cli_main(argv, monkeypatch, capsys)
    assert "Traceback" not in output, output[:3000]
    assert not (tmp / "pwned").exists(), f"code from a pickle ran\n{output[:3000]}"
    if code == 2:
        assert snapshot(tmp) == before, f"a refused command wrote {sorted(snapshot(tmp) - before)[:5]}"
    return code, output, seconds


# --- model files and LoRAs: `studio validate` and `studio run` refuse them before loading ----------

MODEL = ("p.yaml:", "steps[0].with.model", "model.safetensors")
LORA = ("p.yaml:", "steps[0].with.loras", "style.safetensors")
FILE_CASES: list[tuple[str, dict[str, Any], tuple[str, ...], tuple[str, ...]]] = [
    ("not-safetensors", {"model.safetensors": b"hello, this is text and not a checkpoint"}, MODEL,
     ("not a complete safetensors file",)),
    ("empty", {"model.safetensors": b""}, MODEL, ("not a complete safetensors file",)),
    ("truncated", {"model.safetensors": sparse_safetensors(SD1, cut=1000)}, MODEL, ("truncated",)),
    ("header-lies-about-sizes", {"model.safetensors": lying()}, MODEL, ("does not match its data", "[320, 4, 3, 3]")),
    ("header-lies-about-offsets", {"model.safetensors": lying(data_offsets=[0, 9000])}, MODEL,
     ("lies outside its 16 bytes of data",)),
    ("header-claims-a-terabyte", {"model.safetensors": struct.pack("<Q", 2**40) + b"{}"}, MODEL,
     ("header claims 1,099,511,627,776 bytes",)),
    ("header-of-17-mb", {"model.safetensors": big_header}, MODEL,
     ("header claims 17,825,8", "at most 16 MB")),
    ("a-lora-as-the-model", {"model.safetensors": lora({KOHYA_SD1: (768, 320)})}, MODEL,
     ("not a single-file checkpoint Studio recognises", "LoRA weights", "config:")),
    ("refiner-as-base", {"model.safetensors": sparse_safetensors(REFINER)}, ("p.yaml:", "steps[0].with", "model.safetensors"),
     ("Stable Diffusion XL refiner", "cannot start one from noise")),
    ("sdxl-lora-on-sd15", {"model.safetensors": sparse_safetensors(SD1),
                           "style.safetensors": lora({KOHYA_XL: (2048, 640)})}, LORA,
     ("was made for Stable Diffusion XL", "2048-wide", "is a Stable Diffusion 1.x checkpoint", "Use an SD1 LoRA")),
    ("sd15-lora-on-sdxl", {"model.safetensors": sparse_safetensors(SDXL),
                           "style.safetensors": lora({KOHYA_SD1: (768, 320)}, {"ss_base_model_version": "sd_v1"})},
     LORA, ("was made for Stable Diffusion 1.x", "768-wide", "is a Stable Diffusion XL base checkpoint", "Use an SDXL LoRA")),
    ("sdxl-lora-told-by-its-second-text-encoder", {
        "model.safetensors": sparse_safetensors(SD1),
        "style.safetensors": lora({"lora_te2_text_model_encoder_layers_0_self_attn_k_proj": (1280, 1280)})}, LORA,
     ("was made for Stable Diffusion XL", "second text encoder", "lora_te2_")),
    ("sdxl-lora-told-by-its-metadata", {
        "model.safetensors": sparse_safetensors(SD1),
        "style.safetensors": lora({"lora_unet_some_layer": (64, 64)}, {"ss_base_model_version": "sdxl_base_v1-0"})},
     LORA, ("was made for Stable Diffusion XL", "ss_base_model_version: 'sdxl_base_v1-0'")),
    ("sd15-lora-on-the-refiner", {"model.safetensors": sparse_safetensors(REFINER),
                                  "style.safetensors": lora({KOHYA_SD1: (768, 320)})}, LORA,
     ("was made for Stable Diffusion 1.x", "is a Stable Diffusion XL refiner checkpoint")),
    ("ckpt-that-would-run-code", {"model.ckpt": pickle_with_code}, ("p.yaml:", "steps[0].with.model", "model.ckpt"),
     ("pickled code", "system", "refused without running it")),
    ("pickled-lora-that-would-run-code", {"model.safetensors": sparse_safetensors(SD1), "style.pt": pickle_with_code},
     ("p.yaml:", "steps[0].with.loras", "style.pt"), ("never a pickle", "system")),
]


@pytest.mark.parametrize("name,files,where,expect", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_bad_model_or_lora_file_is_refused_before_anything_loads(name, files, where, expect, tmp_path, monkeypatch,
                                                                   capsys):
    model = next(rel for rel in files if rel.startswith("model."))
    lora_file = next((rel for rel in files if rel.startswith("style.")), None)
    text = pipeline(model=model, loras=[{"path": lora_file}]) if lora_file else pipeline(model=model)
    for command in ("validate", "run"):
        code, output, seconds = run_case(tmp_path, {**files, "p.yaml": text}, [command, "p.yaml"], monkeypatch, capsys)
        assert code == 2, f"{command}: exit {code}\n{output[:3000]}"
        for phrase in where + expect:
            assert phrase in output, f"{command}: {phrase!r} not in\n{output[:3000]}"
        assert seconds <= BUDGET_S + SLACK_S, f"{command} took {seconds:.1f} s"
        assert len(output) <= 5000, output[:500]
        files = {}  # made once


def test_a_lora_of_the_models_family_passes(tmp_path, monkeypatch, capsys):
    """The control: an SD 1.5 LoRA (its metadata and its 768-wide cross-attention) on an
    SD 1.5 file validates."""
    files = {"model.safetensors": sparse_safetensors(SD1), "p.yaml": with_lora(),
             "style.safetensors": lora({KOHYA_SD1: (768, 320)}, {"ss_base_model_version": "sd_v1"})}
    code, output, _ = run_case(tmp_path, files, ["validate", "p.yaml"], monkeypatch, capsys)
    assert code == 0, output


# --- model folders: a symlink loop, a crowd, a name two folders have --------------------------------


def a1111_tree(root: Path, models: dict[str, Any]) -> None:
    for rel, make in models.items():
        path = root / "models" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path, root)


def test_a_symlink_loop_in_a_model_folder_is_left_out_with_a_note(tmp_path, monkeypatch, capsys):
    webui = tmp_path / "webui"
    a1111_tree(webui, {"Stable-diffusion/sd15/dreamshaper_8.safetensors": sparse_safetensors(SD1)})
    checkpoints = webui / "models" / "Stable-diffusion"
    (checkpoints / "sd15" / "back").symlink_to(checkpoints, target_is_directory=True)
    (checkpoints / "self").symlink_to(checkpoints / "self")
    code, output, seconds = run_case(tmp_path, {}, ["models", "list", "--models", str(webui)], monkeypatch, capsys)
    assert code == 0 and "sd15/dreamshaper_8" in output and "symbolic link loop" in output, output
    assert seconds <= BUDGET_S + SLACK_S
    files = {"p.yaml": pipeline(model="dreamshaper_8")}
    code, output, seconds = run_case(tmp_path, files, ["validate", "p.yaml", "--models", str(webui)], monkeypatch,
                                     capsys)
    assert code == 0 and seconds <= BUDGET_S + SLACK_S, output


def test_a_folder_of_too_many_files_is_cut_with_a_note_and_a_lookup_stays_quick(tmp_path, monkeypatch, capsys):
    """100,000 files, scaled down: the walk's bound (MAX_SCAN_ENTRIES, 20,000 entries a kind
    folder) set to 500 over 1,500 files. What was looked at before the bound is listed."""
    from studio.models import scan

    monkeypatch.setattr(scan, "MAX_SCAN_ENTRIES", 500)
    loras = tmp_path / "crowd" / "models" / "Lora"
    loras.mkdir(parents=True)
    for n in range(1500):
        os.close(os.open(loras / f"x{n:05d}.safetensors", os.O_CREAT | os.O_WRONLY, 0o644))
    code, output, seconds = run_case(tmp_path, {}, ["models", "list", "--kind", "lora", "--json", "--models",
                                                    str(tmp_path / "crowd")], monkeypatch, capsys)
    assert code == 0 and "more than Studio looks through (over 500 entries" in output, output[-2000:]
    assert 0 < output.count('"kind": "lora"') <= 500 and seconds <= BUDGET_S + SLACK_S
    files = {"p.yaml": pipeline(model="model.safetensors", loras=[{"name": "not_there"}]),
             "model.safetensors": sparse_safetensors(SD1)}
    code, output, seconds = run_case(tmp_path, files, ["validate", "p.yaml", "--models", str(tmp_path / "crowd")],
                                     monkeypatch, capsys)
    assert code == 2 and "not_there" in output and "steps[0].with.loras" in output and seconds <= BUDGET_S + SLACK_S


def test_a_name_two_folders_have_says_which_was_taken_and_why(tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "webui", tmp_path / "comfy"
    a1111_tree(first, {"Stable-diffusion/dreamshaper_8.safetensors": sparse_safetensors(SD1)})
    a1111_tree(second, {"checkpoints/dreamshaper_8.safetensors": sparse_safetensors(SD1)})
    argv = ["validate", "p.yaml", "--models", str(first), "--models", str(second)]
    code, output, _ = run_case(tmp_path, {"p.yaml": pipeline(model="dreamshaper_8")}, argv, monkeypatch, capsys)
    assert code == 0, output
    taken = str(first / "models" / "Stable-diffusion" / "dreamshaper_8.safetensors")
    assert taken in output and str(second / "models" / "checkpoints") in output, output
    assert "folder 1 of 2" in output, output


# --- studio import: infotexts and ComfyUI graphs ----------------------------------------------------

COMFY_CYCLE = {
    "1": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    "2": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 7, "sampler_name": "euler",
                                               "scheduler": "normal", "denoise": 1, "model": ["4", 0],
                                               "positive": ["5", 0], "negative": ["5", 0], "latent_image": ["6", 0]}},
    "4": {"class_type": "LoraLoader", "inputs": {"lora_name": "a", "strength_model": 1, "strength_clip": 1,
                                                 "model": ["7", 0]}},
    "7": {"class_type": "LoraLoader", "inputs": {"lora_name": "b", "strength_model": 1, "strength_clip": 1,
                                                 "model": ["4", 0]}},
}
IMPORT_CASES = [
    ("infotext-too-large", "a1111.txt", b"cat\n" + b"a" * (300 * 2**10), ("a1111.txt", "at most 256 KB")),
    ("infotext-not-utf8", "a1111.txt", bytes(range(256)) * 4, ("a1111.txt", "not UTF-8")),
    ("infotext-without-parameters", "a1111.txt", b"just a prompt\nand more", ("a1111.txt", "not an A1111 infotext")),
    ("infotext-bad-steps", "a1111.txt", b"cat\nSteps: many, Sampler: Euler, Seed: 1",
     ("a1111.txt", "infotext key 'Steps' is 'many'")),
    ("graph-cyclic", "graph.json", json.dumps(COMFY_CYCLE).encode(), ("graph.json", "cycle")),
    ("graph-huge", "graph.json", json.dumps({str(i): {"class_type": "Note", "inputs": {}}
                                             for i in range(5000)}).encode(), ("graph.json", "5,000 nodes")),
    ("graph-nested", "graph.json", b"{" * 100_000, ("graph.json", "not JSON")),
    ("graph-malformed-node", "graph.json", b'{"1": {"inputs": {}}}', ("graph.json", "not {class_type, inputs}")),
    ("graph-dangling-link", "graph.json", json.dumps({**COMFY_CYCLE, "7": {**COMFY_CYCLE["7"], "inputs": {
        **COMFY_CYCLE["7"]["inputs"], "model": ["99", 0]}}}).encode(), ("graph.json", "not a link to a node")),
]


@pytest.mark.parametrize("name,file,content,expect", IMPORT_CASES, ids=[c[0] for c in IMPORT_CASES])
def test_a_bad_infotext_or_graph_is_refused_by_studio_import(name, file, content, expect, tmp_path, monkeypatch,
                                                             capsys):
    code, output, seconds = run_case(tmp_path, {file: content}, ["import", file, "-o", "out.yaml"], monkeypatch,
                                     capsys)
    assert code == 2 and not (tmp_path / "out.yaml").exists(), output
    assert all(phrase in output for phrase in expect), output[:3000]
    assert seconds <= 1.0 + SLACK_S and len(output) <= 3000


# --- through the real command line: memory bounds -----------------------------------------------------

def two_gb_text(path: Path, root: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(2 * 2**30)


CLI_CASES = [
    Case("models", "header-claims-a-terabyte", ["validate", "p.yaml"],
         files={"model.safetensors": struct.pack("<Q", 2**40) + b"{}", "p.yaml": pipeline(model="model.safetensors")},
         where=MODEL, expect=("header claims",)),
    Case("models", "ckpt-would-run-code", ["run", "p.yaml"],
         files={"model.ckpt": pickle_with_code, "p.yaml": pipeline(model="model.ckpt")},
         where=("p.yaml:", "steps[0].with.model"), expect=("pickled code",), budget_s=BUDGET_S),
    Case("import", "a-2-gb-infotext", ["import", "a1111.txt", "-o", "out.yaml"], files={"a1111.txt": two_gb_text},
         where=("a1111.txt",), expect=("Not read",), writes="nothing"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_hostile_models_cli(case: Case, tmp_path: Path) -> None:
    started = time.monotonic()
    check_case(case, tmp_path)
    assert time.monotonic() - started < 30


def test_a_lora_of_another_family_on_a_model_folder_says_what_it_was_made_for(tmp_path, monkeypatch, capsys):
    """A diffusers folder has its layers matched one by one; the refusal names the family
    the LoRA's own tensors show."""
    files = {"style.safetensors": lora({KOHYA_XL: (2048, 640)}), "p.yaml": with_lora("default")}
    code, output, _ = run_case(tmp_path, files, ["validate", "p.yaml"], monkeypatch, capsys)
    assert code == 2 and all(phrase in output for phrase in LORA + (
        "does not fit this model", "It was made for Stable Diffusion XL (its cross-attention layers read 2048-wide")), \
        output
