"""eval.metrics: a pipeline step that measures an upstream step's outputs against a
folder of reference examples and writes the numbers as JSON (and into the manifest)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from studio import Artifact, Generator, Params, UserError, media, media_input, model_input
from studio.weights import input_path
from studio_eval.collect import SOURCES
from studio_eval.features import DEFAULT_WEIGHTS

SUMMARY_KEYS = ("fid_studio_features", "kid_studio_features", "precision", "recall", "class_coverage",
                "label_agreement", "mode_collapse", "perplexity", "distinct_2", "repetition_4",
                "log_mel_frechet", "vae_latent_frechet", "pieces")


class Metrics(Generator):
    name = "eval.metrics"
    description = ("Measures every item of an upstream step against a reference folder: images by FID, KID, "
                   "precision, recall and class coverage in Studio's feature network; MIDI by muspy's metrics; "
                   "text by perplexity, distinct-n and repetition; audio by log-mel and audio-VAE Fréchet "
                   "distances. Writes metrics.json.")
    outputs = {"metrics": media.JSON}
    default_weights = DEFAULT_WEIGHTS
    version = "1"

    class Params(Params):
        items: list[Artifact] = media_input(
            "*/*", min_length=1, max_length=20_000,
            description="What to measure: a reference to a swept step gives all its items.")
        reference: str | None = Field(None, max_length=4096, description=(
            "A folder of real examples (sub-folders as classes, or a metadata.jsonl with labels), relative to the "
            "pipeline file, or sklearn:digits / emoji:noto. Needed for images and audio; optional for text and "
            "MIDI."))
        model: str = model_input("default", files=("config.json",), description=(
            "The image feature network: 'default' (embedded, studio-features-v1) or a directory that "
            "`studio train eval.metrics` wrote."))

        @field_validator("reference")
        @classmethod
        def reference_is_a_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
            if value is None or value in SOURCES:
                return value
            path = input_path(value, info)
            if not path.is_dir():
                raise ValueError(f"reference {value!r}: no such folder ({path}); give a folder of real examples")
            return str(path)

        @field_validator("model")
        @classmethod
        def model_is_a_feature_network(cls, value: str, info: ValidationInfo) -> str:
            """config.json and model.safetensors read and checked before anything loads
            (the network's size, the weights' shapes): see features.network_problem."""
            if value == "default":
                return value
            from studio_eval.features import network_problem

            problem = network_problem(input_path(value, info))
            if problem:
                raise ValueError(f"model {value!r}: {problem}")
            return value

    def weights_id(self, params: Params) -> str:
        """The feature network's files and the reference folder's (names, sizes, times):
        new reference files are new numbers, not a cached answer."""
        parts = [super().weights_id(params)]
        if params.reference and params.reference not in SOURCES:
            from studio_eval.collect import FAMILIES

            suffixes = {s for group in FAMILIES.values() for s in group} | {".jsonl"}
            digest = hashlib.sha256()
            for path in _reference_files(Path(params.reference), suffixes):
                stat = path.stat()
                digest.update(f"{path.relative_to(params.reference)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
            parts.append(digest.hexdigest())
        return "|".join(parts)

    def generate(self, params: Params, ctx) -> dict:
        from studio_eval.collect import MEDIA_FAMILY, MediaSet, Member, collect
        from studio_eval.measure import evaluate

        families = {MEDIA_FAMILY.get(a.media_type) for a in params.items}
        if None in families or len(families) != 1:
            kinds = sorted({a.media_type for a in params.items})
            raise UserError(f"items: {', '.join(kinds)}; eval.metrics measures one kind at a time, of images, "
                            "audio, MIDI or text: point items at one output port")
        (family,) = families
        members = [Member(a.path, family, _asked(a)) for a in params.items]
        origin = (params.items[0].producer or "input").split("@")[0]
        generated = MediaSet(f"{len(members)} items of step {origin!r}", members)
        reference = collect(Path(params.reference), family=family) if params.reference else None
        ctx.progress(0, 1)
        result = evaluate(generated, reference, features=params.model)
        ctx.progress(1, 1)
        ctx.record(**summary(result["metrics"]))
        return {"metrics": result}


def _reference_files(root: Path, suffixes: set[str], limit: int = 200_000, depth: int = 64) -> list[Path]:
    """The reference folder's media files, sorted: an iterative walk that follows no
    link to a folder (a link to / is not walked), goes at most `depth` folders down and
    stops after `limit` entries."""
    import os

    found, seen, stack = [], 0, [(root, 0)]
    while stack and seen < limit:
        folder, level = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if entry.is_dir(follow_symlinks=False):
                        if level < depth:
                            stack.append((Path(entry.path), level + 1))
                    elif Path(entry.name).suffix.lower() in suffixes and entry.is_file():
                        found.append(Path(entry.path))
        except OSError:
            continue
    return sorted(found)


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, for a manifest and a gallery."""
    return {k: _rounded(v) for k, v in metrics.items() if k in SUMMARY_KEYS}


def _asked(artifact: Artifact) -> str | None:
    value = (artifact.labels or {}).get("class_label")
    return None if value is None else str(value)


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
