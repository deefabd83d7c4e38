"""Textual-inversion embeddings for image.diffusion: checked before the run, loaded into
a text-to-image pipeline with diffusers' own `load_textual_inversion`, unloaded when a
later batch does not ask for them.

An embedding is a few learned vectors that a prompt calls by a token. The files come in
the layouts the tools write:
- A1111's `.pt`: a pickle holding `string_to_param: {'*': tensor}` (read with
  torch.load(weights_only=True) only; a pickle that would call code is refused unread);
- A1111's `.safetensors`: `emb_params`;
- kohya's SDXL `.safetensors`: `clip_l` and `clip_g`, one set for each text encoder;
- diffusers' learned_embeds.safetensors / .bin: `{token: tensor}`.
Each is read into {text encoder: vectors} here and handed to diffusers as a tensor with
its token. The token is what a prompt writes: by default the file's name without suffix
(A1111's rule, so `easynegative.safetensors` answers to "easynegative"), or for a
diffusers file named learned_embeds the token it was trained with. CLIP's tokenizer reads
prompts in lower case, so tokens are loaded in lower case and a prompt's spelling of one
is made the loaded spelling before it is encoded (diffusers' multi-vector expansion,
token -> token token_1 ..., matches the spelling exactly).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from studio.weights import (file_sha256, local_path, named_entry, pickled_code, read_config, safetensors_dtypes,
                            safetensors_problem, safetensors_shapes)
from studio_image.diffusion_lora import nonfinite_problem

MAX_EMBEDDINGS = 16  # on one item; A1111 users give a few negative ones and a style
# an embedding is kilobytes (a 75-vector SDXL one: about 600 KB in fp32); past this it is a model
MAX_EMBEDDING_BYTES = 50 * 2**20
MAX_VECTORS = 75  # what fits CLIP's 77-token window beside its start and end tokens
SUFFIXES = (".safetensors", ".pt", ".bin")
PICKLES = (".pt", ".bin")
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
# where a prompt's text stops being part of a token: the A1111 weighting syntax and separators
TOKEN_PATTERN = re.compile(r"^[^\s,()\[\]:\\]{1,100}$")
ENCODERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}
FAMILIES = {(768,): "SD 1.x", (1024,): "SD 2.x", (768, 1280): "SDXL"}


class Embedding(BaseModel):
    """One textual-inversion file and the token a prompt calls it by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(None, min_length=1, max_length=1000, description=(
        "A textual-inversion file (.safetensors, or .pt/.bin holding plain tensors): A1111, kohya (SDXL) or "
        "diffusers layout, relative to the pipeline file."))
    name: str | None = Field(None, min_length=1, max_length=1000, description=(
        "Instead of path: an embedding in your model folders by name (`studio models list --kind embedding`)."))
    token: str | None = Field(None, max_length=100, description=(
        "What the prompt writes to call it; default: the file's name without suffix, as A1111 ("
        "easynegative.safetensors: 'easynegative'). Case does not matter, as in A1111."))
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "Filled in by Studio for the manifest and the cache key; when given, the file must have this hash."))

    @model_validator(mode="before")
    @classmethod
    def name_becomes_path(cls, data: Any, info: ValidationInfo) -> Any:
        """A `name:` is looked up in the user's model folders, as a LoRA's."""
        return named_entry(data, info, field="path", kind="embedding", fields=cls.model_fields,
                           needs="an embedding entry needs `path:` (a file) or `name:` (an embedding in your model "
                                 "folders)",
                           both="give an embedding's `path:` or its `name:`, not both")


@dataclass(frozen=True)
class Vectors:
    """What an embedding file holds: its layout, the token it names itself (diffusers'),
    and per text encoder the shape of its vectors (count, width)."""

    layout: str
    own_token: str | None
    shapes: dict[str, tuple[int, int]]


# -- reading a file's layout ----------------------------------------------------------


