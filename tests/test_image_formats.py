"""Image outputs in PNG, JPEG or WebP (`format:` and `quality:`): the files, their media
types, what downstream steps and the step cache make of them, A1111's parameters as EXIF
UserComment, Studio's provenance read back and re-opened, and the refusals, located."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from studio.cli import cli
from studio.errors import UserError
from studio.interop.a1111 import parse
from studio.interop.imagetext import read_texts
from studio.runs.provenance import MAX_PROVENANCE, read_provenance_strict
from studio.testing import run_yaml

CARDS = """
    name: formats
    format: jpeg
    quality: 70
    steps:
      - id: card
        uses: image.title
        with: {text: "a <b> & c", width: 48, height: 32}
      - id: small
        uses: image.resize
        format: webp
        with: {image: "${steps.card.outputs.image}", width: 24, height: 16}
      - id: exact
        uses: image.resize
        format: webp
        quality: 100
        with: {image: "${steps.small.outputs.image}", width: 24, height: 16}
      - id: back
        uses: image.resize
        format: png
        with: {image: "${steps.exact.outputs.image}", width: 12, height: 8}
"""


def _invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_each_step_writes_its_format_and_the_next_step_reads_it(tmp_path):
    run = run_yaml(CARDS, tmp_path)
    art = {item.step_id: item.artifacts["image"] for item in run.items.values()}
    assert all(item.status == "done" for item in run.items.values()), [i.error for i in run.items.values()]
    assert {s: (a.path.suffix, a.media_type) for s, a in art.items()} == {
        "card": (".jpg", "image/jpeg"), "small": (".webp", "image/webp"),
        "exact": (".webp", "image/webp"), "back": (".png", "image/png")}
    assert Image.open(art["card"].path).format == "JPEG" and Image.open(art["small"].path).format == "WEBP"
    assert Image.open(art["back"].path).size == (12, 8)
    manifest = json.loads(run.manifest_path.read_text())
    types = {s: [a["media_type"] for a in step["items"][0]["artifacts"].values()] for s, step in manifest["steps"].items()}
    assert types == {"card": ["image/jpeg"], "small": ["image/webp"], "exact": ["image/webp"], "back": ["image/png"]}
    # the provenance, back from each format; XMP's "<" and "&" as JSON escapes, read back as such
    for step in ("card", "small", "back"):
        prov = read_provenance_strict(art[step].path)
        assert prov["step"] == step and prov["pipeline"] == "formats"
    assert read_provenance_strict(art["card"].path)["params"]["text"] == "a <b> & c"
    # the cache knows formats apart: the same pipeline again is all cached, another quality is not
    again = run_yaml(CARDS, tmp_path)
    assert {i.status for i in again.items.values()} == {"cached"}
    other = run_yaml(CARDS.replace("quality: 70", "quality: 71"), tmp_path)
    assert other.step("card")[0].status == "done" and other.step("small")[0].status == "done"


def test_lossless_webp_keeps_the_exact_pixels_and_alpha(tmp_path):
    from studio.execute.artifacts import write_jpeg, write_webp

    import numpy as np

    pixels = Image.new("RGBA", (16, 16), (10, 200, 30, 255))
    pixels.paste((250, 5, 5, 0), (0, 0, 8, 16))  # transparent, its colour kept too (exact)
    write_webp(pixels, tmp_path / "x.webp", {"a": 1}, quality=100)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.webp")), np.asarray(pixels))
    write_jpeg(pixels, tmp_path / "x.jpg", {"a": 1}, quality=95)
    flat = Image.open(tmp_path / "x.jpg")
    assert flat.mode == "RGB" and min(flat.getpixel((3, 8))) > 245  # drawn over white
    # a provenance past one comment segment's 64 KB continues in the next ones
    large = {"step": "a", "params": {"prompt": "<&>" + "x" * 150_000}}
    write_jpeg(pixels, tmp_path / "large.jpg", large)
    assert read_provenance_strict(tmp_path / "large.jpg") == large


def test_reopening_a_jpeg_or_webp_runs_the_same_run_again(tmp_path):
    (tmp_path / "p.yaml").write_text(CARDS.replace("\n    ", "\n"), encoding="utf-8")
    code, output = _invoke("run", tmp_path / "p.yaml", "--out", tmp_path / "one", "--quiet")
    assert code == 0, output
    first = Path(output.strip().splitlines()[-1])
    for name in ("card/image.jpg", "small/image.webp"):
        code, output = _invoke("run", first / name, "--out", tmp_path / name.split("/")[0], "--quiet", "--no-cache")
        assert code == 0, output
        again = Path(output.strip().splitlines()[-1])
        for made in ("card/image.jpg", "small/image.webp", "exact/image.webp", "back/image.png"):
            assert _digest(again / made) == _digest(first / made), made
    code, output = _invoke("export", first / "small/image.webp")
    assert code == 0 and "format: webp" in output and "quality: 70" in output, output


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _user_comment_as_piexif_reads_it(path: Path) -> str:
    """EXIF UserComment the way A1111 reads it (piexif.load, then UserComment.load): the
    tag typed UNDEFINED (7), the code UNICODE, then UTF-16 big-endian."""
    image = Image.open(path)
    exif = image.info["exif"]
    tiff = exif[6:] if exif.startswith(b"Exif\0\0") else exif
    order = ">" if tiff[:2] == b"MM" else "<"
    ifd0 = struct.unpack(order + "I", tiff[4:8])[0]
    entries = {}
    for offset in (ifd0,):
        count = struct.unpack(order + "H", tiff[offset:offset + 2])[0]
        for i in range(count):
            tag, kind, n, value = struct.unpack(order + "HHII", tiff[offset + 2 + 12 * i:offset + 14 + 12 * i])
            entries[tag] = (kind, n, value)
    offset = entries[0x8769][2]
    count = struct.unpack(order + "H", tiff[offset:offset + 2])[0]
    for i in range(count):
        tag, kind, n, value = struct.unpack(order + "HHII", tiff[offset + 2 + 12 * i:offset + 14 + 12 * i])
        if tag == 0x9286:
            assert kind == 7, "UserComment must be UNDEFINED, as piexif writes and reads it"
            raw = tiff[value:value + n]
            assert raw[:8] == b"UNICODE\0"
            return raw[8:].decode("utf_16_be")
    raise AssertionError("no UserComment")


def test_a1111_parameters_in_jpeg_and_webp_equal_the_pngs(tmp_path):
    run = run_yaml("""
        name: infotext-formats
        steps:
          - id: png
            uses: image.diffusion
            with: {prompt: "red heart, big: yes ✓", negative_prompt: "dark", steps: 1, seed: 7, width: 32, height: 32}
          - id: jpeg
            uses: image.diffusion
            format: jpeg
            with: {prompt: "red heart, big: yes ✓", negative_prompt: "dark", steps: 1, seed: 7, width: 32, height: 32}
          - id: webp
            uses: image.diffusion
            format: webp
            quality: 80
            with: {prompt: "red heart, big: yes ✓", negative_prompt: "dark", steps: 1, seed: 7, width: 32, height: 32}
    """, tmp_path)
    paths = {s: run.step(s)[0].artifacts["image"].path for s in ("png", "jpeg", "webp")}
    parameters = Image.open(paths["png"]).info["parameters"]
    assert parameters.startswith("red heart, big: yes ✓\nNegative prompt: dark\nSteps: 1")
    for fmt in ("jpeg", "webp"):
        assert _user_comment_as_piexif_reads_it(paths[fmt]) == parameters, fmt
        kind, texts = read_texts(paths[fmt], ("parameters",))  # what `studio import` reads
        assert kind == fmt and texts["parameters"] == parameters
        assert parse(texts["parameters"], paths[fmt].name).pairs["Seed"] == "7"
        assert read_provenance_strict(paths[fmt])["step"] == fmt
    code, output = _invoke("import", paths["jpeg"])
    assert code == 0 and "red heart" in output, output


BAD = {
    "unknown-format": ("format: gif\n", "", "F:2: format: got 'gif'; allowed: png | jpeg | webp"),
    "jpg-spelling": ("", "    format: jpg\n", "F:5: steps[0].format (step 'a'): got 'jpg'; allowed: png | jpeg | webp "
                                             "(the file format of this step's image outputs; JPEG is spelt jpeg)"),
    "quality-zero": ("format: jpeg\nquality: 0\n", "", "F:3: quality: got 0; allowed: an integer from 1 to 100"),
    "quality-101": ("", "    format: webp\n    quality: 101\n", "F:6: steps[0].quality (step 'a'): got 101; allowed"),
    "quality-text": ("", "    format: webp\n    quality: high\n", "got 'high'; allowed: an integer from 1 to 100"),
    "quality-bool": ("", "    format: webp\n    quality: true\n", "got True; allowed: an integer from 1 to 100"),
    "quality-with-png": ("", "    format: png\n    quality: 80\n",
                         "F:6: steps[0].quality (step 'a'): quality: applies to jpeg and webp, but format: png writes png"),
    "step-quality-png-default": ("", "    quality: 80\n", "F:5: steps[0].quality (step 'a'): quality: applies to jpeg "
                                                         "and webp, but this step's images are"),
    "pipeline-quality-all-png": ("quality: 80\n", "", "F:2: quality: quality: applies to jpeg and webp, but every step "
                                                      "writes png"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_format_keys_are_refused_where_they_are(case, tmp_path):
    top, step, expected = BAD[case]
    text = f"name: x\n{top}steps:\n  - id: a\n    uses: image.title\n{step}    with: {{text: hi}}\n"
    path = tmp_path / "F"
    path.write_text(text, encoding="utf-8")
    code, output = _invoke("validate", path)
    assert code == 2 and "Traceback" not in output, output
    assert expected in output.replace(str(path), "F"), output


def test_format_on_a_step_that_writes_no_image_is_refused(tmp_path):
    path = tmp_path / "F"
    path.write_text("name: x\nformat: webp\nsteps:\n  - id: t\n    uses: text.template\n    format: jpeg\n"
                    "    with: {template: hi}\n", encoding="utf-8")
    code, output = _invoke("validate", path)
    assert code == 2 and "steps[0].format (step 't'): format: applies to image outputs, and text.template " \
                         "writes text (text/plain)" in output, output
    # the pipeline's own default does not reach a step without images: no refusal for it
    path.write_text("name: x\nformat: webp\nsteps:\n  - id: t\n    uses: text.template\n    with: {template: hi}\n",
                    encoding="utf-8")
    assert _invoke("validate", path)[0] == 0


# --- hostile JPEG and WebP files, re-opened --------------------------------------------------


def _jpeg(*segments: bytes) -> bytes:
    """A real 8 x 8 JPEG with `segments` after its start-of-image marker."""
    import io

    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="JPEG")
    data = out.getvalue()
    return data[:2] + b"".join(segments) + data[2:]


def _com(payload: bytes) -> bytes:
    return b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload


def _webp(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff(kind: bytes, data: bytes, size: int | None = None) -> bytes:
    return kind + struct.pack("<I", len(data) if size is None else size) + data + b"\0" * (len(data) & 1)


ENTITY_BOMB = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
               b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><studio:provenance>&c;&c;&c;&c;</studio:provenance>')
HOSTILE = {
    "jpeg-cut-in-comment": ("x.jpg", lambda: _jpeg(_com(b"studio:{}"))[:9], "cut short"),
    "jpeg-wrong-magic": ("x.jpg", lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a JPEG"),
    "jpeg-not-json": ("x.jpg", lambda: _jpeg(_com(b"studio:{nope")), "not valid JSON"),
    "jpeg-not-ascii": ("x.jpg", lambda: _jpeg(_com(b'studio:{"a": "\xff"}')), "Studio does not write"),
    "jpeg-huge-comments": ("x.jpg", lambda: _jpeg(*[_com(b"studio:" + b" " * 65_000)] * (MAX_PROVENANCE // 65_000 + 1)),
                           "MB; the provenance Studio writes is at most"),
    "jpeg-foreign-comments-of-6mb": ("x.jpg", lambda: _jpeg(*[_com(b"x" * 65_000)] * (2 * MAX_PROVENANCE // 65_000 + 1)),
                                     "its JPEG comment (COM) data is"),
    "jpeg-2000-segments": ("x.jpg", lambda: _jpeg(*[_com(b"x")] * 2000), "more than 1,000 JPEG segments"),
    "jpeg-foreign": ("x.jpg", lambda: _jpeg(_com(b"made by a camera")), "carries no Studio pipeline"),
    "webp-wrong-magic": ("x.webp", lambda: b"RIFF\0\0\0\0WAVEfmt ", "not a WebP"),
    "webp-xmp-bomb": ("x.webp", lambda: _webp(_riff(b"XMP ", ENTITY_BOMB)), "holds b'&'"),
    "webp-xmp-unclosed": ("x.webp", lambda: _webp(_riff(b"XMP ", b"<studio:provenance>{}")), "not closed"),
    "webp-huge-xmp": ("x.webp", lambda: _webp(_riff(b"XMP ", b" " * (MAX_PROVENANCE * 2))), "Not read"),
    "webp-xmp-past-end": ("x.webp", lambda: _webp(_riff(b"XMP ", b"<x/>", size=10**6)), "past the end"),
}


def test_import_refuses_a_huge_exif_and_reads_a_damaged_file_in_words(tmp_path):
    (tmp_path / "x.webp").write_bytes(_webp(_riff(b"EXIF", b"Exif\0\0" + b"\0" * 2**20)))
    with pytest.raises(UserError, match="an infotext's is a few KB"):
        read_texts(tmp_path / "x.webp", ("parameters",))
    (tmp_path / "x.jpg").write_bytes(_jpeg(b"\xff\xe1" + struct.pack(">H", 40) + b"Exif\0\0MM\0\x2a" + b"\xff" * 28))
    try:  # a damaged EXIF block: no parameters, or a refusal naming the file
        assert "parameters" not in read_texts(tmp_path / "x.jpg", ("parameters",))[1]
    except UserError as exc:
        assert "x.jpg" in str(exc)


def test_damaged_copies_of_studios_jpeg_and_webp_are_read_or_refused_never_crash(tmp_path):
    import random

    from studio.execute.artifacts import write_jpeg, write_webp

    image = Image.new("RGB", (8, 8), "red")
    image.info["parameters"] = "cat\nSteps: 2, Seed: 1"
    write_jpeg(image, tmp_path / "good.jpg", {"step": "a", "x": "y" * 300})
    write_webp(image, tmp_path / "good.webp", {"step": "a", "x": "y" * 300})
    rng = random.Random(29)
    for name in ("good.jpg", "good.webp"):
        good = bytearray((tmp_path / name).read_bytes())
        for i in range(150):
            bad = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            if i % 3 == 0:
                bad = bad[:rng.randrange(len(bad))]
            path = tmp_path / f"bad{i}{name[4:]}"
            path.write_bytes(bytes(bad))
            for read in (read_provenance_strict, lambda p: read_texts(p, ("parameters",))):
                try:
                    read(path)
                except UserError:
                    pass


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_jpeg_and_webp_are_refused_in_words(case, tmp_path):
    name, build, expected = HOSTILE[case]
    path = tmp_path / name
    path.write_bytes(build())
    from studio.runs.reopen import reopen

    with pytest.raises(UserError, match=re.escape(expected)):
        reopen(path)
    code, output = _invoke("export", path)
    assert code == 2 and "Traceback" not in output and name in output and expected in output, output
