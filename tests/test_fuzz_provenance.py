"""Property-based fuzzing of the embedded-provenance reader (studio.runs.reopen): whatever a
PNG, WAV or MIDI file carries where Studio puts its provenance (arbitrary bytes, text,
JSON, pipelines, base64 and zlib of anything), and whatever damage a file Studio wrote
suffers (bytes cut, flipped, inserted), re-opening it gives either a Reopened whose
pipeline is within a pipeline file's limits and comes back whole from the YAML that
`studio export` writes, or a UserError naming the file: never another exception, and
always within a bounded time.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from studio.errors import UserError
from studio.pipeline.yamlfile import load_yaml
from studio.runs.reopen import KEY, Reopened, as_yaml, encode, reopen

TIME_S = 2.0  # one file re-opened, on a busy shared machine (each takes milliseconds)
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,  # timed in the test, against TIME_S
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as drawn
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
PIPELINE = {"name": "fz", "seed": 3, "steps": [{"id": "a", "uses": "image.title", "with": {"text": "hi"}}]}


# --- containers: where each format carries the provenance ------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_carrying(payload: bytes, kind: bytes = b"tEXt") -> bytes:
    raw = b"".join(b"\x00" + b"\x10\x20\x30" * 4 for _ in range(4))
    if kind == b"zTXt":
        body = b"studio\0\0" + zlib.compress(payload)
    elif kind == b"iTXt":
        body = b"studio\0\0\0\0\0" + payload
    else:
        body = b"studio\0" + payload
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + _png_chunk(kind, body) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def _riff(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def wav_carrying(payload: bytes) -> bytes:
    fmt = _riff(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16))
    body = b"WAVE" + fmt + _riff(b"LIST", b"INFO" + _riff(b"ICMT", payload + b"\0")) + _riff(b"data", b"\0" * 32)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_carrying(payload: bytes) -> bytes:
    text = b"studio:" + payload
    track = (b"\x00\xff\x01" + _vlq(len(text)) + text + b"\x00\x90\x3c\x40\x60\x80\x3c\x00\x00\xff\x2f\x00")
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 96) + b"MTrk" + struct.pack(">I", len(track)) + track


CONTAINERS = {
    "png-tEXt": (".png", lambda p: png_carrying(p)),
    "png-zTXt": (".png", lambda p: png_carrying(p, b"zTXt")),
    "png-iTXt": (".png", lambda p: png_carrying(p, b"iTXt")),
    "wav": (".wav", wav_carrying),
    "midi": (".mid", midi_carrying),
}


# --- what they carry -------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)
pipelines = st.fixed_dictionaries(
    {"steps": st.lists(json_values, max_size=3)},
    optional={"name": json_values, "seed": json_values, "description": st.text(max_size=40)})
blobs = st.one_of(
    pipelines.map(encode),  # what Studio writes: base64 of zlib of JSON
    json_values.map(lambda v: encode(v) if isinstance(v, dict) else json.dumps(v)),
    st.binary(max_size=200).map(lambda b: base64.b64encode(zlib.compress(b)).decode()),  # not JSON inside
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),  # not zlib inside
    st.text(max_size=60),  # not base64
    json_values,  # not a string
)
studio_provenances = st.fixed_dictionaries(  # as Studio writes them, with any pipeline and names
    {KEY: pipelines.map(encode), "step": st.text(max_size=30), "item": st.text(max_size=60)},
    optional={"params": json_values, "seed": json_values})
provenances = st.fixed_dictionaries(
    {}, optional={KEY: blobs, "step": json_values, "item": json_values, "params": json_values,
                  "studio": st.text(max_size=10)})


def payloads() -> st.SearchStrategy[bytes]:
    """The bytes a container carries: a provenance, any JSON, any text, any bytes."""
    return st.one_of(
        studio_provenances.map(lambda p: json.dumps(p).encode()),
        studio_provenances.map(lambda p: json.dumps(p, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        provenances.map(lambda p: json.dumps(p).encode()),
        provenances.map(lambda p: json.dumps(p, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=400),
    )


# --- the property ----------------------------------------------------------------------------


def _same(a, b) -> bool:
    """Equal as JSON values are, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def reopens_or_refuses(path: Path, *, counted: bool = True) -> Reopened | None:
    start = time.monotonic()
    try:
        found = reopen(path)
    except UserError as exc:
        assert path.name in str(exc), str(exc)
        found = None
    seconds = time.monotonic() - start
    assert seconds < TIME_S, f"{seconds:.1f} s"
    if counted:  # how often each answer comes: --hypothesis-show-statistics
        event("re-opened" if found is not None else "refused")
    if found is not None:
        assert isinstance(found.pipeline, dict) and isinstance(found.pipeline.get("steps"), list)
        assert found.step is None or isinstance(found.step, str)
        assert found.item is None or isinstance(found.item, str)
        text = as_yaml(found, path)  # what `studio export` writes
        text.encode("utf-8")
        header = [line for line in text.splitlines() if line.startswith("# ")]
        assert header and header[0].startswith("# re-opened from "), text[:500]
        data, _, issues = load_yaml(text, "export.yaml")  # as a pipeline file is read
        if any("nested" in i.message or "values" in i.message or "larger" in i.message for i in issues):
            return found  # a YAML rendering past a limit the JSON met: refused in words later
        assert not issues, [i.format() for i in issues]
        assert _same(data, found.pipeline), (data, found.pipeline)
    return found


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-provenance")


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@FUZZ
@given(payload=payloads())
@example(payload=json.dumps({KEY: encode({"steps": json.loads("[" * 70 + "]" * 70)})}).encode())
@example(payload=json.dumps({KEY: encode({"steps": [0] * 40_000})}).encode())
@example(payload=b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}")
@example(payload=json.dumps({KEY: encode(PIPELINE), "step": "a\n# x", "item": "\x1b[2J\u202e"}).encode())
@example(payload=json.dumps({KEY: base64.b64encode(zlib.compress(b"9" * 5000)).decode()}).encode())
@example(payload=json.dumps({KEY: encode({**PIPELINE, "x": ["1e5", "1.0e5", "yes", "on", "0x1F", "1_000", ".inf", "~",
                                                            "null", "", "-", "0o17", "2001-12-14", "1:20", "=", "<<"]})}
                            ).encode())
