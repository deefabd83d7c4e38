"""ComfyUI's API-format graph (the `prompt` text chunk of its PNGs, or a workflow saved with
"Save (API Format)") turned into an image.diffusion pipeline, for its core nodes.

The graph is a mapping of node id -> {class_type, inputs}; an input is a value or a link
[node id, output index]. The import starts at the image a SaveImage (or PreviewImage)
node saves and follows the links back: VAEDecode <- KSampler / KSamplerAdvanced, whose
model comes from CheckpointLoaderSimple through LoraLoader nodes, whose prompts are
CLIPTextEncode (or CLIPTextEncodeSDXL) nodes (CLIPSetLastLayer sets the clip skip), and whose latent is an
EmptyLatentImage (text-to-image) or a VAEEncode of a LoadImage, maybe through ImageScale
(image-to-image; a KSampler's denoise or a KSamplerAdvanced's start_at_step become
steps and strength exactly). Every other node is listed by id and type. SDXL's base and
refiner (two KSamplerAdvanced on one schedule) become one step with a refiner
(comfyui_sdxl). A lone KSamplerAdvanced that adds no noise or stops early, and other
samplers one after another (a hires pass), are refused, saying what Studio's equivalent
would be. Refused, located: a graph
that is not one (malformed), has more than MAX_NODES nodes, links in a cycle, or loads an
image that cannot be found beside the file it came from (give --image).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from studio.errors import UserError, clip
from studio.interop.comfyui_graph import MAX_CHAIN, Graph, model_name
from studio.interop.comfyui_sdxl import encoded_text, refiner_pair, size_conditioning
from studio.interop.importing import Imported
from studio.runs.provenance import shown

# ComfyUI's sampler -> Studio's scheduler; with the "karras" schedule, the -karras one where Studio has it
SAMPLERS = {"euler": "euler", "euler_ancestral": "euler-a", "heun": "heun", "dpmpp_2m": "dpm++", "ddim": "ddim",
            "uni_pc": "unipc", "uni_pc_bh2": "unipc", "ddpm": "ddpm"}
KARRAS = {"dpm++": "dpm++-karras", "euler": "euler-karras", "heun": "heun-karras"}
PLAIN = ("normal", "ddim_uniform")
SAVERS = ("SaveImage", "PreviewImage")
# KSamplerAdvanced's inputs as ComfyUI defaults them (a graph written by hand may leave them out)
ADVANCED = {"add_noise": "enable", "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}


def from_graph(text: str, where: str, name: str, base: Path, *, model: str | None = None,
               image: Path | None = None) -> Imported:
    """The pipeline of a ComfyUI API-format graph; `base` is the folder a LoadImage's file
    is looked for in when `image` does not say."""
    try:
        graph = Graph(json.loads(text), where)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{where}: ComfyUI's graph is not JSON ({clip(str(exc), 100)})") from None
    params: dict[str, Any] = {}
    done = Imported({"name": name, "steps": [{"id": "image", "uses": "image.diffusion", "with": params}]},
                    source="ComfyUI graph")
    saver = next((i for i, n in graph.nodes.items() if n["class_type"] in SAVERS), None)
    if saver is None:
        raise UserError(f"{where}: the ComfyUI graph has no SaveImage node; Studio imports the image one saves")
    decode_id, decode = graph.source(graph.node(saver, *SAVERS), "images", "VAEDecode", seen=(saver,))
    sampler_id, sampler = graph.source(decode, "samples", "KSampler", "KSamplerAdvanced", seen=(saver, decode_id))
    refiner_id = None
    base_id = _two_samplers(graph, sampler_id, sampler)
    if base_id is not None:  # SDXL's base then refiner: the base's sampler makes the image; see comfyui_sdxl
        refiner_id, sampler_id, sampler = sampler_id, base_id, graph.node(base_id, "KSamplerAdvanced")
    _sampling(graph, sampler_id, sampler, params, done)
    if graph.nodes[sampler_id]["class_type"] == "KSamplerAdvanced":
        sampler = {**ADVANCED, **sampler}
        if refiner_id is None:
            _advanced(graph, sampler_id, sampler, params["steps"], done)
    _model(graph, sampler, params, done, model, (saver, decode_id, sampler_id))
    _latent(graph, sampler_id, sampler, params, done, base, image)
    if refiner_id is not None:
        refiner = {**ADVANCED, **graph.node(refiner_id, "KSamplerAdvanced")}
        refiner_pair(graph, sampler_id, sampler, refiner_id, refiner, params, done)
    size_conditioning(graph, params, done)
    done.dropped.extend(f"node {i} ({shown(clip(n['class_type'], 60))})" for i, n in graph.nodes.items()
                        if i not in graph.used)
    return done


def _sampling(graph: Graph, node_id: str, inputs: dict, params: dict[str, Any], done: Imported) -> None:
    advanced = graph.nodes[node_id]["class_type"] == "KSamplerAdvanced"
    params["steps"] = _bounded(graph.value(inputs, "steps", int, node_id), 1, 1000, "steps", graph, node_id)
    params["guidance_scale"] = float(_bounded(graph.value(inputs, "cfg", (int, float), node_id), 0, 50, "cfg",
                                              graph, node_id))
    params["seed"] = _bounded(graph.value(inputs, "noise_seed" if advanced else "seed", int, node_id), 0,
                              2**63 - 1, "seed", graph, node_id)
    sampler, schedule = (graph.value(inputs, key, str, node_id) for key in ("sampler_name", "scheduler"))
    scheduler = SAMPLERS.get(sampler)
    if scheduler is None:
        done.dropped.append(f"sampler_name: {sampler} (Studio has no such sampler: the checkpoint's own is used)")
    elif schedule == "karras" and scheduler in KARRAS:
        params["scheduler"] = KARRAS[scheduler]
    else:
        params["scheduler"] = scheduler
        if schedule not in PLAIN:
            done.dropped.append(f"scheduler: {schedule} (Studio's {scheduler} has the checkpoint's own noise levels)")


def _two_samplers(graph: Graph, node_id: str, sampler: dict) -> str | None:
    """The base sampler's id where `sampler` finishes another's latent as SDXL's refiner
    does (two KSamplerAdvanced: the first returns its leftover noise, the second adds
    none), None where it finishes no sampler's. Any other pair (a hires pass, a KSampler
    after a sampler) is refused; the message gives the refiner equivalent."""
    link = sampler.get("latent_image")
    first_id = str(link[0]) if isinstance(link, list) and len(link) == 2 else None
    first = graph.nodes.get(first_id) if first_id is not None else None
    if first is None or first["class_type"] not in ("KSampler", "KSamplerAdvanced"):
        return None
    inputs = first["inputs"]
    if (first["class_type"] == graph.nodes[node_id]["class_type"] == "KSamplerAdvanced"
            and sampler.get("add_noise") == "disable" and inputs.get("return_with_leftover_noise") == "enable"):
        return first_id
    steps, end = inputs.get("steps"), inputs.get("end_at_step")
    switch = (f", refiner_switch: {end / steps:.3g}" if isinstance(steps, int) and isinstance(end, int)
              and 0 < end < steps else "")
    raise UserError(
        f"{graph.where}: ComfyUI node {node_id} ({graph.nodes[node_id]['class_type']}) finishes the latent of "
        f"sampler node {first_id} ({first['class_type']}{f', which stops at step {end} of {steps}' if switch else ''}"
        "): two samplers, as a base/refiner pair runs them. Studio imports one sampler; the equivalent is one "
        f"image.diffusion step with model: {_checkpoint(graph, inputs)}, refiner: {_checkpoint(graph, sampler)}"
        f"{switch} (SDXL). Write that step by hand, or import a graph with one sampler, or a base/refiner pair "
        "(the base returning its leftover noise, the refiner adding none)")


def _checkpoint(graph: Graph, sampler: dict) -> str:
    """The checkpoint a sampler's model comes from, through LoRA loaders, for a message."""
    link = sampler.get("model")
    for _ in range(MAX_CHAIN):
        node = graph.nodes.get(str(link[0])) if isinstance(link, list) and len(link) == 2 else None
        if node is None:
            break
        if node["class_type"] == "CheckpointLoaderSimple" and isinstance(node["inputs"].get("ckpt_name"), str):
            return model_name(shown(clip(node["inputs"]["ckpt_name"], 100)))
        link = node["inputs"].get("model")
    return "?"


