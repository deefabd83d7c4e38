"""Hostile LoRA files, masks and init images given to image.diffusion, and its absent
prompt.

Every damaged file is refused by `studio validate` (exit 2, no traceback, within the
validate budget), naming the pipeline file, the parameter, the file and the field or
tensor; `studio run` refuses it the same way before anything runs, and writes no run
folder. The safetensors cases go through the header check every safetensors file
Studio reads shares (models, LoRAs, VAEs, feature networks).

Most cases run in process (click's CliRunner: fast); a few run through the real
command line under a memory limit (test_hostile.check_case), where time and memory are
the point. Only the last tests import torch.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from test_hostile import BUDGET_S, SLACK_S, Case, _chunk, _Pwn, check_case, png

REPO = Path(__file__).resolve().parents[1]
OUTLINE = REPO / "plugins/studio_image/weights/lora-outline/pytorch_lora_weights.safetensors"
LAYER = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
A, B = f"{LAYER}.lora_A.weight", f"{LAYER}.lora_B.weight"


# --- safetensors files by hand (each exactly as broken as meant) -------------------------


def safetensors(header: dict[str, Any] | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype: str, shape: list, begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def pair(values_a: np.ndarray | None = None, values_b: np.ndarray | None = None) -> tuple[dict, bytes]:
    """A valid LoRA layer for the default model (rank 8, 64 features): header and data."""
    a = np.full((8, 64), 0.01, np.float32) if values_a is None else values_a
    b = np.full((64, 8), 0.01, np.float32) if values_b is None else values_b
    return ({A: entry("F32", list(a.shape), 0, a.nbytes), B: entry("F32", list(b.shape), a.nbytes, a.nbytes + b.nbytes)},
            a.tobytes() + b.tobytes())


def lora(change: Callable[[dict], Any] | None = None, data_change: Callable[[bytes], bytes] | None = None) -> bytes:
    """The valid pair with its header changed by `change` (in place) and its data by `data_change`."""
    header, data = pair()
    if change:
        change(header)
    return safetensors(header, data_change(data) if data_change else data)


def set_field(name: str, field: str, value: Any) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        header[name][field] = value
    return change


def pipeline(with_: dict[str, Any]) -> str:
    return json.dumps({"name": "t", "device": "cpu", "steps": [{"id": "a", "uses": "image.diffusion", "with": with_}]})


def with_lora(name: str = "style.safetensors", **more: Any) -> str:
    return pipeline({"prompt": "red heart", "steps": 2, "loras": [{"path": name}], **more})


# --- PNG files by hand ------------------------------------------------------------------


def png_rows(w: int, h: int, rows: int, *, colour: int = 2, bits: int = 8, filter_type: int = 0,
             interlace: int = 0, data: bytes | None = None) -> bytes:
    """A PNG declaring w x h whose image data holds `rows` rows (`data`: the IDAT as given)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = bytes([filter_type]) + b"\x80" * ((w * channels * bits + 7) // 8)
    idat = zlib.compress(row * rows) if data is None else data
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, colour, 0, 0, interlace))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def png_adam7(w: int, h: int, keep: float = 1.0) -> bytes:
    """An interlaced (Adam7) RGB PNG, its passes' rows filter type 0, cut to `keep` of its data."""
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        pw, ph = max(0, -(-(w - x0) // dx)), max(0, -(-(h - y0) // dy))
        if pw and ph:
            raw += (b"\x00" + b"\x60" * (3 * pw)) * ph
    return png_rows(w, h, 0, interlace=1, data=zlib.compress(raw[:int(len(raw) * keep)]))


def grey_png(w: int, h: int, value: int = 255, mode: str = "L") -> Callable[[Path, Path], None]:
    def make(path: Path, root: Path) -> None:
        from PIL import Image

        Image.new(mode, (w, h), value).save(path)
    return make


def big_mask(path: Path, root: Path) -> None:
    """An 8192 x 8192 16-bit mask, white on its top half."""
    from PIL import Image

    array = np.zeros((8192, 8192), np.uint16)
    array[:4096] = 65535
    Image.fromarray(array).save(path, compress_level=1)


def fifo(path: Path, root: Path) -> None:
    os.mkfifo(path)


def sparse(size: int) -> Callable[[Path, Path], None]:
    def make(path: Path, root: Path) -> None:
        header, data = pair()
        path.write_bytes(safetensors(header, data))
        with open(path, "r+b") as f:
            f.truncate(size)
    return make


def _dropped(field: str) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        del header[A][field]
    return change


def _gap(header: dict) -> None:
    header[B]["data_offsets"] = [2056, 4104]


def _overlap(header: dict) -> None:
    header[B]["data_offsets"] = [2040, 4088]


NAN_A = np.full((8, 64), np.nan, np.float32)
INF_ONE = np.full((64, 8), 0.01, np.float32)
INF_ONE[3, 5] = np.inf


def bf16(values: np.ndarray) -> bytes:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()


# --- the in-process corpus: (name, files, phrases the message must hold) -----------------

LORA_WHERE = ("p.yaml:", "steps[0].with.loras", "style.safetensors")

HEADER_CASES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("shape-an-int", lora(set_field(A, "shape", 5)), ('"shape": 5', "lora_A.weight")),
    ("shape-a-string", lora(set_field(A, "shape", "8x64")), ('"shape": \'8x64\'',)),
    ("shape-floats", lora(set_field(A, "shape", [8.0, 64])), ('"shape": [8.0, 64]',)),
    ("shape-bools", lora(set_field(A, "shape", [True, 64])), ('"shape": [True, 64]',)),
    ("shape-negative", lora(set_field(A, "shape", [-8, -64])), ('"shape": [-8, -64]',)),
    ("shape-2-62", lora(set_field(A, "shape", [2**62])), ("shape [4611686018427387904]", "does not match its data")),
    ("shape-huge-product", lora(set_field(A, "shape", [2**40, 2**40, 0])), ("more elements than any tensor",)),
    ("shape-40-dims", lora(set_field(A, "shape", [1] * 40)), ("40 dimensions",)),
    ("dtype-unknown", lora(set_field(A, "dtype", "Q7")), ('"dtype": \'Q7\'', "F32")),
    ("dtype-not-text", lora(set_field(A, "dtype", 5)), ('"dtype": 5',)),
    ("dtype-sub-byte", lora(set_field(A, "dtype", "F4")), ('"dtype": \'F4\'',)),
    ("f16-label-on-f32-bytes", lora(lambda h: [e.update(dtype="F16") for e in h.values()]),
     ("is F16 of shape [8, 64], 1,024 bytes", "hold 2,048")),
    ("f64-label-on-f32-bytes", lora(set_field(A, "dtype", "F64")), ("is F64 of shape [8, 64]",)),
    ("offsets-a-string", lora(set_field(A, "data_offsets", "0-2048")), ('"data_offsets": \'0-2048\'',)),
    ("offsets-one-number", lora(set_field(A, "data_offsets", [0])), ('"data_offsets": [0]',)),
    ("offsets-reversed", lora(set_field(A, "data_offsets", [2048, 0])), ("begin <= end",)),
    ("offsets-past-the-data", lora(set_field(B, "data_offsets", [2048, 9000])), ("lies outside its 4,096 bytes",)),
    ("offsets-with-a-gap", lora(_gap, lambda d: d + bytes(8)), ("begins at byte 2,056", "without gaps or overlaps")),
    ("offsets-overlapping", lora(_overlap), ("begins at byte 2,040",)),
    ("bytes-after-the-tensors", lora(data_change=lambda d: d + bytes(100)), ("tensors hold 4,096 bytes", "4,196 bytes of data")),
    ("entry-a-list", lora(lambda h: h.update({A: [0, 2048]})), ("is described by [0, 2048]",)),
    ("entry-without-shape", lora(_dropped("shape")), ("has no 'shape'",)),
    ("metadata-not-strings", lora(lambda h: h.update({"__metadata__": {"format": 5}})), ('"__metadata__"',)),
    ("duplicate-tensor-name", safetensors(json.dumps(pair()[0]).encode()[:-1] + b', "' + A.encode() + b'": '
                                          + json.dumps(pair()[0][A]).encode() + b"}", pair()[1]),
     ("appears twice",)),
    ("nan-in-the-header", safetensors(json.dumps(pair()[0]).replace("[8, 64]", "[NaN, 64]").encode(), pair()[1]),
     ("NaN is not a JSON number",)),
    ("header-not-utf8", safetensors(b'{"\xff": 1}', b""), ("not a complete safetensors file",)),
    ("header-longer-than-file", struct.pack("<Q", 2**40) + b"{}", ("header claims 1,099,511,627,776 bytes",)),
    ("a-10000-digit-number", safetensors(json.dumps(pair()[0]).replace("[8, 64]", "[" + "9" * 10_000 + "]").encode(),
                                         pair()[1]), ("not a complete safetensors file",)),
    ("nested-100000-deep", safetensors(b"[" * 100_000 + b"]" * 100_000, b""), ("nested too deeply",)),
]

CONTENT_CASES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("all-nan-f32", safetensors(*pair(NAN_A)), ("holds NaN or Inf values", "lora_A.weight", "F32")),
    ("one-inf-f32", safetensors(*pair(values_b=INF_ONE)), ("holds NaN or Inf values", "lora_B.weight")),
    ("nan-bf16", safetensors({A: entry("BF16", [8, 64], 0, 1024), B: entry("BF16", [64, 8], 1024, 2048)},
                             bf16(NAN_A) + bf16(INF_ONE)), ("holds NaN or Inf values", "BF16")),
    ("integer-weights", safetensors({A: entry("I32", [8, 64], 0, 2048), B: entry("I32", [64, 8], 2048, 4096)},
                                    bytes(4096)), ("holds I32 numbers", "floating point")),
    ("lora-a-without-b", safetensors({A: entry("F32", [8, 64], 0, 2048)}, bytes(2048)),
     ("without its up matrix", "lora_A.weight")),
    ("ranks-differ", safetensors({A: entry("F32", [8, 64], 0, 2048), B: entry("F32", [64, 4], 2048, 3072)},
                                 bytes(3072)), ("of rank 8", "of rank 4")),
    ("one-dimensional", safetensors({A: entry("F32", [512], 0, 2048), B: entry("F32", [64, 8], 2048, 4096)},
                                    bytes(4096)), ("of shape [512]", "2-D")),
    ("empty-file", b"", ("not a complete safetensors file",)),
]


