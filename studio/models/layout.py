"""Where each kind of model lives under a folder a user names: the layouts of
AUTOMATIC1111/Forge (`models/Stable-diffusion`, `models/Lora`, `embeddings`, ...),
ComfyUI and Fooocus (`models/checkpoints`, `models/loras`, ..., and ComfyUI's
`extra_model_paths.yaml`), and InvokeAI (`models/<base>/<type>`, e.g. `sd-1/main`).
The folder given may be the tool's root, its `models/` folder or one kind folder.
Only these few names are looked at; nothing is walked here (studio.models.scan does)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KINDS = ("checkpoint", "lora", "embedding", "vae", "controlnet", "upscaler")
# folder name (lower case) -> kind, for every tool's names
FOLDER_KINDS = {
    "stable-diffusion": "checkpoint", "checkpoints": "checkpoint", "diffusers": "checkpoint", "main": "checkpoint",
    "lora": "lora", "loras": "lora", "lycoris": "lora",
    "embeddings": "embedding", "embedding": "embedding",
    "vae": "vae",
    "controlnet": "controlnet",
    "esrgan": "upscaler", "realesrgan": "upscaler", "upscale_models": "upscaler",
}
# ComfyUI's extra_model_paths.yaml keys -> kind (its other keys, such as configs, are not models)
COMFY_KEYS = {"checkpoints": "checkpoint", "diffusers": "checkpoint", "loras": "lora", "embeddings": "embedding",
              "vae": "vae", "controlnet": "controlnet", "upscale_models": "upscaler"}
# the generic folder names that mean "a kind folder" only inside a models folder
AMBIGUOUS = {"main"}
EXTRA_PATHS = "extra_model_paths.yaml"
MAX_EXTRA_PATHS_BYTES = 64 * 1024  # a hand-written file of a few sections
MAX_EXTRA_FOLDERS = 256
INVOKE_BASES = 32  # sub-folders of an InvokeAI models folder looked at for <base>/<type>


@dataclass(frozen=True)
class KindFolder:
    kind: str
    path: Path
    source: str  # the folder the user named (or the yaml that named this one), for messages


def kind_folders(root: Path, notes: list[str]) -> list[KindFolder]:
    """The kind folders under `root`, in a stable order; `notes` gets what was left out
    and why (an unreadable or malformed extra_model_paths.yaml, no known layout)."""
    source = str(root)
    kind = FOLDER_KINDS.get(root.name.lower())
    if kind and root.name.lower() not in AMBIGUOUS:
        return [KindFolder(kind, root, source)]
    found: list[KindFolder] = []
    for base in (root, root / "models"):
        inside_models = base.name.lower() == "models"
        found += _named_children(base, source, generic=inside_models)
        if inside_models:  # InvokeAI's <base>/<type> only there: a project's `src/main` is no model folder
            found += _invoke_folders(base, source)
    found += _extra_paths(root / EXTRA_PATHS, notes)
    unique: dict[tuple[str, str], KindFolder] = {}
    for folder in found:
        unique.setdefault((folder.kind, os.path.normcase(str(folder.path))), folder)
    if not unique:
        notes.append(f"{root} holds no model folders Studio knows (e.g. models/Stable-diffusion, models/Lora, "
                     "models/checkpoints, models/loras); give the tool's folder, its models/ folder or one kind folder")
    return list(unique.values())


def _children(folder: Path) -> list[str]:
    """The names of `folder`'s sub-folders, sorted; none when it cannot be read. Bounded
    by what a models folder holds: a folder with more entries is not one (scan says so)."""
    try:
        with os.scandir(folder) as listing:
            names = []
            for n, entry in enumerate(listing):
                if n >= 4096:
                    break
                if entry.is_dir():
                    names.append(entry.name)
    except (OSError, ValueError):  # ValueError: a NUL byte in a path a yaml file gave
        return []
    return sorted(names)


def _named_children(base: Path, source: str, generic: bool) -> list[KindFolder]:
    out = []
    for name in _children(base):
        kind = FOLDER_KINDS.get(name.lower())
        if kind and (generic or name.lower() not in AMBIGUOUS):
            out.append(KindFolder(kind, base / name, source))
    return out


def _invoke_folders(base: Path, source: str) -> list[KindFolder]:
    """InvokeAI keeps models as <base>/<type>: sd-1/main, sdxl/lora, any/vae, ..."""
    out = []
    for name in _children(base)[:INVOKE_BASES]:
        if name.lower() in FOLDER_KINDS or name.startswith("."):
            continue
        for sub in _children(base / name):
            kind = FOLDER_KINDS.get(sub.lower())
            if kind:
                out.append(KindFolder(kind, base / name / sub, source))
    return out


def _extra_paths(file: Path, notes: list[str]) -> list[KindFolder]:
    """The folders ComfyUI's extra_model_paths.yaml adds: per section a `base_path` and,
    per kind key, one path or several (one a line), relative to base_path."""
    try:
        if not os.path.lexists(file):
            return []
    except ValueError:
        return []
    import yaml

    from studio.limits import FileRefused, read_regular

    try:
        data = yaml.safe_load(read_regular(file, MAX_EXTRA_PATHS_BYTES).decode("utf-8"))
    except FileRefused as exc:
        notes.append(f"{file} left out: {exc}")
        return []
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        notes.append(f"{file} left out: it cannot be read as YAML ({str(exc).splitlines()[0][:200]})")
        return []
    if not isinstance(data, dict):
        notes.append(f"{file} left out: it is not a mapping of sections (see ComfyUI's extra_model_paths.yaml.example)")
        return []
    out: list[KindFolder] = []
    for section in data.values():
        if isinstance(section, dict):
            out += _section_folders(file, section)
    if len(out) > MAX_EXTRA_FOLDERS:
        notes.append(f"{file}: only its first {MAX_EXTRA_FOLDERS} folders are read")
    return out[:MAX_EXTRA_FOLDERS]


def _section_folders(file: Path, section: dict) -> list[KindFolder]:
    base = section.get("base_path")
    if isinstance(base, str) and "\x00" in base:
        return []
    base_path = file.parent / os.path.expanduser(base) if isinstance(base, str) else file.parent
    out = []
    for key, value in section.items():
        kind = COMFY_KEYS.get(str(key))
        if kind and isinstance(value, str):
            for line in value.splitlines()[:MAX_EXTRA_FOLDERS]:
                if line.strip() and "\x00" not in line:
                    out.append(KindFolder(kind, base_path / os.path.expanduser(line.strip()), str(file)))
    return out