def layout_of(shapes: dict[str, list[int]], where: str) -> Vectors:
    """The layout of an embedding from its tensors' names and shapes, or a ValueError
    saying what was found and what is read."""
    if set(shapes) == {"clip_l", "clip_g"}:
        return Vectors("kohya SDXL", None, {"text_encoder": _rows(shapes["clip_l"], where, "clip_l"),
                                           "text_encoder_2": _rows(shapes["clip_g"], where, "clip_g")})
    if "string_to_param.*" in shapes:
        return Vectors("A1111", None, {"text_encoder": _rows(shapes["string_to_param.*"], where, "string_to_param")})
    if set(shapes) == {"emb_params"}:
        return Vectors("A1111", None, {"text_encoder": _rows(shapes["emb_params"], where, "emb_params")})
    if len(shapes) == 1:
        token, shape = next(iter(shapes.items()))
        return Vectors("diffusers", token, {"text_encoder": _rows(shape, where, token)})
    found = ", ".join(_clip(k, 60) for k in list(shapes)[:4]) or "no tensors"
    raise ValueError(f"{where} is not a textual-inversion embedding Studio reads (it holds {found}); an embedding "
                     "holds emb_params or string_to_param (A1111), clip_l and clip_g (SDXL) or one {token: vectors} "
                     "(diffusers). Is it a LoRA (loras:) or a model?")


def _rows(shape: list[int], where: str, key: str) -> tuple[int, int]:
    """(vectors, width) of one tensor: a vector [width] is one row."""
    rows = [1, *shape] if len(shape) == 1 else shape
    if len(rows) != 2 or 0 in rows:
        raise ValueError(f"{where}: tensor {_clip(key, 60)!r} has shape {shape}; an embedding's vectors are "
                         "[vectors, width] or one [width]: the file is damaged or not an embedding")
    if rows[0] > MAX_VECTORS:
        raise ValueError(f"{where}: tensor {_clip(key, 60)!r} holds {rows[0]} vectors; an embedding has at most "
                         f"{MAX_VECTORS} (what fits a prompt): the file is not an embedding")
    return rows[0], rows[1]


def embedding_family(header: dict[str, Any]) -> dict[str, Any] | None:
    """An embedding's family from its safetensors header, for `studio models list`: the
    widths of its vectors say it (768 SD1, 1024 SD2, 768 + 1280 SDXL)."""
    shapes = {name: list(entry.get("shape") or []) for name, entry in header.items()
              if name != "__metadata__" and isinstance(entry, dict)}
    try:
        vectors = layout_of(shapes, "embedding")
    except ValueError:
        return None
    family = FAMILIES.get(tuple(width for _, width in vectors.shapes.values()))
    return {"family": family.replace("SD ", "SD").replace(".x", "")} if family else None


def pickle_shapes(path: Path, where: str) -> dict[str, list[int]]:
    """A .pt/.bin embedding's tensor names and shapes, read with torch.load(weights_only=True)
    after its pickle was checked for code (refused unread)."""
    return {key: list(tensor.shape) for key, tensor in pickle_tensors(path, where).items()}


def pickle_tensors(path: Path, where: str) -> dict[str, Any]:
    """A .pt/.bin embedding's tensors, flattened to A1111's `string_to_param.*` or the
    file's own keys. A ValueError when the pickle would call code (found from its
    opcodes, nothing unpickled) or torch.load(weights_only=True) cannot read it."""
    unpacked = _unpacked_size(path)
    if unpacked > MAX_EMBEDDING_BYTES:
        raise ValueError(f"{where} unpacks to {unpacked / 2**20:.0f} MB; an embedding is kilobytes (at most "
                         f"{MAX_EMBEDDING_BYTES // 2**20} MB here): it is not an embedding")
    code = pickled_code(path)
    if code:
        raise ValueError(f"{where} is a pickle that would call {code} when loaded; Studio never runs code from a "
                         "file. Use the .safetensors version of the embedding")
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from studio.weights import short

        raise ValueError(f"{where} could not be read as plain tensors (torch.load with weights_only): {short(exc)}; "
                         "use the .safetensors version of the embedding") from None
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict) and "*" in data["string_to_param"]:
        tensors = {"string_to_param.*": data["string_to_param"]["*"]}
    elif isinstance(data, dict):
        tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    elif isinstance(data, torch.Tensor):
        tensors = {"emb_params": data}
    else:
        raise ValueError(f"{where} holds a {type(data).__name__}, not tensors: it is not an embedding")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{where} holds NaN or Inf values (tensor {_clip(key, 60)!r}): the file is damaged, or "
                             "was saved from a training run that diverged; use another embedding file")
    return tensors


