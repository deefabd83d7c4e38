"""Checks a `model:` value before anything loads (see studio.generator.model_input).

"default" names a generator's embedded weights. A path is resolved relative to the
pipeline file, like a media input, and must look like weights of the right kind: a
directory holding one of the generator's signature files at its top level, or a file
with one of its suffixes. Only those few names are looked at: a mistaken `model: /`
is refused at once instead of being walked. A hub id (`org/name`) must be in the local
Hugging Face cache, since nothing is downloaded. Any other value is a name looked up in
the user's model folders (studio.models.library), among the models of the parameter's
kind (model_input's `kind`; see studio.generator.model_spec).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.errors import clip

if TYPE_CHECKING:
    from studio.models.library import ModelLibrary

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
# Directories that hold a system, never a model: refused by name, before any look inside.
SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run",
               "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/usr/lib", "/usr/share", "/usr/local"}


def hub_cache() -> Path:
    """Where huggingface_hub keeps downloaded repositories (its own environment rules)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def check_model(value: str, wanted: dict[str, Any], base_dir: Path,
                library: ModelLibrary | None = None) -> tuple[str, str | None]:
    """(the value to load, a problem in words or None). A name found in `library`
    becomes its file's path."""
    if value == "default":
        return value, None
    if not value.strip():
        return value, "is empty; give 'default', a weights directory or file, or a hub id"
    if "\x00" in value:
        return value, "contains a NUL byte"
    path = (base_dir / Path(value).expanduser()).absolute()
    try:
        real = path.resolve()
    except RuntimeError:
        return value, f"cannot be resolved ({clip(str(path))}): a symbolic link loops"
    except OSError as exc:  # a name too long ...
        return value, f"cannot be used: {exc.strerror or exc}"
    if str(real) in SYSTEM_DIRS or real == Path.home():
        return value, f"names {real}, a system directory; give the directory of one model's weights"
    if os.path.lexists(path):
        return str(real), _looks_like_weights(real, wanted)
    hub_id = wanted.get("hub") and HUB_ID.fullmatch(value) and not value.startswith(".")
    cached = hub_cache() / f"models--{value.replace('/', '--')}"
    if hub_id and cached.is_dir():
        return value, None
    if library is not None and library.roots:
        return _from_library(value, wanted, library, path, cached if hub_id else None)
    if hub_id:
        return value, (f"is neither a local path (looked in {clip(str(path), 200)}) nor in the Hugging Face cache ({cached}); "
                       "Studio never downloads: copy the weights here and give their path")
    return value, (f"not found (looked in {clip(str(path), 200)}); give a path relative to the pipeline file, 'default', "
                   "or the name of a model in a folder given with --models DIR (or STUDIO_MODELS)")


def _from_library(value: str, wanted: dict[str, Any], library: ModelLibrary, path: Path,
                  hub: Path | None) -> tuple[str, str | None]:
    """A name looked up among the library's models of the parameter's kind; `path` and
    `hub` (the hub cache folder of a value that looks like a hub id) are where else it
    was looked for, for the message."""
    from studio.models.library import ModelNotFound

    try:
        found = library.find(value, wanted.get("kind") or "checkpoint")
    except ModelNotFound as exc:
        elsewhere = f" nor in the Hugging Face cache ({hub})" if hub else ""
        return value, f"is not a path (looked in {clip(str(path), 200)}){elsewhere}, and {exc}"
    real = found.path.resolve()
    return str(real), _looks_like_weights(real, wanted)


def _looks_like_weights(path: Path, wanted: dict[str, Any]) -> str | None:
    files, suffixes = wanted.get("files") or [], wanted.get("suffixes") or []
    if path.is_dir():
        if not files:
            return "is a directory; give a weights file" + (f" ({', '.join(suffixes)})" if suffixes else "")
        if any((path / name).is_file() for name in files):
            return None
        return f"is a directory without {' or '.join(files)}; it does not hold weights this generator loads"
    if not path.is_file():
        return "is not a regular file or directory"
    if suffixes and path.suffix.lower() in suffixes:
        return None
    if files and path.name in files:
        return None
    allowed = [*suffixes] + ([f"a directory with {' or '.join(files)}"] if files else [])
    return f"is a file this generator does not load; give {' or '.join(allowed)}"