def _advanced(graph: Graph, node_id: str, inputs: dict, steps: int, done: Imported) -> None:
    """KSamplerAdvanced's own inputs: the whole schedule with noise added is a KSampler;
    a start past 0 is image-to-image's strength (see _latent); a sampler that adds no noise
    or stops before the last step makes a picture Studio cannot, and is refused."""
    add_noise, leftover = (graph.value(inputs, key, str, node_id) for key in ("add_noise", "return_with_leftover_noise"))
    end = graph.value(inputs, "end_at_step", int, node_id)
    here = f"{graph.where}: ComfyUI node {node_id} (KSamplerAdvanced)"
    if add_noise != "enable":
        raise UserError(f"{here} has add_noise: {shown(clip(add_noise, 20))}: it denoises a latent without adding "
                        "noise, as the second sampler of a pair does. Studio adds the seed's noise to every sample; "
                        "set add_noise to enable, or import the graph whose sampler adds it")
    if end < steps:
        left = ("returns the latent with its leftover noise" if leftover == "enable"
                else "jumps to the end of the schedule")
        raise UserError(f"{here} stops at end_at_step {end} of {steps} steps and {left}: the saved image is not a "
                        "whole sample Studio can make. Set end_at_step to 10000 (or the steps), or import the graph "
                        "of the sampler that finishes it")
    if leftover == "enable":
        done.notes.append(f"node {node_id} return_with_leftover_noise: enable has no effect: the sampler runs to its "
                          "last step")