def _unpacked_size(path: Path) -> int:
    """What torch.load would unpack: a zip archive's (torch.save's format) entries as they
    declare their sizes, else the file's own size; a compressed entry cannot make memory
    go past what was checked."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        pass
    return path.stat().st_size


# -- checks before the run ------------------------------------------------------------


def checked(embedding: Embedding, path: Path, where: str) -> tuple[Embedding, Vectors]:
    """The entry with its resolved path, sha256 and token, and what the file holds; a
    ValueError saying what is wrong with the file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        raise ValueError(f"{where} not found (looked in {_clip(str(path), 300)!r}); give a path relative to the "
                         "pipeline file, or name: an embedding in your model folders") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{where} is not a regular file; give one embedding file ({', '.join(SUFFIXES)})")
    if st.st_size > MAX_EMBEDDING_BYTES:
        raise ValueError(f"{where} is {st.st_size / 2**20:.0f} MB; an embedding is kilobytes (at most "
                         f"{MAX_EMBEDDING_BYTES // 2**20} MB here): is it a model or a LoRA?")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{where} is a {suffix or 'suffix-less'} file; an embedding is {', '.join(SUFFIXES)}")
    if suffix == ".safetensors":
        problem = safetensors_problem(path)
        if problem:
            raise ValueError(f"{where}: {problem}")
        odd = {k: d for k, d in safetensors_dtypes(path).items() if d not in FLOAT_DTYPES}
        if odd:
            key = next(iter(odd))
            raise ValueError(f"{where}: tensor {_clip(key, 60)!r} holds {odd[key]} numbers; an embedding's vectors "
                             f"are floating point ({', '.join(FLOAT_DTYPES)})")
        vectors = layout_of(safetensors_shapes(path), where)
        problem = nonfinite_problem(path)  # read from the raw bytes, as a LoRA's
        if problem:
            raise ValueError(f"{where} {problem.replace('LoRA', 'embedding')}")
    else:
        vectors = layout_of(pickle_shapes(path, where), where)
    digest = file_sha256(path)
    if embedding.sha256 and embedding.sha256 != digest:
        raise ValueError(f"{where} has sha256 {digest}, not the {embedding.sha256} the pipeline pins; it was "
                         "replaced or is another file")
    token = default_token(embedding.token, path, vectors)
    problem = token_problem(token, embedding.token is None)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return embedding.model_copy(update={"path": str(path.resolve()), "sha256": digest, "token": token}), vectors


def default_token(given: str | None, path: Path, vectors: Vectors) -> str:
    """The token in lower case (CLIP reads prompts so): the one given, else diffusers'
    own for its learned_embeds files, else the file's stem (A1111's rule)."""
    if given is not None:
        return given.strip().lower()
    if vectors.own_token and path.stem.startswith("learned_embeds"):
        return vectors.own_token.strip().lower()
    return path.stem.lower()


def token_problem(token: str, from_stem: bool) -> str | None:
    if TOKEN_PATTERN.match(token):
        return None
    fix = "give `token:` (the word your prompt writes)" if from_stem else "give another token"
    return (f"token {_clip(token, 60)!r} {'(the file name) ' if from_stem else ''}cannot be one prompt word: a token "
            f"is 1 to 100 characters without spaces, commas, brackets, colons or backslashes; {fix}")


def checked_all(embeddings: list[Embedding], resolve: Callable[[str], Path], model: str, config: str | None,
                default_weights: Path) -> list[Embedding]:
    """An item's embeddings, each checked (see `checked`), no token twice, each fitting
    the text encoders of `model` and not a word its tokenizer has already."""
    encoders = model_encoders(model, config, default_weights)
    found, seen = [], {}
    for i, embedding in enumerate(embeddings):
        where = f"embeddings[{i}] {embedding.path!r}"
        entry, vectors = checked(embedding, resolve(embedding.path), where)
        if entry.token in seen:
            raise ValueError(f"{where}: token {entry.token!r} is also the token of embeddings[{seen[entry.token]}]; "
                             "give each embedding its own `token:`")
        seen[entry.token] = i
        if encoders is not None:
            problem = fit_problem(vectors, encoders, entry.token)
            if problem:
                raise ValueError(f"{where} {problem} (model {_clip(model, 200)!r})")
        found.append(entry)
    return found


