"""Guards around a user's weights, for any generator that loads them (public API:
plugins import it as `studio.weights`).

A `model:` value names files somebody else made. Before anything loads them, these
are refused:
- code that would run: a config with `auto_map` (transformers' and diffusers' remote
  code), a pipeline whose classes come from anywhere but diffusers and transformers,
  pickled `.bin` files where safetensors are expected, a `.pth` whose pickle would call
  anything but torch's tensor rebuilders (its opcodes are read, never executed);
- damaged weights: a `.safetensors` whose header does not fit the file (its checks live
  in studio.weights.safetensors_header);
- configs too large or not JSON (they are read with a size limit, once per version).
While loading, any failure of a user's weights is a UserError that names the model and
says what to give instead; the embedded defaults failing is Studio's own bug and stays
a generator error.

The same checks serve the Params validators (`studio validate`, problems as ValueError)
and the loaders (run time, problems as UserError): each returns a problem in words.
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from studio.errors import UserError, short
from studio.pipeline.modelpath import HUB_ID
# the safetensors header checks, public here (SAFETENSORS_DTYPES too, for tests that build files)
from studio.weights.safetensors_header import SAFETENSORS_DTYPES  # noqa: F401
from studio.weights.safetensors_header import safetensors_dtypes, safetensors_layout, safetensors_problem, safetensors_shapes


# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["MAX_CONFIG_BYTES", "components", "config", "file_sha256", "input_path", "load_pth", "loading", "local_path", "model_problem",
           "named_entry", "named_model", "pickled_code", "read_config", "refuse", "resolve_weights", "safetensors_dtypes",
           "safetensors_layout",
           "safetensors_problem", "safetensors_shapes",
           "short", "weights_fingerprint", "weights_problem"]

MAX_CONFIG_BYTES = 4 * 2**20  # a model's JSON config is kilobytes; a larger one is not read
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# pipeline components come from these libraries (or diffusers' pipeline modules); any
# other name is a module diffusers would import from the model's own folder
COMPONENT_LIBRARIES = ("diffusers", "transformers")


def local_path(model: str, default_dir: Path) -> Path | None:
    """Where the files `model` names are on this machine: the embedded weights for
    "default", the path itself, or a hub id's snapshot in the local Hugging Face cache.
    None when there is nothing to look at (a hub id not in the cache)."""
    if model == "default":
        return default_dir
    path = Path(model).expanduser()
    if path.exists():
        return path
    if HUB_ID.fullmatch(model):
        return hub_snapshot(model)
    return None


def resolve_weights(model: str, default_dir: Path) -> str:
    """A `model:` value as a loader takes it: "default" -> the generator's embedded
    weights, an existing path -> that path (absolute), anything else -> as given (a hub
    id, which the library looks up in its cache)."""
    if model == "default":
        return str(default_dir)
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def weights_fingerprint(model: str, default_dir: Path) -> str:
    """Size and modification time of every weights file, for the step cache key: cheap,
    and it changes when the weights are retrained or replaced."""
    path = Path(resolve_weights(model, default_dir))
    if not path.exists():
        return model
    files = [path] if path.is_file() else _weights_files(path)
    return ";".join(f"{p.relative_to(path) if p != path else p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                    for p in files)


def _weights_files(root: Path, max_depth: int = 3, max_files: int = 2000) -> list[Path]:
    """The files of a weights directory, two sub-folders deep at most (a diffusers
    pipeline's layout) and a bounded number of them: a model directory is small, and a
    mistaken `model: /` must never turn into a walk of the whole disk."""
    found: list[Path] = []
    level = [root]
    for _ in range(max_depth):
        below: list[Path] = []
        for folder in level:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.is_symlink() and not entry.resolve().is_relative_to(root.resolve()):
                    continue
                if entry.is_file():
                    found.append(entry)
                elif entry.is_dir() and entry.name != "training":
                    below.append(entry)
                if len(found) >= max_files:
                    return found
        level = below
    return found


def hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub repository; None when it is not cached.
    Nothing is downloaded."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or an id the hub library refuses: nothing to check
        return None


def read_config(path: Path) -> dict[str, Any] | None:
    """A JSON config as a dict; None when the file is absent. A ValueError says what is
    wrong with one that is too large, not JSON, or not a mapping."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return _read_config(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _read_config(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {size / 2**20:.0f} MB is not a model config (a JSON file of a few "
                         f"kilobytes; the limit is {MAX_CONFIG_BYTES // 2**20} MB)")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_CONFIG_BYTES + 1))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON config ({short(exc)})") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"{path}: not a readable JSON config (nested too deeply to be a model config)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config is a JSON object, this one holds a {type(data).__name__}")
    return data