def _model(graph: Graph, sampler: dict, params: dict[str, Any], done: Imported, model: str | None,
           seen: tuple[str, ...]) -> None:
    """The checkpoint through any LoraLoader nodes; the prompts and the clip skip."""
    loras: list[dict[str, Any]] = []
    node_id, inputs = graph.source(sampler, "model", "CheckpointLoaderSimple", "LoraLoader", seen=seen)
    while graph.nodes[node_id]["class_type"] == "LoraLoader":
        lora = graph.value(inputs, "lora_name", str, node_id)
        scale = _bounded(graph.value(inputs, "strength_model", (int, float), node_id), -10, 10, "strength_model",
                         graph, node_id)
        loras.insert(0, {"name": model_name(lora), "scale": float(scale)})
        if inputs.get("strength_clip") != inputs.get("strength_model"):
            done.notes.append(f"LoraLoader node {node_id}: strength_clip differs from strength_model; Studio "
                              "applies one scale to both")
        seen += (node_id,)
        node_id, inputs = graph.source(inputs, "model", "CheckpointLoaderSimple", "LoraLoader", seen=seen)
    checkpoint = model_name(graph.value(inputs, "ckpt_name", str, node_id))
    params["model"] = model if model is not None else checkpoint
    if model is None:
        done.notes.append(f"model {checkpoint!r} is ComfyUI's name: it resolves through the model folders (--models)"
                          ", or give --model PATH")
    if loras:
        params["loras"] = loras
        done.notes.append("loras are named as ComfyUI names them; a name resolves through the model folders")
    for key, port in (("prompt", "positive"), ("negative_prompt", "negative")):
        encode_id, encode = graph.source(sampler, port, "CLIPTextEncode", "CLIPTextEncodeSDXL", seen=seen)
        text = encoded_text(graph, encode_id, encode, done)
        if text.strip():
            params[key] = text
        _clip_skip(graph, encode, params, encode_id)