@dataclass(frozen=True)
class Encoder:
    width: int
    vocab: frozenset[str]


def fit_problem(vectors: Vectors, encoders: dict[str, Encoder], token: str) -> str | None:
    """Why an embedding does not fit the model's text encoders, or its token is a word
    the tokenizer has (diffusers refuses to load it then), or None."""
    model_widths = tuple(e.width for e in encoders.values())
    file_widths = tuple(width for _, width in vectors.shapes.values())
    if set(vectors.shapes) != set(encoders) or model_widths != file_widths:
        have, want = FAMILIES.get(file_widths), FAMILIES.get(model_widths)
        return (f"is {'an ' + have if have else 'an'} embedding ({vectors.layout} layout, vectors "
                f"{' + '.join(map(str, file_widths))} wide); the model's text encoder"
                f"{'s are' if len(model_widths) > 1 else ' is'} {' + '.join(map(str, model_widths))} wide"
                f"{' (' + want + ')' if want else ''}: use an embedding trained for this model's family")
    for name, encoder in encoders.items():
        count = vectors.shapes[name][0]
        # diffusers refuses a token its tokenizer has; a whole word (CLIP's `word</w>`) is refused too, or
        # that word would call the embedding in every prompt
        taken = [t for t in [token, *(f"{token}_{i}" for i in range(1, count))]
                 if t in encoder.vocab or f"{t}</w>" in encoder.vocab]
        if taken:
            return (f"has token {taken[0]!r}, which the model's {ENCODERS[name]} already has as a word; give another "
                    "`token:` (one the prompt cannot mean otherwise, e.g. with a prefix)")
    return None


def model_encoders(model: str, config: str | None, default_weights: Path) -> dict[str, Encoder] | None:
    """The model's CLIP text encoders: width and the tokenizer's words, from the configs
    of its folder (a single file: its config folder's or its family's; Studio builds a
    single file's tokenizers from CLIP's vocabulary). None when they cannot be read here."""
    root = local_path(model, default_weights)
    if root is None:
        return None
    folder = root
    if root.is_file():
        folder = Path(config) if config is not None else _family_folder(root)
        if folder is None or not folder.is_dir():
            return None
    index = read_config(folder / "model_index.json") or {}
    encoders = {}
    for name, tokenizer in ENCODERS.items():
        if name not in index:
            continue
        width = (read_config(folder / name / "config.json") or {}).get("hidden_size")
        if not isinstance(width, int):
            return None
        # a single file's tokenizer: its config folder's when it has one, else built from CLIP's vocabulary
        words = folder / tokenizer
        encoders[name] = Encoder(width, _vocab(words if root.is_dir() or words.is_dir() else None))
    return encoders or None


def _family_folder(path: Path) -> Path | None:
    from studio_image.diffusion_single_file import family_config, recognise

    try:
        found = recognise(path) if path.suffix.lower() == ".safetensors" else None
    except ValueError:
        return None
    return family_config(found) if found is not None and found.family is not None else None


def _vocab(folder: Path | None) -> frozenset[str]:
    """A tokenizer folder's words (vocab.json, or tokenizer.json's model vocab and added
    tokens); None: CLIP's own vocabulary, which Studio builds single files' tokenizers from."""
    if folder is None:
        from studio_diffusers.clip_vocab import vocab_and_merges

        return frozenset(vocab_and_merges()[0])
    for name in ("tokenizer.json", "vocab.json"):
        try:
            st = os.stat(folder / name)
        except OSError:
            continue
        return _vocab_file(str(folder / name), st.st_size, st.st_mtime_ns)
    return frozenset()


@lru_cache(maxsize=16)
def _vocab_file(path: str, size: int, mtime_ns: int) -> frozenset[str]:
    if size > 64 * 2**20:  # CLIP's is 2 MB; a model's own check refuses a hostile one
        return frozenset()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return frozenset()
    if path.endswith("tokenizer.json") and isinstance(data, dict):
        vocab = (data.get("model") or {}).get("vocab") or {}
        added = [t.get("content") for t in data.get("added_tokens") or [] if isinstance(t, dict)]
        return frozenset([*(vocab if isinstance(vocab, dict) else {}), *(a for a in added if isinstance(a, str))])
    return frozenset(data) if isinstance(data, dict) else frozenset()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- the run ----------------------------------------------------------------------------