def config(root: Path, name: str = "config.json") -> dict[str, Any]:
    """root/name as a dict ({} when absent)."""
    return read_config(root / name) or {}


def components(index: dict[str, Any]) -> list[tuple[str, list]]:
    """A model_index.json's components: (folder name, [library, class]). Only plain
    names: a component is a folder beside model_index.json, never a path elsewhere."""
    return [(k, v) for k, v in index.items()
            if not k.startswith("_") and k.isidentifier() and isinstance(v, list) and len(v) == 2]


def code_problem(root: Path) -> str | None:
    """Why loading the model at `root` would run code shipped with it, or None.
    transformers and diffusers import such code only with trust_remote_code, which
    Studio never passes; refusing here says so in words instead of their traceback."""
    if not root.is_dir():
        return None
    index = read_config(root / "model_index.json") or {}
    configs = ["config.json", "tokenizer_config.json", "model_index.json"]
    for key, value in components(index):
        library, cls = value
        if library is None and cls is None:
            continue  # a component the pipeline does without
        known = library in COMPONENT_LIBRARIES or _diffusers_pipeline_module(library)
        if not known or not isinstance(cls, str):
            return (f"model_index.json takes its {key!r} from {library!r}, code shipped with the model; "
                    f"Studio loads only {' and '.join(COMPONENT_LIBRARIES)} classes")
        configs += [f"{key}/config.json", f"{key}/tokenizer_config.json"]
    pipeline_class = index.get("_class_name")
    if pipeline_class is not None and not isinstance(pipeline_class, str):
        return (f"model_index.json names a custom pipeline ({pipeline_class!r}), code shipped with the model; "
                "Studio loads only diffusers' own pipelines")
    if "custom_pipeline" in index:
        return "model_index.json asks for a custom pipeline, code shipped with the model; Studio never runs it"
    for name in configs:
        data = read_config(root / name) or {}
        if "auto_map" in data:
            return (f"{name} has an `auto_map`: the model needs code of its own (transformers' "
                    "trust_remote_code), and Studio never runs code shipped with weights. Use a model "
                    "whose architecture transformers or diffusers ship")
    return None


def _diffusers_pipeline_module(name: Any) -> bool:
    """True when `name` is one of diffusers' pipeline modules (SD 1.x takes its safety
    checker from "stable_diffusion"). Found on disk: diffusers is not imported."""
    import importlib.util

    if not isinstance(name, str) or not name.isidentifier():
        return False
    spec = importlib.util.find_spec("diffusers")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        pipelines = Path(folder) / "pipelines"
        if (pipelines / name).is_dir() or (pipelines / f"{name}.py").is_file():
            return True
    return False


MAX_LISTED = 2000  # entries of a model folder looked at; a model folder holds a few dozen


def listing(folder: Path) -> tuple[str, ...]:
    """The names of the regular files at the top of `folder` (at most MAX_LISTED entries
    are looked at), cached by the folder's mtime: validators ask once per item."""
    try:
        st = os.stat(folder)
    except OSError:
        return ()
    return _listing(str(folder), st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=256)
def _listing(folder: str, mtime_ns: int, ino: int) -> tuple[str, ...]:
    names = []
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_LISTED:
                    break
                try:
                    if entry.is_file():
                        names.append(entry.name)
                except OSError:
                    continue
    except OSError:
        return ()
    return tuple(sorted(names))


def pickle_problem(root: Path, folders: tuple[str, ...] = ("",)) -> str | None:
    """Why the weights at `root` are pickles where safetensors are expected, or None.
    Only `folders` (relative; "" the top) are listed, never walked below."""
    if root.is_file():
        if root.suffix.lower() in PICKLE_SUFFIXES:
            return f"{root.name} is a pickle file; Studio loads weights from .safetensors only"
        return None
    for folder in folders:
        names = listing(root / folder)
        if any(n.endswith(".safetensors") for n in names):
            continue
        pickles = sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
        if pickles:
            shown = f"{folder}/{pickles[0]}" if folder else pickles[0]
            return (f"holds PyTorch pickle weights ({shown}) and no .safetensors; a pickle can run code when "
                    "loaded, so Studio reads only safetensors: convert them (transformers and diffusers: "
                    "`save_pretrained(dir, safe_serialization=True)`)")
    return None


