"""AUTOMATIC1111's generation text ("infotext"), read by its own rules
(`parse_generation_parameters` in A1111's modules/infotext_utils.py):

    a prompt, over one or more lines
    Negative prompt: what to avoid, over one or more lines
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512

The last line holds the `key: value` pairs when at least three are found there; otherwise
it belongs to the prompt. A value holding a comma, colon or newline is a JSON string
(A1111's `quote`). Lines before the first `Negative prompt:` line are the prompt, the rest
the negative prompt, each line stripped.

The pairs are found in one pass over the line, bounded: a key is a word character then
up to 63 word characters, spaces, hyphens or slashes (A1111's pattern has no bound, which
costs quadratic time on a long line with no colon; real keys are under 40 characters).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from studio.errors import UserError

MAX_KEY = 64
KEY = re.compile(rf"(\w[\w \-/]{{1,{MAX_KEY - 1}}}):")
MIN_PAIRS = 3  # fewer on the last line: it is part of the prompt (A1111's rule)
NEGATIVE = "Negative prompt:"


@dataclass(frozen=True)
class Infotext:
    prompt: str
    negative_prompt: str
    pairs: dict[str, str] = field(default_factory=dict)  # the last line's, values unquoted, in order


def quote(value: object) -> str:
    """A value as A1111 writes it: a JSON string when a comma, colon or newline is in it."""
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """A value as A1111 reads it: a JSON string's text, anything else as it is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def parse(text: str, where: str) -> Infotext:
    """The prompt, negative prompt and last line's pairs of an infotext; a UserError when
    there is nothing, or no line of parameters (then it is not an infotext)."""
    lines = text.strip().split("\n")
    if not lines[-1].strip():
        raise UserError(f"{where}: the infotext is empty; give the text A1111 shows under an image (its 'PNG "
                        "Info'), or the image itself")
    found = pairs(lines[-1])
    if len(found) < MIN_PAIRS:
        raise UserError(f"{where}: no line of generation parameters at the end (such as 'Steps: 20, Sampler: "
                        "Euler a, CFG scale: 7, Seed: 1, Size: 512x512'); this is not an A1111 infotext")
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines[:-1]:
        line = line.strip()
        if line.startswith(NEGATIVE):
            negative.append(line[len(NEGATIVE):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    values: dict[str, str] = {}
    for key, value in found:
        values[key] = unquote(value)  # a key given twice: the last one, as A1111 reads it
    return Infotext("\n".join(prompt), "\n".join(negative), values)


def pairs(line: str) -> list[tuple[str, str]]:
    """The `key: value` pairs of a line, as A1111's pattern finds them, in one pass."""
    found: list[tuple[str, str]] = []
    i, n = 0, len(line)
    unclosed = n  # a quote opened at or after here has no closing quote: read it plainly
    while i < n:
        while i < n and line[i].isspace():
            i += 1
        match = KEY.match(line, i)
        if match is None:
            i += 1
            continue
        j = match.end()
        while j < n and line[j].isspace():
            j += 1
        value, i, unclosed = _value(line, j, unclosed)
        found.append((match.group(1), value))
    return found


def _value(line: str, start: int, unclosed: int) -> tuple[str, int, int]:
    """The value at `start`, where the next pair may begin, and the updated `unclosed`:
    a quoted string followed by a comma or the end, else everything to the next comma."""
    n = len(line)
    if start < n and line[start] == '"' and start < unclosed:
        k = start + 1
        while k < n and line[k] != '"':
            k += 2 if line[k] == "\\" else 1
        if k >= n:
            unclosed = start
        elif k > start + 1 and (k + 1 == n or line[k + 1] == ","):
            return line[start:k + 1], k + 2, unclosed
    comma = line.find(",", start)
    if comma < 0:
        return line[start:], n, unclosed
    return line[start:comma], comma + 1, unclosed
