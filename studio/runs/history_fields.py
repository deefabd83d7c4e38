"""Values read from a run's manifest or typed on the command line, checked before the
run index stores or compares them: a manifest is a file anyone could have written, so
each field is checked for its type and range, and what is wrong becomes a note on the
run ("steps.a.items[3].seed: ..."), never an error that stops the others from being
listed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from studio.errors import UserError, clip

MANIFEST = "manifest.json"
# what one run may put in the index: a 10,000-item sweep is the largest Studio writes
MAX_INDEXED_ITEMS = 100_000
MAX_PARAMS_CHARS = 64 << 10  # an item's parameters as JSON
MAX_PARAMS_DEPTH = 32
MAX_NOTES = 20  # the problems noted about one run
MAX_SEED = 2**63 - 1  # seeds are 0 .. 2**63 - 1 (studio run --seed)
MAX_SECONDS = 1e12
MAX_LIMIT = 10**9


def printable_text(value: Any) -> str:
    """A value from a file or the command line as a message may repeat it."""
    from studio.errors import printable

    text = value if isinstance(value, str) else repr(value)
    return printable(text[:2000].encode("utf-8", "backslashreplace").decode("utf-8"))



def check_text(option: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise UserError(f"{option}: expected text, got {type(value).__name__}")
    if len(value) > 10_000:
        raise UserError(f"{option}: {len(value):,} characters; at most 10,000 are compared")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{option} {clip(printable_text(value), 80)}: not valid UTF-8 text (bytes the terminal "
                        "could not decode); give the text as the manifests record it") from None



def check_int(option: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise UserError(f"{option}: {clip(printable_text(value), 80)} is not a whole number in the range "
                        f"{low}..{high}")



def _too_deep_or_large(value: Any, max_depth: int, max_nodes: int) -> str | None:
    """What is wrong with a JSON-like value's shape ("nested more than N deep", "more
    than N values"), or None. Iterative; a shared sub-value counts each time it is
    reached, so YAML aliases cannot make a small text into a huge value."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        current, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            return f"more than {max_nodes:,} values"
        if isinstance(current, (list, tuple, dict)):
            if depth > max_depth:
                return f"nested more than {max_depth} deep"
            children = current.values() if isinstance(current, dict) else current
            if len(children) > max_nodes:
                return f"more than {max_nodes:,} values"
            stack.extend((c, depth + 1) for c in children)
    return None



