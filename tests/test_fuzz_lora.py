"""Property-based fuzzing of the safetensors header check (studio.weights), which every
safetensors file Studio reads goes through: models, LoRA files, VAEs, feature networks.

Arbitrary headers (field types, shapes, dtypes, offsets, metadata, raw bytes) give
either acceptance or a problem in words, never an exception; and a file the check
accepts loads with safetensors, every tensor with the dtype and shape the header gave.
A LoRA file goes through the same check inside `image.diffusion`'s validator, where a
problem is a ValueError (an issue of `studio validate`), never another exception.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from studio.weights import SAFETENSORS_DTYPES, safetensors_dtypes, safetensors_problem, safetensors_shapes

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,  # timed per example below
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
CHECK_S = 1.0  # one header check, however hostile (a few KB of JSON here)

DTYPES = sorted(SAFETENSORS_DTYPES)
# JSON values of every kind, to stand where a field of another type is expected
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10)
ODD_INTS = st.sampled_from([-1, 0, 1, 2, 3, 7, 2**31, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 2**64 + 8, 10**30])
DIM = st.integers(0, 5) | ODD_INTS
NAMES = st.text(min_size=0, max_size=12) | st.sampled_from(["unet.a.lora_A.weight", "__metadata__", "__x__"])


@st.composite
def tensors(draw):
    """A valid table: (name, dtype, shape) of a few small tensors, laid out one after another."""
    names = draw(st.lists(NAMES.filter(lambda n: n != "__metadata__"), max_size=5, unique=True))
    return [(n, draw(st.sampled_from(DTYPES)), draw(st.lists(st.integers(0, 4), max_size=4))) for n in names]


def layout(table) -> tuple[dict, int]:
    header, at = {}, 0
    for name, dtype, shape in table:
        size = SAFETENSORS_DTYPES[dtype]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        at += size
    return header, at


FIELDS = ("dtype", "shape", "data_offsets")


@st.composite
def headers(draw):
    """A header and the length of data after it: valid ones, and valid ones with one
    thing changed (a field's value or type, a field dropped, an entry replaced, the
    metadata, the data length)."""
    header, data = layout(draw(tensors()))
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3))
    change = draw(st.sampled_from(["none", "field", "drop", "entry", "metadata", "data", "dtype", "shape",
                                   "offsets", "extra"]))
    keys = [k for k in header if k != "__metadata__"]
    key = draw(st.sampled_from(keys)) if keys else None
    if change == "field" and key:
        header[key][draw(st.sampled_from(FIELDS))] = draw(ANY_JSON)
    elif change == "drop" and key:
        del header[key][draw(st.sampled_from(FIELDS))]
    elif change == "entry" and key:
        header[key] = draw(ANY_JSON)
    elif change == "metadata":
        header["__metadata__"] = draw(ANY_JSON)
    elif change == "data":
        data = draw(st.integers(0, data + 64))
    elif change == "dtype" and key:
        header[key]["dtype"] = draw(st.sampled_from(DTYPES + ["F4", "F8_E8M0", "C64", "f32", "Q7", ""]))
    elif change == "shape" and key:
        header[key]["shape"] = draw(st.lists(DIM, max_size=6) | st.lists(ANY_JSON, max_size=3))
    elif change == "offsets" and key:
        header[key]["data_offsets"] = draw(st.lists(DIM, min_size=0, max_size=3))
    elif change == "extra" and key:
        header[key]["extra"] = draw(ANY_JSON)
    return header, data


def write(path: Path, text: bytes, data: int) -> Path:
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes((i * 7) % 251 for i in range(data)))
    return path


def judged(path: Path) -> str | None:
    start = time.monotonic()
    problem = safetensors_problem(path)  # must never raise
    assert time.monotonic() - start < CHECK_S
    assert problem is None or (isinstance(problem, str) and path.name in problem), problem
    event("accepted" if problem is None else "refused")
    return problem


def loads_as_declared(path: Path) -> None:
    """What the check accepted loads with safetensors, as its header says."""
    import torch  # noqa: F401  (safetensors' torch framework)
    from safetensors import safe_open

    shapes, dtypes = safetensors_shapes(path), safetensors_dtypes(path)
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        assert names == set(shapes)
        for name in names:
            tensor = f.get_tensor(name)
            assert list(tensor.shape) == shapes[name]
            assert f.get_slice(name).get_dtype() == dtypes[name]


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@FUZZ
@given(case=headers())
def test_any_header_is_accepted_and_loads_or_is_refused_in_words(case, scratch):
    header, data = case
    path = write(scratch / "w.safetensors", json.dumps(header).encode(), data)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))  # a new version for the check's cache
    if judged(path) is None:
        loads_as_declared(path)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
       data=st.integers(0, 64), claimed=st.none() | st.integers(0, 2**64 - 1))
def test_any_header_bytes_are_accepted_and_load_or_are_refused(raw, data, claimed, scratch):
    path = scratch / "raw.safetensors"
    body = struct.pack("<Q", len(raw) if claimed is None else claimed) + raw + bytes(data)
    path.write_bytes(body)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    if judged(path) is None:
        loads_as_declared(path)


@FUZZ
@given(case=headers())
def test_a_lora_file_is_refused_by_the_validator_in_words_or_checked(case, scratch):
    """The LoRA entry's check (what `studio validate` runs): a ValueError naming the
    entry, or the entry with its sha256; never another exception."""
    from studio_image.diffusion_lora import Lora, checked, fit_problem
    from studio_image.diffusion import DEFAULT_WEIGHTS

    header, data = case
    path = write(scratch / "lora.safetensors", json.dumps(header).encode(), data)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    try:
        entry = checked(Lora(path=str(path)), path)
    except ValueError as exc:
        assert "lora " in str(exc) and "lora.safetensors" in str(exc)
        return
    assert entry.sha256
    problem = fit_problem(path, DEFAULT_WEIGHTS)
    assert problem is None or isinstance(problem, str)