def invoke(args: list[str], cwd: Path):
    from studio.cli import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        start = time.monotonic()
        result = CliRunner().invoke(cli, args)
        return result, time.monotonic() - start
    finally:
        os.chdir(old)


def refused_before_the_run(tmp: Path, where: tuple[str, ...], expect: tuple[str, ...]) -> str:
    """validate and run both exit 2 at once with the place and the reason; nothing written."""
    before = sorted(p.name for p in tmp.iterdir())
    said = ""
    for command in ("validate", "run"):
        result, seconds = invoke([command, "p.yaml"], tmp)
        output = result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"{command}: uncaught {type(result.exception).__name__}: {str(result.exception)[:300]}"
        assert "Traceback" not in output, output[:3000]
        assert result.exit_code == 2, f"{command}: exit {result.exit_code}\n{output[:3000]}"
        assert seconds <= BUDGET_S + SLACK_S, f"{command} took {seconds:.1f} s\n{output[:500]}"
        for phrase in where + expect:
            assert phrase in output, f"{command}: {phrase!r} not in\n{output[:3000]}"
        assert len(output) <= 5000, output[:500]
        said = output
    assert sorted(p.name for p in tmp.iterdir()) == before, "a refused pipeline wrote files"
    return said


@pytest.mark.parametrize("name,content,expect", HEADER_CASES + CONTENT_CASES,
                         ids=[c[0] for c in HEADER_CASES + CONTENT_CASES])
