"""What a model file says about itself, for `studio models show`: a safetensors file's
header (tensor count, dtypes, its `__metadata__`: a LoRA's kohya training metadata,
the modelspec fields), read after studio.weights has checked the header, within its
size bound. Long values are cut and kohya's tag frequencies summarised (the most
frequent tags), since a header's metadata can be megabytes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from studio.errors import clip

MAX_VALUE_CHARS = 300
TOP_TAGS = 10


def safetensors_facts(path: Path) -> dict[str, Any]:
    """{"format", "tensors", "dtypes", "metadata", "problem"} for a safetensors file; for
    another file only its format. The header is checked (studio.weights) before it is read."""
    from studio.weights.safetensors_header import MAX_SAFETENSORS_HEADER, safetensors_problem

    if path.suffix.lower() not in (".safetensors", ".sft"):
        return {"format": "folder" if path.is_dir() else path.suffix.lstrip(".").lower()}
    problem = safetensors_problem(path)
    if problem:
        return {"format": "safetensors", "problem": problem}
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(min(length, MAX_SAFETENSORS_HEADER)).decode("utf-8"))
    raw = header.get("__metadata__")
    metadata = raw if isinstance(raw, dict) else {}
    tensors = [t for k, t in header.items() if k != "__metadata__"]
    dtypes = Counter(str(t.get("dtype")) for t in tensors if isinstance(t, dict))
    return {"format": "safetensors", "tensors": len(tensors), "dtypes": dict(dtypes.most_common()),
            "metadata": summarised(metadata), "header": header}


def summarised(metadata: dict[str, Any]) -> dict[str, str]:
    """The metadata to show: kohya's tag frequencies as the most frequent tags, other
    JSON-valued fields and long text cut to MAX_VALUE_CHARS."""
    out = {}
    for key, value in sorted(metadata.items()):
        text = value if isinstance(value, str) else json.dumps(value)
        if key == "ss_tag_frequency":
            text = _top_tags(text)
        out[str(key)] = clip(text, MAX_VALUE_CHARS)
    return out


def _top_tags(text: str) -> str:
    """kohya's {"dataset": {"tag": count}} -> "tag (count), ..." for the most frequent."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    counts: Counter = Counter()
    if isinstance(data, dict):
        for tags in data.values():
            if isinstance(tags, dict):
                counts.update({str(t).strip(): n for t, n in tags.items() if isinstance(n, int)})
    if not counts:
        return text
    top = ", ".join(f"{tag} ({n})" for tag, n in counts.most_common(TOP_TAGS))
    return f"{top} ({len(counts)} tags in all)"
