"""`studio models list | show`: the checkpoints, LoRAs, embeddings, VAEs, ControlNets and
upscalers in the user's model folders (studio.models), and `--models DIR`, the option
run, validate and plan share. A model's family (SD1, SDXL, ...) is the plugins' to say,
through the identify_model hook: the host knows no model family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from studio.cli.common import echo, host, size_text

KIND_CHOICES = click.Choice(["checkpoint", "lora", "embedding", "vae", "controlnet", "upscaler"])
MODELS_OPTION = click.option(
    "--models", "model_dirs", multiple=True, metavar="DIR", type=click.Path(path_type=Path),
    help="A folder of your models (A1111/Forge, ComfyUI, InvokeAI or Fooocus: the tool's folder, its models/ "
         "or one kind folder), searched for names such as `model: dreamshaper_8` (repeatable; before "
         "STUDIO_MODELS).")


def _library(model_dirs):
    from studio.errors import UserError
    from studio.models.library import ENV, ModelLibrary

    library = ModelLibrary.from_dirs(model_dirs)
    if not library.roots:
        raise UserError(f"no model folders given: name them with --models DIR (repeatable) or {ENV} "
                        "(folders separated by ':' or ';' on Windows)")
    return library


@click.group()
def models() -> None:
    """The models in your model folders (--models DIR, STUDIO_MODELS)."""


@models.command("list")
@click.option("--kind", type=KIND_CHOICES, help="Only models of this kind.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list of models.")
@MODELS_OPTION
def list_models(kind, as_json, model_dirs) -> None:
    """Name, kind, family, size, short hash (sha256's first 10 hex digits, as model sites and
    A1111 show) and path of every model. Hashes are remembered by path, size and time."""
    from studio.models.hashes import HashCache, short_hash
    from studio.models.layout import KINDS

    library = _library(model_dirs)
    cache = HashCache()
    plugin_host = host()
    rows = []
    try:
        for model in library.all([kind] if kind else KINDS):
            library.say_hidden(model)
            digest = cache.sha256(model)
            rows.append({"name": model.name, "kind": model.kind, "family": _family(plugin_host, model.path),
                         "size": model.size, "hash": short_hash(digest), "sha256": digest, "path": str(model.path)})
    finally:
        cache.save()
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    library.warn()
    if not rows:
        echo("no models found" + (f" of kind {kind}" if kind else ""), err=True)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        echo(f"{r['name']:<{width}}  {r['kind']:<10}  {r['family'] or '?':<6}  {size_text(r['size']):>9}  "
             f"{r['hash'] or '-':<10}  {r['path']}")


@models.command("show")
@click.argument("name")
@click.option("--kind", type=KIND_CHOICES, help="Look only among models of this kind.")
@click.option("--json", "as_json", is_flag=True, help="The facts as one JSON object.")
@MODELS_OPTION
def show(name, kind, as_json, model_dirs) -> None:
    """What the model called NAME says about itself: for a safetensors file its tensors,
    dtypes and metadata (a LoRA's training metadata), with its size and hash."""
    from studio.models.describe import safetensors_facts
    from studio.models.hashes import HashCache, short_hash

    model = _find(_library(model_dirs), name, kind)
    cache = HashCache()
    digest = cache.sha256(model)
    cache.save()
    facts = safetensors_facts(model.path)
    header = facts.pop("header", {})
    found = {"name": model.name, "kind": model.kind, "family": _family(host(), model.path, header),
             "size": model.size, "hash": short_hash(digest), "sha256": digest, "path": str(model.path), **facts}
    if as_json:
        echo(json.dumps(found, indent=2))
        return
    for key, value in found.items():
        if key == "metadata":
            echo(f"metadata:{'' if value else ' none'}")
            for meta_key, meta_value in value.items():
                echo(f"  {meta_key}: {meta_value}")
        elif key == "dtypes":
            echo("dtypes: " + ", ".join(f"{d} x{n}" for d, n in value.items()))
        else:
            echo(f"{key}: {size_text(value) if key == 'size' else '?' if value in (None, '') else value}")


def _find(library, name: str, kind: str | None):
    """The model called `name`, among every kind unless `kind` is given."""
    from studio.errors import UserError, did_you_mean
    from studio.models.layout import KINDS
    from studio.models.library import ModelNotFound

    misses = []
    for each in [kind] if kind else KINDS:
        try:
            return library.find(name, each)
        except ModelNotFound as exc:
            misses.append(str(exc))
    if kind:
        raise UserError(misses[0])
    names = [m.name for m in library.all()]
    raise UserError(f"no model is called {name!r} in the model folders.{did_you_mean(name, names)} "
                    "See `studio models list`")


def _family(plugin_host, path: Path, header: dict[str, Any] | None = None) -> str | None:
    """The family a plugin recognises (identify_model), else None. The header is read
    only when some plugin implements the hook."""
    if not plugin_host.hooks.identify_model.get_hookimpls():
        return None
    if header is None:
        header = _header(path)
    try:
        answer = plugin_host.hooks.identify_model(path=path, header=header)
    except Exception as exc:  # a plugin's bug must not break the listing
        echo(f"warning: identify_model failed for {path.name}: {type(exc).__name__}: {exc}", err=True)
        return None
    family = answer.get("family") if isinstance(answer, dict) else None
    return str(family) if family else None


def _header(path: Path) -> dict[str, Any]:
    if path.suffix.lower() not in (".safetensors", ".sft") or not path.is_file():
        return {}
    from studio.models.describe import safetensors_facts

    return safetensors_facts(path).get("header", {})