def test_a_damaged_lora_is_refused_before_the_run(name: str, content: bytes, expect: tuple[str, ...],
                                                   tmp_path: Path) -> None:
    (tmp_path / "style.safetensors").write_bytes(content)
    (tmp_path / "p.yaml").write_text(with_lora())
    refused_before_the_run(tmp_path, LORA_WHERE, expect)


def test_the_shared_header_check_refuses_a_damaged_model_component_too(tmp_path: Path) -> None:
    """Not only LoRAs: a model folder whose UNet weights say F16 over F32 bytes."""
    import shutil

    model = shutil.copytree(REPO / "plugins/studio_image/weights/digits", tmp_path / "digits")
    weights = next((model / "unet").glob("*.safetensors"))
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    header[name]["dtype"] = "F16"
    weights.write_bytes(safetensors(header, data[8 + length:]))
    (tmp_path / "p.yaml").write_text(pipeline({"model": "digits", "steps": 2}))
    refused_before_the_run(tmp_path, ("p.yaml:", "steps[0].with.model", weights.name),
                           (f"tensor {name!r} is F16 of shape", "copy or save the weights again"))


LORA_PATH_CASES: list[tuple[str, Callable[[Path], None], str, tuple[str, ...]]] = [
    ("a-fifo", lambda p: fifo(p / "style.safetensors", p), "style.safetensors", ("is not a file",)),
    ("a-folder", lambda p: (p / "style.safetensors").mkdir(), "style.safetensors", ("is not a file",)),
    ("a-link-to-dev-zero", lambda p: (p / "style.safetensors").symlink_to("/dev/zero"), "style.safetensors",
     ("is not a file",)),
    ("over-4-gb", lambda p: sparse(5 * 2**30)(p / "style.safetensors", p), "style.safetensors",
     ("is 5.0 GB", "is it a model's weights?")),
    ("a-nul-byte", lambda p: None, "style\x00.safetensors", ("not found",)),
    ("a-pickle", lambda p: (p / "style.ckpt").write_bytes(b"\x80\x04K\x01."), "style.ckpt",
     ("is a .ckpt file", "never a pickle")),
    ("a-pickle-with-code", lambda p: (p / "style.pt").write_bytes(pickle.dumps(_Pwn(str(p / "pwned")))), "style.pt",
     ("is a .pt file (its pickle would call posix.system)",)),
    ("a-pickle-of-10-million-opcodes", lambda p: (p / "style.pt").write_bytes(b"\x80\x04" + b")0" * 5_000_000 + b"."),
     "style.pt", ("is a .pt file",)),
]


