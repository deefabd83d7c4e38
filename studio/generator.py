"""The contract between the host and a generator.

A generator is a class with a name, typed parameters (a pydantic model), output ports
with media types and a `generate()` method. It loads weights lazily through
`ctx.model()` and never picks its own device: the runtime does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # heavy imports stay out of import time
    import torch

    from studio.execute.runtime import Runtime

GENERATOR_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.-]*$")
MEDIA_KEY = "studio_media"
MODEL_KEY = "studio_model"
# the kinds of model a user keeps in model folders (studio.models), which model_input names
MODEL_KINDS = ("checkpoint", "lora", "embedding", "vae", "controlnet", "upscaler")
MAX_SEED = 2**63 - 1


class Params(BaseModel):
    """Base class of every generator's parameters. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Random seed for this item. Default: derived from the run seed, "
        "the step id and the item index.",
    )


def media_input(accepts: str, default: Any = ..., **kwargs: Any) -> Any:
    """A parameter that takes media: an upstream output (`${steps.x.outputs.y}`) or a
    file path. `accepts` is a media type, wildcards allowed ("image/*")."""
    extra = kwargs.pop("json_schema_extra", {}) or {}
    return Field(default, json_schema_extra={**extra, MEDIA_KEY: accepts}, **kwargs)


def accepted_media(params_cls: type[BaseModel], field_name: str) -> str | None:
    """The media type a parameter accepts, or None for a plain value."""
    extra = params_cls.model_fields[field_name].json_schema_extra
    return extra.get(MEDIA_KEY) if isinstance(extra, dict) else None


def model_input(default: str = "default", *, files: tuple[str, ...] = (), suffixes: tuple[str, ...] = (),
                hub: bool = False, kind: str | None = None, **kwargs: Any) -> Any:
    """A parameter naming weights: "default" (the embedded ones), a local path or, with
    `hub`, a Hugging Face hub id found in the local cache. Studio resolves a path
    relative to the pipeline file, as it does media inputs, and checks before anything
    runs that it looks like a model of the right kind: a directory holding one of `files`
    at its top level (e.g. "model_index.json"), or a file ending in one of `suffixes`.
    Nothing else is read, and the directory is never walked. Any other value is a name
    looked up in the user's model folders among the models of `kind` (one of
    MODEL_KINDS; by default the parameter's name when it is one, such as `vae`, else
    checkpoint)."""
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"model_input kind {kind!r}: allowed {', '.join(MODEL_KINDS)}")
    extra = kwargs.pop("json_schema_extra", {}) or {}
    marker = {"files": list(files), "suffixes": list(suffixes), "hub": hub, "kind": kind}
    kwargs.setdefault("max_length", 1000)
    return Field(default, json_schema_extra={**extra, MODEL_KEY: marker}, **kwargs)


def model_spec(params_cls: type[BaseModel], field_name: str) -> dict[str, Any] | None:
    """What a model parameter accepts (see model_input), or None for other parameters."""
    extra = params_cls.model_fields[field_name].json_schema_extra
    marker = extra.get(MODEL_KEY) if isinstance(extra, dict) else None
    if not isinstance(marker, dict):
        return None
    default = field_name if field_name in MODEL_KINDS else "checkpoint"  # `vae:` names a VAE
    return {**marker, "kind": marker.get("kind") or default}


class Artifact(BaseModel):
    """A file a step wrote (or a file the user named), as downstream steps see it."""

    model_config = ConfigDict(frozen=True)

    path: Path
    media_type: str
    sha256: str
    size: int
    producer: str | None = None  # item name, e.g. "cover@seed=1"; None for user files
    labels: dict[str, Any] = Field(default_factory=dict)  # sweep values that made it
    # True while `studio validate` checks parameters: an upstream step will make this
    # file, so its content cannot be checked yet (validators skip content checks).
    pending: bool = False

    @property
    def info(self) -> dict[str, Any]:
        """Facts read from the file's content (see studio.sniff): width/height of an
        image, seconds/notes of a MIDI, seconds/sample_rate of audio. Empty while pending."""
        if self.pending:
            return {}
        from studio.sniff import sniff

        return dict(sniff(self.path).info)

    def read_text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def open_image(self):
        from PIL import Image

        with Image.open(self.path) as im:
            im.load()
            return im