class ManifestFields:
    """Values read from one manifest, each checked for type and range; what was wrong
    is kept as notes ("steps.a.items[3].seed: ...")."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.count = 0

    def note(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{where}: {message}")

    def text(self, where: str, value: Any, limit: int, *, default: str = "", optional: bool = True) -> str:
        if value is None and optional:
            return default
        if not isinstance(value, str):
            self.note(where, f"a {_kind(value)}, not text; not indexed")
            return default
        # lone surrogates (a JSON "\\udcff") cannot be stored as UTF-8: shown as escapes
        value = value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
        return value

    def int_in(self, where: str, value: Any, low: int, high: int) -> int | None:
        if value is None:
            return None
        if type(value) is not int or not low <= value <= high:
            self.note(where, f"{clip(printable_text(value), 60)} is not a whole number in {low}..{high}; "
                             "not indexed")
            return None
        return value

    def seconds(self, where: str, value: Any) -> float | None:
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value <= MAX_SECONDS):
            self.note(where, f"{clip(printable_text(value), 60)} is not a number of seconds; not indexed")
            return None
        return float(value)

    def params(self, where: str, value: Any) -> str:
        if value is None:
            return "{}"
        if not isinstance(value, dict):
            self.note(where, f"a {_kind(value)}, not a mapping; not indexed")
            return "{}"
        problem = _too_deep_or_large(value, MAX_PARAMS_DEPTH, MAX_PARAMS_CHARS)
        if problem is None:
            try:
                text = json.dumps(value, default=str, allow_nan=True)
            except (ValueError, TypeError, RecursionError):
                text, problem = "", "not JSON"
            if problem is None and len(text) > MAX_PARAMS_CHARS:
                problem = f"{len(text):,} characters of JSON (at most {MAX_PARAMS_CHARS:,})"
            if problem is None:
                return text
        self.note(where, f"{problem}; not indexed (runs find cannot match them)")
        return "{}"



def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)



def fields_of(manifest: Any, run_dir: Path, fields: ManifestFields) -> tuple[dict[str, Any], list[tuple]]:
    """The runs row and the items rows of one manifest, every value checked."""
    key = str(run_dir)
    if not isinstance(manifest, dict):
        fields.note(MANIFEST, f"a {_kind(manifest)}, not a mapping")
        manifest = {"status": "unreadable"}
    status = fields.text("status", manifest.get("status"), 100, default="unreadable", optional=False) or "unreadable"
    row = {
        "pipeline": fields.text("pipeline", manifest.get("pipeline"), 1000) or run_dir.parent.name,
        "status": status,
        "started": fields.text("started", manifest.get("started"), 100),
        "seconds": fields.seconds("seconds", manifest.get("seconds")),
        "source": fields.text("source", manifest.get("source"), 4096),
    }
    counts = {"done": 0, "failed": 0, "cached": 0}
    rows: list[tuple] = []
    steps = manifest.get("steps")
    if not isinstance(steps, dict):
        if steps is not None:
            fields.note("steps", f"a {_kind(steps)}, not a mapping; no items indexed")
        steps = {}
    for step_id, step in steps.items():
        if not _step_rows(key, step_id, step, fields, counts, rows):
            break  # the item limit was reached
    row.update(counts)
    # step ids are JSON keys (text): make sure a surrogate cannot reach SQLite
    rows = [(r[0], r[1].encode("utf-8", "backslashreplace").decode("utf-8"), *r[2:]) for r in rows]
    return row, rows


def _step_rows(key: str, step_id: Any, step: Any, fields: ManifestFields, counts: dict[str, int],
               rows: list[tuple]) -> bool:
    """Appends the items rows of one step of the run `key` to `rows`, their statuses
    counted in `counts`; False when the run's item limit was reached."""
    from studio.execute.cache import KEY

    where = f"steps.{clip(printable_text(step_id), 60)}"
    if not isinstance(step, dict):
        fields.note(where, f"a {_kind(step)}, not a mapping; its items are not indexed")
        return True
    items = step.get("items")
    if items is None:
        return True
    if not isinstance(items, list):
        fields.note(f"{where}.items", f"a {_kind(items)}, not a list; not indexed")
        return True
    uses = fields.text(f"{where}.uses", step.get("uses"), 200)
    for n, item in enumerate(items):
        at = f"{where}.items[{n}]"
        if len(rows) >= MAX_INDEXED_ITEMS:
            fields.note(f"{where}.items", f"more than {MAX_INDEXED_ITEMS:,} items in the run; the rest are "
                                          "not indexed")
            return False
        if not isinstance(item, dict):
            fields.note(at, f"a {_kind(item)}, not a mapping; not indexed")
            continue
        item_status = fields.text(f"{at}.status", item.get("status"), 100)
        if item_status in counts:
            counts[item_status] += 1
        cache_key = item.get("cache_key")
        if cache_key is not None and not (isinstance(cache_key, str) and KEY.fullmatch(cache_key)):
            fields.note(f"{at}.cache_key", "not a cache key (64 hex digits); not indexed")
            cache_key = None
        rows.append((key, step_id if isinstance(step_id, str) else str(step_id), uses,
                     fields.text(f"{at}.name", item.get("name"), 4096), item_status,
                     fields.int_in(f"{at}.seed", item.get("seed"), 0, MAX_SEED),
                     fields.seconds(f"{at}.seconds", item.get("seconds")),
                     fields.params(f"{at}.params", item.get("params")), cache_key))
    return True
