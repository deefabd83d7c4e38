"""Measuring a set of media, whatever its family: `evaluate` picks the metrics by the
set's media type (images, text, MIDI, audio) and measures the generated set, against a
reference set where the metric needs one. Used by `studio eval` and eval.metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio import UserError
from studio.errors import clip, printable
from studio_eval.collect import MediaSet

CAVEAT = {
    "image": "FID and KID are measured in Studio's own feature network (studio-features-v1), not Inception-v3: "
             "compare them between runs measured here, never with published FID numbers. Precision and recall "
             "(k-nearest-neighbour manifolds) depend on the sets' sizes: compare sets of equal size.",
    "audio": "vae_latent_frechet is a Fréchet distance over Studio's audio VAE latents, not VGGish FAD.",
    "text": "Perplexity is under the reference language model named (text.gpt's embedded model by default).",
    "midi": "muspy's metrics; gap_in_std is the generated mean minus the reference mean in reference standard "
            "deviations.",
}
NEEDS_REFERENCE = {"image", "audio"}
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # what collect.FAMILIES["image"] names
MAX_TEXT_CHARS = 1_000_000


def evaluate(generated: MediaSet, reference: MediaSet | None, *, features: str = "default",
             lm: str = "default", vae: str = "default") -> dict[str, Any]:
    family = generated.family()
    if reference is not None and reference.family() != family:
        raise UserError(f"the generated set is {family} ({generated.where}) but the reference is "
                        f"{reference.family()} ({reference.where}); measure like against like")
    if reference is None and family in NEEDS_REFERENCE:
        raise UserError(f"{family} metrics compare two sets: give a reference set with --against "
                        "(a folder of real examples, or another run)")
    metrics = {"image": _images, "text": _texts, "midi": _music, "audio": _audio}[family](
        generated, reference, features=features, lm=lm, vae=vae)
    return {"family": family, "generated": generated.where,
            "reference": reference.where if reference else None, "metrics": metrics, "note": CAVEAT[family]}


def _shown(path: Path) -> str:
    return printable(clip(str(path), 300))


def out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, torch's out-of-memory error, or the CPU allocator's refusal (torch
    raises a RuntimeError when malloc fails)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)[:2000]
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _images(generated: MediaSet, reference: MediaSet, *, features: str, **_: Any) -> dict[str, Any]:
    import torch

    from studio_eval.features import DEFAULT_WEIGHTS, features_of, load_network
    from studio_eval.image_metrics import measure_images

    if len(generated.members) < 4 or len(reference.members) < 4:
        raise UserError(f"image metrics need at least 4 images a set; got {len(generated.members)} generated and "
                        f"{len(reference.members)} reference")
    net = load_network(DEFAULT_WEIGHTS if features == "default" else Path(features))

    def embed(members, chunk: int = 256):
        # read, shrink to 32 x 32 and measure a chunk at a time: a set of large images never sits in memory
        return torch.cat([features_of(net, _small_images(members[i:i + chunk]))
                          for i in range(0, len(members), chunk)])

    asked = [m.label for m in generated.members]
    return measure_images(embed(reference.members), embed(generated.members), reference.labels(),
                          asked if any(a is not None for a in asked) else None)


def _small_images(members) -> Any:
    """The members' images as the feature network's input, each refused by name when it
    is too large to decode safely."""
    from PIL import Image

    from studio.sniff import MAX_IMAGE_PIXELS
    from studio_eval.features import SIZE, image_tensor

    small = []
    for member in members:
        try:
            # only the formats a set's files are named for: PIL would hand an EPS to Ghostscript
            with Image.open(member.path, formats=IMAGE_FORMATS) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise UserError(f"{member.path}: {image.width} x {image.height} pixels; images are measured up "
                                    f"to {MAX_IMAGE_PIXELS:,} pixels")
                image.draft("RGB", (SIZE * 4, SIZE * 4))  # JPEGs decode at a fraction of their size
                small.append(image.copy() if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"))
                small[-1].thumbnail((SIZE * 4, SIZE * 4))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UserError(f"{_shown(member.path)}: not an image Studio can read ({clip(str(exc), 200)}); images "
                            "are measured from PNG, JPEG, WebP and BMP files") from None
    return image_tensor(small)


def _texts(generated: MediaSet, reference: MediaSet | None, *, lm: str, **_: Any) -> dict[str, Any]:
    from studio_eval.embedded import TEXT_LM, default_weights
    from studio_eval.text_metrics import describe_texts, perplexity
    from studio_lm.loading import load_causal_lm

    def read(members):
        texts = []
        for member in members:
            with open(member.path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read(MAX_TEXT_CHARS))  # a text is measured over its first million characters
        return texts

    model = load_causal_lm(lm, default_weights(lm, TEXT_LM))
    texts = read(generated.members)
    out: dict[str, Any] = {**describe_texts(texts), **perplexity(texts, model)}
    if reference is not None:
        references = read(reference.members)
        out["reference"] = {**describe_texts(references), **perplexity(references, model)}
    return out


def _music(generated: MediaSet, reference: MediaSet | None, **_: Any) -> dict[str, Any]:
    from studio_eval.music_metrics import check_midi, compare, piece_metrics, summarise

    def measure(members):
        for member in members:  # every file checked (size, damage, length) before any is measured
            check_midi(member.path)
        pieces = [p for p in (piece_metrics(m.path) for m in members) if p is not None]
        return summarise(pieces), len(pieces)

    summary, count = measure(generated.members)
    out: dict[str, Any] = {"pieces": count, "generated": summary}
    if reference is not None:
        reference_summary, reference_count = measure(reference.members)
        out.update({"reference_pieces": reference_count, "reference": reference_summary,
                    "compared": compare(summary, reference_summary)})
    return out


def _audio(generated: MediaSet, reference: MediaSet, *, vae: str, **_: Any) -> dict[str, Any]:
    from studio_diffusers.oobleck import load_vae
    from studio_eval.audio_metrics import measure_audio
    from studio_eval.embedded import AUDIO_VAE, default_weights

    return measure_audio([m.path for m in generated.members], [m.path for m in reference.members],
                         load_vae(vae, default_weights(vae, AUDIO_VAE)).eval() if vae != "none" else None)
