"""ComfyUI's SDXL nodes in an import: the standard base + refiner graph as one
image.diffusion step (`refiner:`, `refiner_switch:`), and the SDXL text encoders.

The standard graph runs two KSamplerAdvanced on one schedule: the base (add_noise enable,
start_at_step 0, end_at_step k, return_with_leftover_noise enable) and the refiner on its
own checkpoint (add_noise disable, start_at_step k, end_at_step 10000 or the steps).
Studio's equivalent: model = the base's checkpoint, refiner = the refiner's, steps = the
samplers' (they must agree), refiner_switch = where the base stops (comfyui_switch says how
exactly), sampler, cfg and seed the base's. What the refiner does that Studio's refiner
pass cannot (its own cfg, sampler or prompts, LoRAs on it) is listed by node id.

CLIPTextEncodeSDXL and CLIPTextEncodeSDXLRefiner give their text as the prompt (Studio
gives both SDXL encoders one prompt); a different text_l, an aesthetic score other than
diffusers', and size conditioning other than the image's own are listed.
"""

from __future__ import annotations

from typing import Any

from studio.errors import UserError, clip
from studio.interop.comfyui_graph import Graph, model_name
from studio.interop.comfyui_switch import exact_ends, switch_for
from studio.interop.importing import Imported
from studio.runs.provenance import shown

ENCODERS = ("CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeSDXLRefiner")
# the SDXL encoders' size conditioning: diffusers' (Studio's) is the image's own size, uncropped
SIZES = {"CLIPTextEncodeSDXL": {"width": "width", "height": "height", "target_width": "width",
                                "target_height": "height", "crop_w": None, "crop_h": None},
         "CLIPTextEncodeSDXLRefiner": {"width": "width", "height": "height"}}
ASCORE = {"positive": 6.0, "negative": 2.5}  # diffusers' aesthetic scores, which Studio's refiner pass uses
SAMPLING = ("cfg", "sampler_name", "scheduler")


def encoded_text(graph: Graph, node_id: str, inputs: dict, done: Imported, port: str = "positive") -> str:
    """A text encoder's prompt. Studio gives SDXL's two text encoders one prompt: a
    CLIPTextEncodeSDXL's text_g, with a different text_l listed; a refiner encoder's
    aesthetic score is listed where not diffusers' (size_conditioning lists sizes)."""
    kind = graph.nodes[node_id]["class_type"]
    if kind == "CLIPTextEncode":
        return graph.value(inputs, "text", str, node_id)
    if kind == "CLIPTextEncodeSDXLRefiner":
        if "ascore" in inputs and inputs["ascore"] != ASCORE[port]:
            done.dropped.append(f"node {node_id} ({kind}) ascore: {shown(clip(str(inputs['ascore']), 20))} (Studio's "
                                f"refiner is conditioned on diffusers' aesthetic score for the {port} prompt, "
                                f"{ASCORE[port]:g})")
        return graph.value(inputs, "text", str, node_id)
    text = graph.value(inputs, "text_g", str, node_id)
    other = inputs.get("text_l", text)
    if other != text:
        done.dropped.append(f"node {node_id} ({kind}) text_l: {shown(clip(str(other), 80))!r} (Studio gives both "
                            "text encoders one prompt, text_g's)")
    return text


def size_conditioning(graph: Graph, params: dict[str, Any], done: Imported) -> None:
    """The SDXL encoders' sizes the import used that are not the image's own (uncropped),
    which Studio conditions on: listed by node. An image-to-image size is not known here."""
    if "width" not in params:
        return
    for node_id in sorted(graph.used, key=str):
        kind, inputs = graph.nodes[node_id]["class_type"], graph.nodes[node_id]["inputs"]
        for key, same_as in SIZES.get(kind, {}).items():
            expected = params[same_as] if same_as else 0
            if key in inputs and inputs[key] != expected:
                done.dropped.append(f"node {node_id} ({kind}) {key}: {shown(clip(str(inputs[key]), 20))} (Studio "
                                    f"conditions SDXL on the image's own size, uncropped: {expected})")


