"""A `.safetensors` file judged from its header alone, before anything loads it: 8 bytes
of length, then a JSON table of tensors and their byte ranges. Every field is checked
as safetensors itself checks it when loading (types, dtype x shape = the bytes of its
range, ranges one after another covering the data exactly), so a file that passes here
loads; the header is read once per version of the file. Public through studio.weights.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from studio.errors import clip, echo, short

# The format allows 100 MB; real headers are kilobytes to a few megabytes, and parsing a
# hostile 100 MB of JSON costs seconds and gigabytes.
MAX_SAFETENSORS_HEADER = 16 * 2**20
# dtype -> bytes per element: the safetensors dtypes torch loads (sub-byte and exotic ones
# are refused, as nothing Studio loads is stored in them)
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_TENSOR_DIMS = 32  # real weights have 1 to 5 dimensions
MAX_TENSOR_ELEMENTS = 2**63 - 1  # torch's sizes are signed 64-bit; safetensors' products unsigned


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is damaged (truncated, not safetensors, a header whose
    tensors do not fit their bytes), or None. Only its header is read: 8 bytes of
    length, a JSON table of tensors and their byte ranges; every field of it is checked
    as safetensors itself checks it when loading (types, dtype x shape = the bytes of
    its range, ranges one after another covering the data exactly), so a file that
    passes here loads."""
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever
        return f"{path.name} is not a regular file (a FIFO, device or folder)"
    header = _safetensors_header(str(path), st.st_size, st.st_mtime_ns)
    return header + "; copy or save the weights again" if isinstance(header, str) else None


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Each tensor's name and shape in a .safetensors file, read from its header alone
    (no tensor is loaded). A ValueError says what is wrong with a damaged file (check it
    with safetensors_problem first)."""
    return {key: list(shape) for key, _, shape, _, _ in _tensors(path)}


def safetensors_dtypes(path: Path) -> dict[str, str]:
    """Each tensor's name and dtype ("F32", "BF16", ...) in a .safetensors file, from
    its header alone. A ValueError for a damaged file, as safetensors_shapes."""
    return {key: dtype for key, dtype, _, _, _ in _tensors(path)}


def safetensors_layout(path: Path) -> list[tuple[str, str, tuple[int, ...], int, int]]:
    """Each tensor as (name, dtype, shape, first byte, end byte), its bytes' place in the
    file, in the order of their data. A ValueError for a damaged file."""
    return list(_tensors(path))


Tensors = tuple[tuple[str, str, tuple[int, ...], int, int], ...]


def _tensors(path: Path) -> Tensors:
    st = os.stat(path)
    header = _safetensors_header(str(path), st.st_size, st.st_mtime_ns)
    if isinstance(header, str):
        raise ValueError(header)
    return header


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a name given twice (safetensors refuses a
    field twice, and two tensors of one name are one too many)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the name {clip(repr(twice))} appears twice in one table")
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate (\ud800): Python's JSON reads it, safetensors does not
        return False


@lru_cache(maxsize=64)
def _safetensors_header(path: str, size: int, mtime_ns: int) -> str | Tensors:
    """The tensors of a safetensors file as (name, dtype, shape, first byte, end byte),
    in the order of their data, or why the file is damaged (without the advice
    safetensors_problem adds)."""
    name = Path(path).name
    damaged = f"{name} is not a complete safetensors file"
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > size - 8:
                return f"{damaged} (its header claims {length:,} bytes, the file has {size:,})"
            if length > MAX_SAFETENSORS_HEADER:  # whole, but no table of tensors is this large: not read
                return (f"{name}'s header claims {length:,} bytes; Studio reads safetensors headers of at most "
                        f"{MAX_SAFETENSORS_HEADER // 2**20} MB (a checkpoint's is under 1 MB): the file was not made "
                        "by a safetensors writer, or its metadata holds something else")
            text = f.read(length).decode("utf-8")
            header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return f"{damaged} ({short(exc)})"
    except (RecursionError, MemoryError):
        return f"{damaged} (its header is nested too deeply to be a table of tensors)"
    if not isinstance(header, dict):
        return f"{damaged} (its header is not a table of tensors)"
    return _header_problem(name, header, size - 8 - length, 8 + length)


def _header_problem(name: str, header: dict[str, Any], data: int, start: int = 0) -> str | Tensors:
    """Every field of a parsed safetensors header checked against `data` bytes of data
    (from byte `start` of the file): the tensors (name, dtype, shape, first byte, end
    byte) in the order of their data, or the first problem."""
    broken = f"{name} has a broken safetensors header"
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, str) and _utf8(k) and _utf8(v) for k, v in metadata.items())):
        return (f"{broken}: \"__metadata__\" is {echo(metadata)}; it is a mapping of names to strings (or absent)")
    tensors = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        where = f"{broken}: tensor {clip(repr(key), 160)}"
        if not _utf8(key):
            return f"{where} has a name that is not UTF-8 text"
        if not isinstance(entry, dict):
            return f"{where} is described by {echo(entry)}; it needs a mapping of dtype, shape and data_offsets"
        missing = [field for field in ("dtype", "shape", "data_offsets") if field not in entry]
        if missing:
            return f"{where} has no {' and no '.join(repr(m) for m in missing)}"
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not (isinstance(dtype, str) and dtype in SAFETENSORS_DTYPES):
            return (f"{where} has \"dtype\": {echo(dtype)}, which is not a safetensors dtype Studio reads; "
                    f"one of {', '.join(SAFETENSORS_DTYPES)}")
        if not (isinstance(shape, list) and all(_whole(d) for d in shape)):
            return (f"{where} has \"shape\": {echo(shape)}; a shape is a list of whole numbers 0 or more "
                    "(e.g. [320, 768], or [] for a single number)")
        if len(shape) > MAX_TENSOR_DIMS:
            return f"{where} has {len(shape):,} dimensions; at most {MAX_TENSOR_DIMS}"
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            return (f"{where} has \"data_offsets\": {echo(offsets)}; they are [begin, end], whole numbers "
                    "with begin <= end")
        if offsets[1] > data:
            return (f"{name} is not a complete safetensors file: tensor {clip(repr(key), 160)} lies outside its "
                    f"{data:,} bytes of data (truncated?)")
        elements = 1
        for d in shape:
            elements *= d
            if elements > MAX_TENSOR_ELEMENTS or d > MAX_TENSOR_ELEMENTS:
                return (f"{where} has \"shape\": {echo(shape)}, more elements than any tensor can hold; "
                        "the shape or the file is damaged")
        need = elements * SAFETENSORS_DTYPES[dtype]
        if need != offsets[1] - offsets[0]:
            return (f"{where} is {dtype} of shape {echo(shape)}, {need:,} bytes, but its data_offsets "
                    f"{offsets} hold {offsets[1] - offsets[0]:,}: its dtype or shape does not match its data")
        tensors.append((offsets[0], offsets[1], key, dtype, tuple(shape)))
    tensors.sort(key=lambda t: (t[0], t[1]))
    end, previous = 0, None
    for begin, stop, key, _, _ in tensors:
        if begin != end:
            after = f"where {clip(repr(previous), 160)} ends" if previous is not None else "the start of the data"
            return (f"{broken}: tensor {clip(repr(key), 160)} begins at byte {begin:,} of the data, not at {end:,} ({after}); "
                    "tensors follow one another without gaps or overlaps")
        end, previous = stop, key
    if end != data:
        return (f"{broken}: its tensors hold {end:,} bytes and the file has {data:,} bytes of data after the header; "
                "the header does not describe the whole file")
    return tuple((key, dtype, shape, start + begin, start + stop) for begin, stop, key, dtype, shape in tensors)


def _whole(value: Any) -> bool:
    """A whole number 0 or more that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
