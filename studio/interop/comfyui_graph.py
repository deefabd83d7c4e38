"""ComfyUI's API-format graph as Studio reads it: a mapping of node id -> {class_type,
inputs}, checked for shape and size before anything follows its links; a link followed
only to the node types asked for, a cycle refused; the nodes the import used, so that the
others can be listed. Shared by comfyui (the image path) and comfyui_sdxl (the refiner).
"""

from __future__ import annotations

import json
import math
from typing import Any

from studio.errors import UserError, clip
from studio.runs.provenance import shown

MAX_NODES = 2_000  # real graphs have tens to a few hundred
MAX_CHAIN = 200  # links followed from the saved image back to its sources
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class Graph:
    """The checked graph, and the nodes the import used."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict) or not data:
            raise UserError(f"{where}: ComfyUI's graph is a mapping of node id -> {{class_type, inputs}}; got "
                            f"{'an empty one' if data == {} else 'a ' + type(data).__name__}")
        if len(data) > MAX_NODES:
            raise UserError(f"{where}: ComfyUI's graph has {len(data):,} nodes; at most {MAX_NODES:,} are read")
        for node_id, node in data.items():
            if not (isinstance(node, dict) and isinstance(node.get("class_type"), str)
                    and isinstance(node.get("inputs", {}), dict)):
                raise UserError(f"{where}: ComfyUI node {shown(clip(str(node_id), 40))!r} is not "
                                "{class_type, inputs}; the graph is damaged")
        self.nodes, self.where, self.used = data, where, set()

    def node(self, node_id: str, *types: str) -> dict[str, Any]:
        node = self.nodes[node_id]
        if node["class_type"] not in types:
            raise UserError(f"{self.where}: ComfyUI node {node_id} is a {shown(clip(node['class_type'], 60))}, where "
                            f"Studio reads {' or '.join(types)}; this graph is not one Studio imports")
        self.used.add(node_id)
        return node["inputs"]

    def source(self, inputs: dict[str, Any], name: str, *types: str, seen: tuple[str, ...] = ()) -> tuple[str, dict]:
        """The node a link input points to, its type among `types`; a cycle is refused."""
        link = inputs.get(name)
        if not (isinstance(link, list) and len(link) == 2 and str(link[0]) in self.nodes):
            raise UserError(f"{self.where}: a ComfyUI node's input {name!r} is not a link to a node of the graph "
                            f"({shown(clip(json.dumps(link), 60))}); the graph is damaged")
        node_id = str(link[0])
        if node_id in seen or len(seen) > MAX_CHAIN:
            raise UserError(f"{self.where}: ComfyUI node {node_id}'s links go round in a cycle; the graph is damaged")
        return node_id, self.node(node_id, *types)

    def value(self, inputs: dict[str, Any], name: str, kind: type | tuple[type, ...], node_id: str) -> Any:
        value = inputs.get(name)
        if isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, float)
                                                                      and not math.isfinite(value)):
            raise UserError(f"{self.where}: ComfyUI node {node_id}'s {name!r} is {shown(clip(json.dumps(value), 60))}, "
                            "not a literal value Studio reads (a link to another node is not imported)")
        return value


def model_name(file_name: str) -> str:
    """A model file ComfyUI names (below its kind folder, maybe in a subfolder, with
    Windows' separators) as Studio's model folders name it: the path without its suffix."""
    name = file_name.replace("\\", "/").strip("/")
    for suffix in WEIGHT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name