def refiner_pair(graph: Graph, base_id: str, base: dict, refiner_id: str, refiner: dict, params: dict[str, Any],
                 done: Imported) -> None:
    """The refiner sampler of a base/refiner pair into refiner and refiner_switch; the
    base's settings are already in params. Refused, naming both nodes, where the pair is
    not one schedule split at one step."""
    here = f"{graph.where}: ComfyUI nodes {base_id} (the base's KSamplerAdvanced) and {refiner_id} (the refiner's)"
    steps = params["steps"]
    theirs = graph.value(refiner, "steps", int, refiner_id)
    if theirs != steps:
        raise UserError(f"{here} run {steps} and {theirs} steps: Studio's refiner finishes the base's own schedule "
                        f"(refiner_switch splits one steps count). Give both samplers the same steps")
    end = _split(graph, here, base_id, base, refiner_id, refiner, steps)
    if "image" in params:
        raise UserError(f"{here}: the base starts from an image (VAEEncode); Studio's refiner finishes text-to-image "
                        "only. Start the base from an EmptyLatentImage, or drop the refiner")
    scheduler = params.get("scheduler", "default")
    switch = switch_for(steps, end, scheduler)
    if switch is None:
        near = sorted(exact_ends(steps, scheduler), key=lambda other: abs(other - end))[:3]
        raise UserError(f"{here}: the base stops at step {end} of {steps}; with Studio's {scheduler} scheduler no "
                        f"refiner_switch makes diffusers' base run exactly {end} steps (it splits by timestep). "
                        f"Set end_at_step and start_at_step to one of {', '.join(map(str, sorted(near)))}")
    params["refiner"] = _refiner_model(graph, refiner_id, refiner)
    params["refiner_switch"] = switch
    if switch != round(end / steps, 6):
        done.notes.append(f"refiner_switch {switch:g}, not {end}/{steps}: diffusers splits the schedule by timestep, "
                          f"and {switch:g} is where its base runs {end} of {steps} steps with {scheduler} on SDXL's "
                          "standard scheduler config, as ComfyUI's does")
    done.notes.append(f"refiner {params['refiner']!r} is ComfyUI's name: it resolves through the model folders "
                      "(--models), or give its path")
    for key in SAMPLING:
        if refiner.get(key) != base.get(key):
            done.dropped.append(f"node {refiner_id} {key}: {shown(clip(str(refiner.get(key)), 40))} (the refiner's "
                                f"own; Studio's refiner pass uses the base's {shown(clip(str(base.get(key)), 40))})")
    _refiner_prompts(graph, refiner_id, refiner, params, done)


def _split(graph: Graph, here: str, base_id: str, base: dict, refiner_id: str, refiner: dict, steps: int) -> int:
    """The step the base stops and the refiner starts at; refused where they differ, or
    where either does more than its half of one schedule."""
    start, end = (graph.value(base, key, int, base_id) for key in ("start_at_step", "end_at_step"))
    if graph.value(base, "add_noise", str, base_id) != "enable" or start != 0:
        raise UserError(f"{here}: the base must add noise and start at step 0 (add_noise: enable, start_at_step: 0), "
                        f"as Studio's model does; node {base_id} has add_noise: "
                        f"{shown(clip(str(base['add_noise']), 20))}, start_at_step: {start}")
    if not 0 < end < steps:
        raise UserError(f"{here}: the base stops at end_at_step {end} of {steps} steps; a refiner takes over between "
                        f"1 and {steps - 1}. Set node {base_id}'s end_at_step there")
    first, last = (graph.value(refiner, key, int, refiner_id) for key in ("start_at_step", "end_at_step"))
    if first != end:
        raise UserError(f"{here}: the base stops at step {end} and the refiner starts at step {first}: Studio's "
                        f"refiner takes over where the base stops. Set node {refiner_id}'s start_at_step to {end}")
    if last < steps:
        raise UserError(f"{here}: the refiner stops at end_at_step {last} of {steps} steps; Studio's refiner runs to "
                        f"the end. Set node {refiner_id}'s end_at_step to 10000")
    return end


def _refiner_model(graph: Graph, refiner_id: str, refiner: dict) -> str:
    """The refiner's checkpoint name; LoRA loaders on its way stay unused (listed)."""
    seen = (refiner_id,)
    node_id, inputs = graph.source(refiner, "model", "CheckpointLoaderSimple", "LoraLoader", seen=seen)
    while graph.nodes[node_id]["class_type"] == "LoraLoader":
        graph.used.discard(node_id)  # Studio's loras apply to the model, not to the refiner
        seen += (node_id,)
        node_id, inputs = graph.source(inputs, "model", "CheckpointLoaderSimple", "LoraLoader", seen=seen)
    return model_name(graph.value(inputs, "ckpt_name", str, node_id))


def _refiner_prompts(graph: Graph, refiner_id: str, refiner: dict, params: dict[str, Any], done: Imported) -> None:
    """The refiner's own prompt nodes: the base's text is fine, another is listed."""
    for key, port in (("prompt", "positive"), ("negative_prompt", "negative")):
        encode_id, encode = graph.source(refiner, port, *ENCODERS, seen=(refiner_id,))
        text = encoded_text(graph, encode_id, encode, done, port)
        if text.strip() != params.get(key, "").strip():
            done.dropped.append(f"node {encode_id} ({graph.nodes[encode_id]['class_type']}) {port} text: "
                                f"{shown(clip(text, 80))!r} (the refiner's own; Studio's refiner uses the model's "
                                f"{key.replace('_', ' ')})")