def _clip_skip(graph: Graph, encode: dict, params: dict[str, Any], encode_id: str) -> None:
    link = encode.get("clip")
    if not (isinstance(link, list) and len(link) == 2 and str(link[0]) in graph.nodes):
        return
    if graph.nodes[str(link[0])]["class_type"] == "CLIPSetLastLayer":
        node_id, inputs = graph.source(encode, "clip", "CLIPSetLastLayer", seen=(encode_id,))
        last = _bounded(graph.value(inputs, "stop_at_clip_layer", int, node_id), -48, -1, "stop_at_clip_layer",
                        graph, node_id)
        if last < -1:  # ComfyUI's -1 is the last layer; -2 skips one
            params["clip_skip"] = -last - 1


def _latent(graph: Graph, sampler_id: str, sampler: dict, params: dict[str, Any], done: Imported, base: Path,
            image: Path | None) -> None:
    node_id, inputs = graph.source(sampler, "latent_image", "EmptyLatentImage", "VAEEncode", seen=(sampler_id,))
    if graph.nodes[node_id]["class_type"] == "EmptyLatentImage":
        for key in ("width", "height"):
            params[key] = _bounded(graph.value(inputs, key, int, node_id), 8, 4096, key, graph, node_id)
        key = "start_at_step" if graph.nodes[sampler_id]["class_type"] == "KSamplerAdvanced" else "denoise"
        value = sampler.get(key, 0 if key == "start_at_step" else 1)
        if value != (0 if key == "start_at_step" else 1):  # partial denoising of an empty latent: no equivalent
            done.dropped.append(f"node {sampler_id} {key}: {clip(str(value), 20)} (on an empty latent)")
        return
    pixels_id, pixels = graph.source(inputs, "pixels", "LoadImage", "ImageScale", seen=(sampler_id, node_id))
    if graph.nodes[pixels_id]["class_type"] == "ImageScale":
        for key in ("width", "height"):
            params[key] = _bounded(graph.value(pixels, key, int, pixels_id), 8, 4096, key, graph, pixels_id)
        pixels_id, pixels = graph.source(pixels, "image", "LoadImage", seen=(sampler_id, node_id, pixels_id))
    named = graph.value(pixels, "image", str, pixels_id)
    if image is None:
        image = base / Path(named).name
        if not image.is_file():
            raise UserError(f"{graph.where}: ComfyUI node {pixels_id} (LoadImage) loads {shown(clip(named, 80))!r} "
                            f"from ComfyUI's input folder, not found beside it ({shown(image)}); give the picture "
                            "with --image FILE")
    params["image"] = str(image)
    _strength(graph, sampler_id, sampler, params, done)


def _strength(graph: Graph, node_id: str, sampler: dict, params: dict[str, Any], done: Imported) -> None:
    """Image-to-image as diffusers runs it: `steps` make the schedule and the last
    int(steps * strength) of them run. KSamplerAdvanced runs its schedule of `steps` from
    start_at_step; KSampler with denoise d runs its `steps` as the last of int(steps / d)
    (ComfyUI's rule), so Studio's steps are that schedule's."""
    steps = params["steps"]
    if graph.nodes[node_id]["class_type"] == "KSamplerAdvanced":
        start = _bounded(graph.value(sampler, "start_at_step", int, node_id), 0, steps - 1, "start_at_step", graph,
                         node_id)
        total, kept = steps, steps - start
    else:
        denoise = _bounded(graph.value(sampler, "denoise", (int, float), node_id), 0.001, 1, "denoise", graph,
                           node_id)
        total = _bounded(int(steps / denoise), 1, 1000, "steps / denoise", graph, node_id)
        kept = steps
        if total != steps:
            done.notes.append(f"node {node_id} runs {steps} steps of a {total}-step schedule (denoise {denoise:g}); "
                              f"Studio's steps: {total}, strength: {denoise:g} (A1111's way to say the same)")
    strength = kept / total
    while int(total * strength) < kept:  # the float must give back the whole count
        strength = math.nextafter(strength, 2.0)
    params["steps"], params["strength"] = total, min(strength, 1.0)


def _bounded(value: Any, low: float, high: float, name: str, graph: Graph, node_id: str) -> Any:
    if not low <= value <= high:
        raise UserError(f"{graph.where}: ComfyUI node {node_id}'s {name} is {clip(str(value), 40)}; Studio takes "
                        f"{low:g} to {high:g}")
    return value