def test_any_provenance_reopens_or_is_refused_in_words(folder, container, payload):
    suffix, wrap = CONTAINERS[container]
    path = folder / f"file-{container}{suffix}"
    path.write_bytes(wrap(payload))
    reopens_or_refuses(path)


def _studio_files(folder: Path) -> dict[str, bytes]:
    """A PNG, a WAV and a MIDI as Studio's own writers make them."""
    import pretty_midi
    from PIL import Image

    from studio import media
    from studio.execute.artifacts import write_midi, write_png, write_wav

    provenance = {"step": "a", "item": "a@x=1", "params": {"text": "hi"}, KEY: encode(PIPELINE)}
    write_png(Image.new("RGB", (8, 8), (10, 20, 30)), folder / "s.png", provenance)
    write_wav(media.Audio(np.zeros(400, dtype=np.float32), 8000), folder / "s.wav", provenance)
    song = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=60, start=0.0, end=0.5))
    song.instruments.append(piano)
    write_midi(song, folder / "s.mid", provenance)
    return {name: (folder / name).read_bytes() for name in ("s.png", "s.wav", "s.mid")}


@pytest.fixture(scope="module")
def studio_files(folder) -> dict[str, bytes]:
    files = _studio_files(folder)
    for name in files:  # unharmed, each re-opens to the pipeline it was written with
        found = reopens_or_refuses(folder / name, counted=False)
        assert found is not None and found.pipeline == PIPELINE and found.item == "a@x=1"
    return files


damage = st.lists(st.tuples(st.sampled_from(["cut", "flip", "insert", "delete"]), st.floats(0, 1),
                            st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


@pytest.mark.parametrize("name", ["s.png", "s.wav", "s.mid"])
@FUZZ
@given(harm=damage)
def test_damaged_studio_files_reopen_or_are_refused_in_words(folder, studio_files, name, harm):
    data = bytearray(studio_files[name])
    for kind, where, stuff in harm:
        at = int(where * len(data))
        if kind == "cut":
            del data[at:]
        elif kind == "flip":
            data[at:at + len(stuff)] = bytes(b ^ s for b, s in zip(data[at:at + len(stuff)], stuff))
        elif kind == "insert":
            data[at:at] = stuff
        else:
            del data[at:at + len(stuff)]
    path = folder / f"damaged-{name}"
    path.write_bytes(bytes(data))
    reopens_or_refuses(path)
