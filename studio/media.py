"""Media types that flow between steps. MIME strings, so plugins can add their own."""

from __future__ import annotations

IMAGE = "image/png"
TEXT = "text/plain"
MIDI = "audio/midi"
AUDIO = "audio/wav"
JSON = "application/json"


def matches(accepted: str, actual: str) -> bool:
    """True when `actual` is acceptable for `accepted` ("image/*" accepts "image/png")."""
    if accepted in ("*", "*/*") or accepted == actual:
        return True
    major, _, minor = accepted.partition("/")
    return minor == "*" and actual.split("/", 1)[0] == major
