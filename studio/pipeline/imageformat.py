"""The file format a step writes its image outputs in: `format: png | jpeg | webp` and
`quality: 1..100`, on a step or as the pipeline's default (a step's own wins, as with
`compile:`). Every generator's image output (declared as studio.media.IMAGE) is written
in it; other outputs are not touched.

PNG is lossless and carries no quality. JPEG and WebP are lossy at `quality` (default 90);
WebP at quality 100 is lossless (libwebp's lossless mode: a lossy WebP at 100 would still
halve the colour resolution, so 100 asks for the exact pixels). A JPEG has no alpha: an
image with transparency is drawn over white first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio import media
from studio.errors import Issue, echo

FORMATS = {"png": media.IMAGE, "jpeg": media.JPEG, "webp": media.WEBP}  # name -> media type
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
DEFAULT_QUALITY = 90
LOSSLESS_WEBP = 100
ALLOWED_FORMATS = " | ".join(FORMATS)
ALLOWED_QUALITY = "an integer from 1 to 100 (jpeg and webp only; webp at 100 is lossless)"


@dataclass(frozen=True)
class ImageFormat:
    name: str = "png"
    quality: int | None = None  # None for png; an integer 1..100 for jpeg and webp

    @property
    def media_type(self) -> str:
        return FORMATS[self.name]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.name]

    def output(self, declared: str) -> str:
        """The media type an output port declared as `declared` is written as."""
        return self.media_type if declared == media.IMAGE else declared

    def cache_part(self) -> dict[str, Any] | None:
        """What the step cache's key adds: nothing for PNG, so PNG keys stay as they were."""
        return None if self.name == "png" else {"format": self.name, "quality": self.quality}


PNG = ImageFormat()


def resolve(step: tuple[str | None, int | None], pipeline: tuple[str, int | None]) -> ImageFormat:
    """A step's format: its own `format:`/`quality:` over the pipeline's. Both are
    checked already (check_keys); a quality left unset is DEFAULT_QUALITY."""
    name = step[0] or pipeline[0]
    if name == "png":
        return PNG
    quality = step[1] if step[1] is not None else pipeline[1]
    return ImageFormat(name, DEFAULT_QUALITY if quality is None else quality)


def check_keys(raw: dict[str, Any], at: tuple, locs: Any, label: str | None,
               issues: list[Issue]) -> tuple[str | None, int | None]:
    """The `format:` and `quality:` of a mapping (the pipeline's top level or a step),
    each None when absent or refused (the refusal appended to `issues`, located)."""
    name, quality = raw.get("format"), raw.get("quality")
    if name is not None and (not isinstance(name, str) or name not in FORMATS):
        hint = "; JPEG is spelt jpeg" if isinstance(name, str) and name.lower() in ("jpg", "jpeg") else ""
        whose = "this step's image outputs" if at else "every step's image outputs, unless a step says"
        issues.append(locs.issue(at + ("format",), f"got {echo(name)}; allowed: {ALLOWED_FORMATS} (the file format "
                                                   f"of {whose}{hint})", label))
        name = None
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        issues.append(locs.issue(at + ("quality",), f"got {echo(quality)}; allowed: {ALLOWED_QUALITY}", label))
        quality = None
    return name, quality


def quality_with_png(at: tuple, locs: Any, label: str | None, where: str) -> Issue:
    """The refusal of `quality:` where the images are PNG (`where` says why they are)."""
    return locs.issue(at + ("quality",), f"quality: applies to jpeg and webp, but {where}; remove quality: or "
                                         "set format: jpeg or webp", label)


def not_an_image_step(at: tuple, locs: Any, label: str | None, key: str, uses: str, outputs: dict[str, str]) -> Issue:
    """The refusal of `format:`/`quality:` on a step whose generator writes no image."""
    written = ", ".join(f"{port} ({kind})" for port, kind in outputs.items()) or "nothing"
    return locs.issue(at + (key,), f"{key}: applies to image outputs, and {uses} writes {written}; remove "
                                   f"{key}: from this step", label)