def file_sha256(path: Path) -> str:
    """A file's sha256, computed once per version of the file (its size and time), and
    remembered across runs in the model-hash cache (studio.models.hashes)."""
    st = os.stat(path)
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from studio.models.hashes import remembered_sha256  # remembered across runs too

    return remembered_sha256(Path(path), size, mtime_ns)


def input_path(value: str, info: Any) -> Path:
    """A path a parameter names, resolved the way Studio resolves `model:` and media
    inputs: relative to the pipeline file's folder, which the host passes validators
    as `info.context["base_dir"]` (the working directory without one)."""
    base = (getattr(info, "context", None) or {}).get("base_dir")
    path = Path(value).expanduser()
    return Path(os.path.abspath(Path(base) / path if base is not None and not path.is_absolute() else path))


def named_model(name: str, kind: str, info: Any) -> Path:
    """The file of the model called `name` among the user's models of `kind` (checkpoint,
    lora, embedding, vae, controlnet, upscaler), found in the model folders the host
    passes validators as `info.context["models"]` (`--models DIR`, STUDIO_MODELS); a
    ValueError saying what there is (with a did-you-mean) when none is called that.
    For an entry such as `loras: [{name: ...}]`; a `model_input` parameter's names are
    resolved by the host."""
    from studio.models.library import ModelLibrary, ModelNotFound

    library = (getattr(info, "context", None) or {}).get("models")
    if not isinstance(library, ModelLibrary):
        library = ModelLibrary.from_dirs()  # Params validated outside a pipeline: STUDIO_MODELS only
    try:
        return library.find(name, kind).path.resolve()
    except ModelNotFound as exc:
        raise ValueError(str(exc)) from None


def named_entry(data: Any, info: Any, *, field: str, kind: str, fields: Any, needs: str, both: str) -> Any:
    """The body of a list entry's `mode="before"` validator (`loras: [{path|name}]`,
    `controlnets: [{model|name}]`): the entry gives its model by `field` (a path) or by
    `name:`, one in the user's model folders of `kind`, which becomes the path (named_model)
    and is recorded as such. `needs` is the message when neither is given, `both` when
    both are. An entry with a key not in `fields` is left for pydantic to name; without a
    validation context (the value checked on its own while the pipeline is read) the name
    waits for one."""
    if not isinstance(data, dict) or set(data) - set(fields):
        return data
    if data.get(field) is None and data.get("name") is None:
        raise ValueError(needs)
    if data.get("name") is not None and data.get(field) is not None:
        raise ValueError(both)
    if isinstance(data.get("name"), str) and getattr(info, "context", None) is not None:
        data = {**data, field: str(named_model(data["name"], kind, info)), "name": None}
    return data


def damaged_problem(root: Path, folders: tuple[str, ...] = ("",)) -> str | None:
    """The first damaged .safetensors at `root` (a file, or the top of these folders)."""
    if root.is_file():
        return safetensors_problem(root) if root.suffix == ".safetensors" else None
    for folder in folders:
        files = [root / folder / n for n in listing(root / folder) if n.endswith(".safetensors")]
        for file in files[:64]:
            problem = safetensors_problem(file)
            if problem:
                return f"{folder}/{problem}" if folder else problem
    return None


def weights_problem(model: str, root: Path | None, folders: tuple[str, ...] = ("",)) -> str | None:
    """What refuses `model` (found at `root`) before it loads, or None: code of its own,
    pickles instead of safetensors, a damaged safetensors file, or an unreadable config.
    Messages start with the model."""
    if root is None or model == "default":
        return None
    try:
        problem = code_problem(root) or pickle_problem(root, folders) or damaged_problem(root, folders)
    except ValueError as exc:
        problem = str(exc)
    return f"model {model!r}: {problem}" if problem else None


def model_problem(model: str, root: Path | None, judge: Callable[[dict[str, Any]], str | None],
                  folders: tuple[str, ...] = ("",), read: Callable[[], dict[str, Any] | None] | None = None
                  ) -> str | None:
    """What a model parameter's validator checks: weights_problem, then the model's own
    config judged by `judge` (a problem in words, or None). `read` gives the config
    (default: root/config.json; None from it: nothing to judge); a config that cannot be
    read is the problem. The embedded default is trusted."""
    problem = weights_problem(model, root, folders)
    if problem is not None or root is None or model == "default":
        return problem
    try:
        data = read() if read else config(root)
        problem = judge(data) if data is not None else None
    except ValueError as exc:
        problem = str(exc)
    return problem and f"model {model!r}: {problem}"