def activate(pipe: Any, embeddings: list[Embedding], state: dict) -> None:
    """Make `embeddings` the pipeline's loaded textual inversions: those a previous batch
    loaded and this one does not want are unloaded first (diffusers'
    unload_textual_inversion), so nothing leaks into a later batch. `state` is kept with
    the loaded model between batches: {"loaded": [(sha256, token)], "tokens": {encoder:
    [tokens added]}}."""
    wanted = [(e.sha256, e.token) for e in embeddings]
    if state.get("loaded", []) == wanted:
        return
    for encoder, tokens in (state.get("tokens") or {}).items():
        if tokens:
            _unload(pipe, encoder, tokens)
    state["loaded"], state["tokens"] = [], {}
    for embedding in embeddings:
        for encoder, vectors in load_vectors(embedding).items():
            _load(pipe, embedding, encoder, vectors)
            added = [embedding.token, *(f"{embedding.token}_{i}" for i in range(1, vectors.shape[0]))]
            state["tokens"].setdefault(encoder, []).extend(added)
    state["loaded"] = wanted


def _unload(pipe: Any, encoder: str, tokens: list[str]) -> None:
    tokenizer = getattr(pipe, ENCODERS[encoder])
    backend = getattr(tokenizer, "_tokenizer", None)
    pipe.unload_textual_inversion(tokens, tokenizer=tokenizer, text_encoder=getattr(pipe, encoder))
    # diffusers rebuilds a fast tokenizer's backend from its JSON, which drops the decode that
    # transformers' CLIPTokenizer wraps around it (decode would write 'a</w>cat</w>', and compel
    # decodes to expand multi-vector tokens): wrap it again, as CLIPTokenizer's own __init__ does
    rewrap = getattr(tokenizer, "_wrap_decode_method_backend_tokenizer", None)
    if getattr(tokenizer, "_tokenizer", None) is not backend and rewrap is not None:
        rewrap()


def _load(pipe: Any, embedding: Embedding, encoder: str, vectors: Any) -> None:
    from studio import UserError
    from studio.weights import short

    text_encoder, tokenizer = getattr(pipe, encoder, None), getattr(pipe, ENCODERS[encoder], None)
    if text_encoder is None or tokenizer is None:
        raise UserError(f"embedding {embedding.path!r} has vectors for {encoder}, which this pipeline does not have")
    try:
        pipe.load_textual_inversion(vectors, token=embedding.token, text_encoder=text_encoder, tokenizer=tokenizer)
    except Exception as exc:
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            raise
        raise UserError(f"embedding {embedding.path!r} could not be loaded into the model: {short(exc)}") from None


def load_vectors(embedding: Embedding) -> dict[str, Any]:
    """An embedding's vectors per text encoder, [vectors, width] on the CPU, checked
    finite; a UserError names the file when it changed since it was checked."""
    import torch

    from studio import UserError
    from studio.weights import short

    path = Path(embedding.path)
    where = f"embedding {embedding.path!r}"
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(path)
        else:
            tensors = pickle_tensors(path, where)
        vectors = layout_of({k: list(t.shape) for k, t in tensors.items()}, where)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:  # changed on disk since it was checked
        raise UserError(f"{where} could not be read: {short(exc)}; copy or save it again") from None
    keys = {"kohya SDXL": {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}}.get(vectors.layout)
    found = {}
    for encoder in vectors.shapes:
        tensor = tensors[keys[encoder]] if keys else next(iter(tensors.values()))
        tensor = tensor.detach().float().reshape(-1, tensor.shape[-1])
        if not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{where} holds NaN or Inf values: the file is damaged, or was saved from a training run "
                            "that diverged; use another embedding file")
        found[encoder] = tensor
    return found


def spelled_as_loaded(text: str | None, embeddings: list[Embedding]) -> str | None:
    """A prompt with each embedding's token written as it was loaded (lower case):
    diffusers expands a multi-vector token only where the prompt spells it so."""
    if not text or not embeddings:
        return text
    for embedding in embeddings:
        token = embedding.token or ""
        text = re.sub(rf"(?<![\w]){re.escape(token)}(?![\w])", token.replace("\\", "\\\\"), text,
                      flags=re.IGNORECASE)
    return text