@pytest.mark.parametrize("name,make,given,expect", LORA_PATH_CASES, ids=[c[0] for c in LORA_PATH_CASES])
def test_a_lora_path_that_is_not_a_lora_file_is_refused(name: str, make, given: str, expect: tuple[str, ...],
                                                        tmp_path: Path) -> None:
    make(tmp_path)
    (tmp_path / "p.yaml").write_text(with_lora(given))
    refused_before_the_run(tmp_path, ("p.yaml:", "steps[0].with.loras"), expect)
    assert not (tmp_path / "pwned").exists()


# --- init images and masks ------------------------------------------------------------------

IMAGE_CASES: list[tuple[str, bytes, str, tuple[str, ...]]] = [
    ("init-5-of-32-rows", png_rows(32, 32, 5), "image", ("is truncated: its image data holds 5 of its 32 rows",)),
    ("init-no-rows", png_rows(32, 32, 0), "image", ("holds 0 of its 32 rows",)),
    ("init-16-bit-rgba-cut", png_rows(16, 16, 15, colour=6, bits=16), "image", ("holds 15 of its 16 rows",)),
    ("init-bad-filter-type", png_rows(32, 32, 32, filter_type=9), "image", ("row 1 of its image data has filter type 9",)),
    ("init-not-zlib", png_rows(32, 32, 0, data=b"this is not deflate data" * 4), "image",
     ("not a valid compressed stream",)),
    ("init-interlaced-cut", png_adam7(32, 32, keep=0.5), "image", ("is truncated: its image data holds",)),
    ("mask-3-of-32-rows", png_rows(32, 32, 3, colour=0), "mask", ("is truncated: its image data holds 3 of its 32 rows",)),
]


