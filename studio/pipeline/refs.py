"""The `${steps.<id>.outputs.<port>}` reference grammar. Pure functions, no I/O.

A parameter is a reference when its whole value is one `${...}`; a string may also
embed references to text outputs ("A poster of ${steps.words.outputs.text}").
`$${` writes a literal `${`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"(\$?)\$\{([^}]*)\}")
_REF = re.compile(r"^steps\.([^.\s]+)\.outputs\.([^.\s]+)$")


@dataclass(frozen=True)
class Ref:
    step: str
    port: str

    def __str__(self) -> str:
        return f"${{steps.{self.step}.outputs.{self.port}}}"


class RefSyntaxError(ValueError):
    pass


def find_refs(value: str) -> list[Ref]:
    """Every reference in a string, in order. Raises RefSyntaxError on `${...}` that is
    not `steps.<id>.outputs.<port>`."""
    rest = _TOKEN.sub("", value)
    if "${" in rest.replace("$${", ""):
        start = rest.replace("$${", "  ").index("${")
        raise RefSyntaxError(
            f"unterminated reference {rest[start:start + 40]!r}: a reference ends with '}}'; write "
            "${steps.<step-id>.outputs.<port>} (or $${ for a literal '${')"
        )
    refs = []
    for escape, body in _TOKEN.findall(value):
        if escape:
            continue
        m = _REF.match(body.strip())
        if not m:
            raise RefSyntaxError(
                f"'${{{body}}}' is not a reference; write ${{steps.<step-id>.outputs.<port>}} "
                "(or $${ for a literal '${')"
            )
        refs.append(Ref(m.group(1), m.group(2)))
    return refs


def whole_ref(value: str) -> Ref | None:
    """The reference when the string is exactly one reference, else None."""
    m = _TOKEN.fullmatch(value.strip())
    if not m or m.group(1):
        return None
    refs = find_refs(value.strip())
    return refs[0] if refs else None


def interpolate(value: str, texts: dict[Ref, str]) -> str:
    """Replace each reference with its text and unescape `$${`."""

    def sub(m: re.Match) -> str:
        if m.group(1):
            return "${" + m.group(2) + "}"
        r = _REF.match(m.group(2).strip())
        return texts[Ref(r.group(1), r.group(2))]

    return _TOKEN.sub(sub, value)


def has_refs(value: object) -> bool:
    return isinstance(value, str) and "${" in value
