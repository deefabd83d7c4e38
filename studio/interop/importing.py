"""`studio import`: another tool's generation text turned into a Studio pipeline that runs
image.diffusion, with what has no Studio equivalent listed by name.

A1111's infotext (studio.interop.a1111) maps key by key: `Steps` -> steps, `Sampler` and
`Schedule type` -> scheduler, `CFG scale` -> guidance_scale, `Seed` -> seed, `Size` ->
width and height, `Model` -> model, `Denoising strength` -> strength (image-to-image: the
infotext does not name the image, so `--image` must), `Clip skip` -> clip_skip (A1111
counts the last layer as 1, diffusers counts layers skipped), `<lora:name:weight>` tags
in the prompt -> loras by name. Everything else is listed, by its key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import UserError, clip
from studio.interop.a1111 import Infotext
from studio.runs.provenance import shown

# A1111's sampler (lower case) -> Studio's scheduler; with "Karras", the -karras one where Studio has it
SAMPLERS = {"euler": "euler", "euler a": "euler-a", "dpm++ 2m": "dpm++", "ddim": "ddim", "heun": "heun",
            "plms": "pndm", "unipc": "unipc", "ddpm": "ddpm"}
KARRAS = {"dpm++": "dpm++-karras", "euler": "euler-karras", "heun": "heun-karras"}
PLAIN_SCHEDULES = ("", "automatic", "default")
# keys that are read, or said in the pipeline's header instead of being listed as dropped
READ = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Denoising strength", "Clip skip",
        "Timestep spacing", "TI hashes", "Refiner", "Refiner switch at"}
NOTED = {"Model hash", "Lora hashes", "Version"}
HIRES = ("Hires upscale", "Hires steps", "Hires upscaler", "Hires resize-1", "Hires resize")
# <kind:name[:weight[:more]]>: A1111's extra networks in a prompt (a LoRA's second weight is its text encoder's)
EXTRA_NETWORK = re.compile(r"<(\w+):([^<>:]{1,200})(?::([^<>]{0,50}))?>")
MAX_SEED = 2**63 - 1


@dataclass
class Imported:
    """A pipeline and what the import says about it (each line a comment in the file and
    a line on the terminal)."""

    pipeline: dict[str, Any]
    dropped: list[str] = field(default_factory=list)  # "Key: value" with no Studio equivalent
    notes: list[str] = field(default_factory=list)
    source: str = "AUTOMATIC1111 parameters"  # what it was imported from, for the file's header


def from_infotext(info: Infotext, where: str, name: str, *, model: str | None = None,
                  image: Path | None = None) -> Imported:
    """The pipeline of an A1111 infotext; `model` and `image` given on the command line
    override or complete it."""
    params: dict[str, Any] = {}
    done = Imported({"name": name, "steps": [{"id": "image", "uses": "image.diffusion", "with": params}]})
    pairs = info.pairs
    _prompts(info, params, done)
    _numbers(pairs, params, where)
    _sampler(pairs, params, done)
    _model(pairs, params, done, model)
    _strength(pairs, params, done, where, image)
    _embeddings(pairs, params, done)
    _refiner(pairs, params, done, where)
    if "Timestep spacing" in pairs and pairs["Timestep spacing"] in ("linspace", "leading", "trailing"):
        params["timestep_spacing"] = pairs["Timestep spacing"]
    for key in ("Model hash", "Lora hashes", "Version"):
        if key in pairs:
            done.notes.append(f"{key}: {pairs[key]}")
    done.dropped.extend(f"{key}: {value}" for key, value in pairs.items() if key not in READ | NOTED)
    return done


def _prompts(info: Infotext, params: dict[str, Any], done: Imported) -> None:
    """Prompts, less the extra-network tags: `<lora:name:weight>` becomes a LoRA entry by
    name; any other tag (<hypernet:...>, <lyco:...>) is listed as dropped."""
    loras: list[dict[str, Any]] = []

    def take(tag: re.Match) -> str:
        kind, what, weight = tag.group(1), tag.group(2).strip(), (tag.group(3) or "").split(":")[0].strip()
        if kind != "lora":
            done.dropped.append(f"prompt tag {tag.group(0)}")
            return ""
        try:
            scale = float(weight) if weight else 1.0
        except ValueError:
            scale = math.nan
        if not math.isfinite(scale) or not -10 <= scale <= 10:
            done.dropped.append(f"prompt tag {tag.group(0)} (its weight is not a number from -10 to 10)")
            return ""
        loras.append({"name": what, "scale": scale})
        return ""

    prompt = EXTRA_NETWORK.sub(take, info.prompt).strip().rstrip(",").strip()
    negative = EXTRA_NETWORK.sub(take, info.negative_prompt).strip()
    if prompt:
        params["prompt"] = prompt
    if negative:
        params["negative_prompt"] = negative
    if loras:
        params["loras"] = loras
        done.notes.append("loras are named as A1111 names them; a name resolves through the model folders "
                          "(--models), or give each a path:")
    if re.search(r"[()\[\]]", prompt + negative):
        done.notes.append("A1111 reads (word:1.2) and [word] as weights: prompt_weighting: a1111 does the same "
                          "where the model has one CLIP text encoder")
        params["prompt_weighting"] = "a1111"


def _embeddings(pairs: dict[str, str], params: dict[str, Any], done: Imported) -> None:
    """A1111's `TI hashes: "name: hash, ..."` lists the embeddings the prompt called: each
    becomes an entry by name (its token the name, as in A1111)."""
    names = [part.split(":")[0].strip() for part in pairs.get("TI hashes", "").split(",")]
    names = list(dict.fromkeys(name for name in names if name))[:16]
    if names:
        params["embeddings"] = [{"name": name} for name in names]
        done.notes.append(f"TI hashes: {pairs['TI hashes']}; embeddings are named as A1111 names them, and resolve "
                          "through the model folders (--models)")


def _refiner(pairs: dict[str, str], params: dict[str, Any], done: Imported, where: str) -> None:
    """A1111's SDXL refiner: `Refiner: NAME [hash]` and `Refiner switch at: 0.8` become
    refiner (by name) and refiner_switch."""
    name = re.sub(r"\s*\[[0-9a-fA-F]{0,64}\]\s*$", "", pairs.get("Refiner", "")).strip()
    if not name:
        return
    params["refiner"] = name
    if "Refiner switch at" in pairs:
        switch = _float(pairs, "Refiner switch at", where, 0.0, 1.0)
        if not 0 < switch < 1:
            raise _bad(where, "Refiner switch at", pairs["Refiner switch at"], "a number between 0 and 1")
        params["refiner_switch"] = switch
    done.notes.append(f"refiner {name!r} is A1111's name: it resolves through the model folders (--models), or "
                      "give its path")


def _numbers(pairs: dict[str, str], params: dict[str, Any], where: str) -> None:
    if "Steps" in pairs:
        params["steps"] = _int(pairs, "Steps", where, 1, 1000)
    if "CFG scale" in pairs:
        params["guidance_scale"] = _float(pairs, "CFG scale", where, 0.0, 50.0)
    if "Seed" in pairs:
        params["seed"] = _int(pairs, "Seed", where, 0, MAX_SEED)
    if "Size" in pairs:
        size = re.fullmatch(r"\s*(\d{1,5})\s*x\s*(\d{1,5})\s*", pairs["Size"])
        if size is None:
            raise _bad(where, "Size", pairs["Size"], "WIDTHxHEIGHT, such as 512x512")
        params["width"], params["height"] = (_int({"Size": v}, "Size", where, 8, 4096) for v in size.groups())
    if "Clip skip" in pairs:
        skip = _int(pairs, "Clip skip", where, 1, 49)
        if skip > 1:  # A1111's 1 is the last layer: no skip
            params["clip_skip"] = skip - 1
            if params.get("prompt_weighting") and skip > 2:
                del params["prompt_weighting"]  # compel reads the last two layers only


def _sampler(pairs: dict[str, str], params: dict[str, Any], done: Imported) -> None:
    sampler = pairs.get("Sampler", "").strip()
    schedule = pairs.get("Schedule type", "").strip()
    if not sampler:
        return
    name = sampler.lower()
    if name.endswith(" karras"):  # A1111 before 1.9 named the schedule in the sampler: "DPM++ 2M Karras"
        name, schedule = name.removesuffix(" karras"), "Karras"
    scheduler = SAMPLERS.get(name)
    if scheduler is None:
        done.dropped.append(f"Sampler: {sampler} (Studio has no such sampler: the checkpoint's own is used)")
        if schedule.lower() not in PLAIN_SCHEDULES:
            done.dropped.append(f"Schedule type: {schedule}")
        return
    if schedule.lower() == "karras" and scheduler in KARRAS:
        scheduler = KARRAS[scheduler]
    elif schedule.lower() not in PLAIN_SCHEDULES:
        done.dropped.append(f"Schedule type: {schedule} (Studio's {scheduler} has the checkpoint's own noise levels)")
    params["scheduler"] = scheduler


def _model(pairs: dict[str, str], params: dict[str, Any], done: Imported, model: str | None) -> None:
    if model is not None:
        params["model"] = model
        if "Model" in pairs:
            done.notes.append(f"Model: {pairs['Model']} (replaced by --model {model})")
        return
    if pairs.get("Model", "").strip():
        params["model"] = pairs["Model"].strip()
        if params["model"] != "default":
            done.notes.append(f"model {params['model']!r} is A1111's name: it resolves through the model folders "
                              "(--models), or give --model PATH")
    else:
        done.notes.append("the infotext names no model: the embedded default is used; give --model")


def _strength(pairs: dict[str, str], params: dict[str, Any], done: Imported, where: str,
              image: Path | None) -> None:
    if "Denoising strength" not in pairs:
        if image is not None:
            raise UserError(f"{where}: --image was given, but the infotext is text-to-image (no Denoising "
                            "strength); leave --image out")
        return
    strength = _float(pairs, "Denoising strength", where, 0.0, 1.0)
    if any(key in pairs for key in HIRES):  # text-to-image with A1111's hires fix: the second pass's strength
        done.dropped.append(f"Denoising strength: {pairs['Denoising strength']} (of A1111's hires fix)")
        return
    if image is None:
        given = clip(pairs["Denoising strength"], 20)
        raise UserError(f"{where}: an image-to-image infotext (Denoising strength {given}), and an infotext does "
                        "not say which image it started from; give it with --image FILE")
    if strength <= 0:
        raise _bad(where, "Denoising strength", pairs["Denoising strength"], "a number above 0, at most 1")
    params["image"] = str(image)
    params["strength"] = strength


def _int(pairs: dict[str, str], key: str, where: str, low: int, high: int) -> int:
    text = pairs[key].strip()
    if not re.fullmatch(r"\d{1,20}", text) or not low <= int(text) <= high:
        raise _bad(where, key, pairs[key], f"a whole number from {low} to {high:,}")
    return int(text)


def _float(pairs: dict[str, str], key: str, where: str, low: float, high: float) -> float:
    text = pairs[key].strip()
    try:
        value = float(text) if re.fullmatch(r"[+-]?\d{1,10}(\.\d{0,10})?", text) else math.nan
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise _bad(where, key, pairs[key], f"a number from {low:g} to {high:g}")
    return value


def _bad(where: str, key: str, value: str, allowed: str) -> UserError:
    return UserError(f"{where}: infotext key {key!r} is {shown(clip(value, 60))!r}; Studio takes {allowed}")