@pytest.mark.parametrize("name,content,port,expect", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_a_png_whose_image_data_is_short_is_refused_by_validate(name: str, content: bytes, port: str,
                                                                expect: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(content)
    (tmp_path / "good.png").write_bytes(png(32, 32))
    grey_png(32, 32)(tmp_path / "white.png", tmp_path)
    files = {"image": "bad.png", "mask": "white.png"} if port == "image" else {"image": "good.png", "mask": "bad.png"}
    (tmp_path / "p.yaml").write_text(pipeline({"prompt": "x", "steps": 2, **files}))
    refused_before_the_run(tmp_path, ("p.yaml:", f"steps[0].with.{port}", "bad.png"), expect)


def test_whole_pngs_pass_the_image_data_check(tmp_path: Path) -> None:
    from PIL import Image

    from studio.sniff import sniff

    (tmp_path / "adam7.png").write_bytes(png_adam7(37, 23))
    assert Image.open(tmp_path / "adam7.png").load() is not None  # Pillow decodes it: the layout is right
    Image.new("RGBA", (37, 23), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    Image.new("I;16", (9, 7), 300).save(tmp_path / "grey16.png")
    Image.new("1", (13, 5), 1).save(tmp_path / "bits.png")
    Image.new("P", (10, 3), 2).save(tmp_path / "palette.png")
    (tmp_path / "rows.png").write_bytes(png_rows(32, 32, 32))
    for name in ("adam7", "rgba", "grey16", "bits", "palette", "rows"):
        found = sniff(tmp_path / f"{name}.png")
        assert found.ok and not found.deferred, (name, found)


def test_a_large_16_bit_mask_is_validated_within_the_budget(tmp_path: Path) -> None:
    """The 8192 x 8192 16-bit mask of the issue: validate reads its header (and its image
    data within the budget), not its pixels; the real command line, memory-limited."""
    case = Case("mask", "8192-square-16-bit", ["validate", "p.yaml"],
                files={"mask.png": big_mask, "image.png": grey_png(8192, 8192, 128, "RGB"),
                       "p.yaml": pipeline({"prompt": "x", "image": "image.png", "mask": "mask.png", "width": 512,
                                           "height": 512})},
                code=0, expect=("p.yaml: ok",), max_rss_mb=400)
    check_case(case, tmp_path)


def test_a_large_black_mask_passes_validate_and_is_refused_by_the_run_before_sampling(tmp_path: Path) -> None:
    from studio import Artifact, UserError
    from studio_image.diffusion_inputs import MASK_CHECKED_PIXELS, init_problem, prepared_mask

    side = 2560
    assert side * side > MASK_CHECKED_PIXELS
    grey_png(side, side, 0)(tmp_path / "black.png", tmp_path)
    grey_png(side, side, 128, "RGB")(tmp_path / "image.png", tmp_path)
    mask = Artifact(path=tmp_path / "black.png", media_type="image/png", sha256="", size=0)
    image = Artifact(path=tmp_path / "image.png", media_type="image/png", sha256="", size=0)
    start = time.monotonic()
    assert init_problem(image, mask, None, 25, 512, 512, 8) is None  # header facts only
    assert time.monotonic() - start < BUDGET_S
    with pytest.raises(UserError, match="mask is black everywhere"):
        prepared_mask(mask, (512, 512), 0)
    grey_png(side, side, 0, "RGB")(tmp_path / "black-rgb.png", tmp_path)  # read as greys, a band at a time
    with pytest.raises(UserError, match="mask is black everywhere"):
        prepared_mask(Artifact(path=tmp_path / "black-rgb.png", media_type="image/png", sha256="", size=0),
                      (64, 64), 0)


# --- through the real command line: the issue's own examples ---------------------------------

CLI_CASES = [
    Case("lora", "shape-5", ["validate", "p.yaml"],
         files={"style.safetensors": lora(set_field(A, "shape", 5)), "p.yaml": with_lora()},
         where=LORA_WHERE, expect=('"shape": 5',)),
    Case("lora", "f16-on-f32-run", ["run", "p.yaml"],
         files={"style.safetensors": lora(lambda h: [e.update(dtype="F16") for e in h.values()]),
                "p.yaml": with_lora()},
         where=LORA_WHERE, expect=("is F16 of shape",), budget_s=BUDGET_S),
    Case("png", "5-of-32-rows", ["validate", "p.yaml"],
         files={"in.png": png_rows(32, 32, 5), "p.yaml": pipeline({"prompt": "x", "image": "in.png"})},
         where=("p.yaml:", "steps[0].with.image", "in.png"), expect=("holds 5 of its 32 rows",)),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_hostile_lora_cli(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


# --- the absent prompt ---------------------------------------------------------------------


def test_an_absent_prompt_validates_as_the_empty_prompt(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(pipeline({"steps": 2}))
    result, _ = invoke(["validate", "p.yaml"], tmp_path)
    assert result.exit_code == 0, result.output
    from studio_image.diffusion import ImageDiffusion

    assert "absent: the empty prompt" in ImageDiffusion.Params.model_fields["prompt"].description


# --- at run time (torch) ---------------------------------------------------------------------


def test_the_run_refuses_a_nan_lora_too_large_for_validate_naming_the_tensor(tmp_path: Path, monkeypatch) -> None:
    """A LoRA past validate's value check (MAX_VALUES_CHECKED) is checked when the run
    loads it, before any adapter is applied: exit 2 naming the file and the tensor."""
    import studio_image.diffusion_lora as lora_module
    from studio import UserError

    monkeypatch.setattr(lora_module, "MAX_VALUES_CHECKED", 0)
    path = tmp_path / "style.safetensors"
    path.write_bytes(safetensors(*pair(values_b=INF_ONE)))
    entry_ = lora_module.checked(lora_module.Lora(path=str(path)), path)  # validate leaves it to the run
    with pytest.raises(UserError, match=r"holds NaN or Inf values \(tensor '.*lora_B.weight', float32\)") as info:
        lora_module.load_tensors(entry_)
    assert info.value.exit_code == 2 and "style.safetensors" in str(info.value)


def test_nan_from_loras_at_fp32_blames_the_loras_not_the_precision() -> None:
    from types import SimpleNamespace

    import torch

    from studio import UserError
    from studio_image.diffusion import ImageDiffusion
    from studio_image.diffusion_lora import Lora
    from studio_image.diffusion_pipeline import blame_loras

    params = ImageDiffusion.Params.model_construct(
        loras=[Lora(path="/x/style.safetensors", scale=2.0)], lora_scale=3.0)
    with pytest.raises(UserError, match=r"in fp32 with loras '/x/style.safetensors' at scale 6: their weights"):
        blame_loras(params, SimpleNamespace(unet=SimpleNamespace(dtype=torch.float32)))
    blame_loras(params, SimpleNamespace(unet=SimpleNamespace(dtype=torch.float16)))  # fp16: the fp32 advice stands
    blame_loras(ImageDiffusion.Params.model_construct(loras=[], lora_scale=1.0),
                SimpleNamespace(unet=SimpleNamespace(dtype=torch.float32)))