def refuse(model: str, root: Path | None, folders: tuple[str, ...] = ("",)) -> None:
    """weights_problem as a UserError, for loaders."""
    problem = weights_problem(model, root, folders)
    if problem:
        raise UserError(problem)


@contextlib.contextmanager
def loading(model: str, what: str, fix: str) -> Iterator[None]:
    """Any failure while loading a user's weights becomes a UserError naming the model,
    what it was loaded as, and `fix` (what to give instead). The embedded default
    failing, and running out of memory, are not the user's mistake: they propagate."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if model == "default" or _out_of_memory(exc):
            raise
        raise UserError(f"model {model!r} could not be loaded as {what}: {short(exc)}. {fix}") from exc


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


# What torch.load(weights_only=True) lets a pickle name besides torch's own: what
# torch.save writes for tensors and plain containers.
PLAIN_GLOBALS = {"_codecs.encode", "builtins.bytearray", "builtins.complex", "builtins.set", "collections.Counter",
                 "collections.OrderedDict"}
MAX_PICKLE_OPS = 10_000_000


def pickled_code(path: Path) -> str | None:
    """The first callable a pickle (a `.pth`) would import when loaded beyond what
    torch.load(weights_only=True) allows: 'posix.system' for a booby-trapped checkpoint.
    None when there is none or the file is not a pickle. Nothing is unpickled: the
    opcodes are read, as pickletools does."""
    import pickletools
    import zipfile

    allowed = _allowed_globals()
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: the pickle is archive/data.pkl
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                with archive.open(name) as f:
                    return _foreign_global(f, pickletools, allowed)
        with open(path, "rb") as f:  # the legacy format: a few pickles, then raw storages
            for _ in range(4):
                found = _foreign_global(f, pickletools, allowed)
                if found:
                    return found
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return None


def _allowed_globals():
    """A test for global names: torch's own allowlist once torch is imported (at run
    time); before (`studio validate`, which must not import torch) any torch name, since
    the run still loads with weights_only and refuses the rest."""
    import sys

    if "torch" in sys.modules:
        try:
            from torch._weights_only_unpickler import _get_allowed_globals

            exact = set(_get_allowed_globals()) | PLAIN_GLOBALS
            return exact.__contains__
        except (ImportError, AttributeError):  # another torch version: the looser test
            pass
    return lambda name: name in PLAIN_GLOBALS or name.startswith("torch.")


def _foreign_global(f, pickletools, allowed) -> str | None:
    strings: list[str] = []
    for count, (op, arg, _) in enumerate(pickletools.genops(f)):
        if count > MAX_PICKLE_OPS:
            return None
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings = (strings + [arg])[-2:]
        elif op.name in ("GLOBAL", "INST"):
            name = str(arg).replace(" ", ".")
            if not allowed(name):
                return name
        elif op.name == "STACK_GLOBAL" and len(strings) == 2:
            name = ".".join(strings)
            if not allowed(name):
                return name
        elif op.name == "STOP":
            return None
    return None


def load_pth(path: Path) -> Any:
    """What a `.pth` holds, read with torch.load(weights_only=True): tensors and plain
    containers, never code. A UserError says whether the file carries code or is not a
    checkpoint at all."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols says nothing a user can act on
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError,
            AttributeError, TypeError) as exc:
        code = pickled_code(path)
        if code:
            raise UserError(f"{path.name}: not a plain state_dict of tensors, refused without running it: it "
                            f"contains pickled code (loading it would call {code}). Studio loads only weights: "
                            "convert it to safetensors (safetensors.torch.save_file(state_dict, "
                            "'model.safetensors')) where you trust it, or save a plain state_dict") from None
        # torch's own message for a refused pickle advises weights_only=False: not advice to pass on
        detail = type(exc).__name__ if isinstance(exc, pickle.UnpicklingError) else short(exc)
        raise UserError(f"{path.name}: not a plain state_dict of tensors, refused without running it; the file is "
                        f"damaged or not a PyTorch checkpoint ({detail})") from None