class StepContext:
    """What a generator gets besides its parameters: seed, device, precision, models,
    progress. One per item."""

    def __init__(
        self,
        *,
        step_id: str,
        item_name: str,
        seed: int,
        runtime: Runtime,
        precision: str,
        labels: dict[str, Any] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        compile: bool = False,
    ):
        self.step_id = step_id
        self.item_name = item_name
        self.seed = seed
        self.runtime = runtime
        self.precision = precision
        self.labels = labels or {}
        self._on_progress = on_progress
        self.compile = compile  # torch.compile the models this item loads
        self.notes: dict[str, Any] = {}

    @property
    def device(self) -> str:
        return self.runtime.device

    @property
    def dtype(self) -> torch.dtype:
        return self.runtime.torch_dtype(self.precision)

    def torch_generator(self) -> torch.Generator:
        """A CPU generator seeded with this item's seed: noise drawn from it is the
        same on every device (as diffusers does with generator=torch.Generator('cpu'))."""
        import torch

        return torch.Generator("cpu").manual_seed(self.seed)

    def numpy_rng(self):
        import numpy as np

        return np.random.default_rng(self.seed)

    def model(self, generator: Generator, params: Params) -> Any:
        """The loaded model for these params, from the runtime's cache."""
        return self.runtime.models.get(
            (generator.name, generator.model_key(params), self.device, self.precision, self.compile),
            lambda: generator.prepare(generator.load(params, self), self),
        )

    def autocast(self):
        return self.runtime.autocast(self.precision)

    def record(self, **notes: Any) -> None:
        """Facts about how this item was made (which synthesizer, how many events...):
        they go into the manifest beside the item's parameters."""
        self.notes.update(notes)

    def progress(self, done: int, total: int) -> None:
        if self._on_progress:
            self._on_progress(done, total)


class Generator:
    """Subclass this and register it from a plugin's `register_generators` hook."""

    name: ClassVar[str] = ""  # "<modality>.<name>", e.g. "image.diffusion"
    description: ClassVar[str] = ""
    outputs: ClassVar[dict[str, str]] = {}  # port -> media type
    Params: ClassVar[type[Params]] = Params
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)  # what it can run in, best first
    batchable: ClassVar[bool] = False
    max_batch_size: ClassVar[int] = 16
    version: ClassVar[str] = "1"  # bump when outputs change for the same inputs (cache key)
    uses_device: ClassVar[bool] = True  # False: pure-CPU code (PIL, text) that never touches torch
    default_weights: ClassVar[Path | None] = None  # the embedded weights `model: default` names

    def weights_path(self, params: Params) -> str:
        """The weights the `model` parameter names, as a loader takes them: the embedded
        ones for "default", an existing path made absolute, anything else as given (a
        hub id, which the library looks up in its local cache)."""
        from studio.weights import resolve_weights  # imported when used: plugin loading stays light

        model = str(getattr(params, "model", "default"))
        return resolve_weights(model, self.default_weights) if self.default_weights else model

    def model_key(self, params: Params) -> str:
        """Identifies the model `load()` returns, for the model cache: by default the
        resolved weights path (see weights_path). Override it when more than `model`
        picks what is loaded (a direction, a component)."""
        return self.weights_path(params)

    def weights_id(self, params: Params) -> str:
        """A fingerprint of the weights, part of the step cache key: the size and time of
        the `model` parameter's files when there are default weights."""
        if self.default_weights is None:
            return ""
        from studio.weights import weights_fingerprint

        return weights_fingerprint(str(getattr(params, "model", "default")), self.default_weights)

    def load(self, params: Params, ctx: StepContext) -> Any:
        """Load weights (on CPU). Called at most once per model key while cached."""
        return None

    def prepare(self, model: Any, ctx: StepContext) -> Any:
        """Ready what `load()` returned for `ctx.device` in `ctx.dtype`, once per load.
        The default moves torch modules (alone, or in a dict, list or tuple) there in
        eval mode, compiled when the step asks for it. Override it when the model is more
        than modules (a pipeline of several models) or a part needs care in half
        precision, using `ctx.runtime.prepare`, `.upcast_on_overflow` and `.compile`."""
        return ctx.runtime.prepare(model, ctx.precision, compile=ctx.compile)

    def generate(self, params: Params, ctx: StepContext) -> dict[str, Any]:
        """Make one item's outputs: a dict of port -> value for the port's writer. A
        generator that overrides only `generate_batch` gets it as a batch of one."""
        if type(self).generate_batch is Generator.generate_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither generate nor generate_batch")
        return self.generate_batch([params], [ctx])[0]

    def generate_batch(
        self, params: list[Params], ctxs: list[StepContext]
    ) -> list[dict[str, Any]]:
        """Make several items at once (batchable generators override this). Each item
        must come out exactly as `generate()` would make it alone."""
        return [self.generate(p, c) for p, c in zip(params, ctxs)]


def batch_groups(keys: list[Any]) -> list[list[int]]:
    """The indexes of a batch's items grouped by equal key, groups in first-seen order:
    `for indexes in batch_groups([(p.model, p.steps) for p in params])` runs items that
    can share one forward pass together and keeps each item's place in the output."""
    groups: dict[Any, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())
