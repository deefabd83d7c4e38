"""Media types that flow between steps. MIME strings, so plugins can add their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["AUDIO", "IMAGE", "JPEG", "JSON", "MIDI", "TEXT", "WEBP", "Audio", "matches"]

IMAGE = "image/png"  # what a generator declares for an image; a step's `format:` may write it as:
JPEG = "image/jpeg"
WEBP = "image/webp"
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


@dataclass
class Audio:
    """What a generator returns on an audio/wav port: float samples in [-1, 1], shaped
    (frames,) or (frames, channels), numpy or torch."""

    samples: Any
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate
