"""An item's parameters as its generator receives them: references to upstream
outputs bound to the artifacts (or their text), input files checked again and read as
artifacts, model paths checked as validation checks a literal one; and the same
parameters as the manifest and provenance record them (`jsonable`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio import params as P
from studio.errors import UserError, clip, echo
from studio.execute.artifacts import sha256_file
from studio.execute.cache import canonical
from studio.execute.records import ItemResult
from studio.generator import Artifact, Generator, Params
from studio.pipeline.plan import Binding, FileInput, PlanItem
from studio.pipeline.refs import interpolate, whole_ref


class ItemInputs:
    """Resolves items' parameters for one run. `results` are the run's items so far
    (upstream outputs are read from them); input files are sniffed once per run."""

    def __init__(self, base_dir: Path, results: dict[str, ItemResult], models: Any = None):
        self.base_dir = base_dir
        self.models = models  # the user's model folders (a studio.models.library.ModelLibrary), for names
        self.results = results
        self._files: dict[str, Artifact] = {}

    def resolve(self, item: PlanItem, gen: Generator, device: str) -> Params:
        """`item`'s parameters validated by `gen.Params`; `device` is what its
        validators weigh the work against (image size x steps on a CPU)."""
        values: dict[str, Any] = {}
        for key, value in item.params.items():
            kind = P.field_kind(gen.Params, key)
            if isinstance(value, Binding):
                values[key] = self._bind(value, kind)
            elif isinstance(value, FileInput):
                values[key] = self._file(value.path)
            elif isinstance(value, list) and value and isinstance(value[0], FileInput):
                values[key] = [self._file(v.path) for v in value]
            else:
                values[key] = value
        self._check_models(gen, values)
        values["seed"] = item.seed
        context = {"device": device, "base_dir": self.base_dir, "models": self.models}
        return gen.Params.model_validate(values, context=context)

    def _check_models(self, gen: Generator, values: dict[str, Any]) -> None:
        """A model parameter's value as validation checks it (see studio.pipeline.spec), now that
        references are resolved: `model: '${steps.a.outputs.text}'` gets the same check
        as a literal path."""
        from studio.generator import model_spec
        from studio.pipeline.modelpath import check_model

        for key, value in values.items():
            if key not in gen.Params.model_fields or not isinstance(value, str):
                continue
            wanted = model_spec(gen.Params, key)
            if wanted is None:
                continue
            try:
                resolved, problem = check_model(value, wanted, self.base_dir, self.models)
            except (RuntimeError, ValueError, OSError) as exc:  # `~nobody/x`: no such home ...
                resolved, problem = value, f"cannot be used ({clip(str(exc), 200)})"
            if problem:
                raise UserError(f"{key}: {echo(value, 200)} {problem}")
            values[key] = resolved

    def _bind(self, binding: Binding, kind: str) -> Any:
        def artifacts(ref) -> list[Artifact]:
            return [self.results[name].artifacts[ref.port] for name in binding.items[ref]]

        if binding.mode == "list":
            out: list[Artifact] = []
            for entry in binding.template:
                ref = whole_ref(entry)
                out += artifacts(ref) if ref else [self._file(entry)]
            return out
        if binding.mode == "whole":
            art = artifacts(next(iter(binding.items)))[0]
            return art if kind == "media" else art.read_text()
        return interpolate(binding.template, {r: artifacts(r)[0].read_text() for r in binding.items})

    def _file(self, relative: str) -> Artifact:
        if relative not in self._files:
            from studio.sniff import sniff

            path = (self.base_dir / relative).resolve()
            if not path.is_file():
                raise UserError(f"input file {relative!r} not found ({path})")
            found = sniff(path)  # checked again: the file may have changed since validation
            if not found.ok:
                raise UserError(f"input file {relative!r} {found.problem or 'is not a file type Studio reads'}")
            self._files[relative] = Artifact(
                path=path, media_type=found.media_type, sha256=sha256_file(path), size=path.stat().st_size)
        return self._files[relative]


def jsonable(params: Params) -> dict[str, Any]:
    """Parameters as the manifest and provenance record them: inputs by content."""
    out = {}
    for key in type(params).model_fields:
        value = getattr(params, key)
        if isinstance(value, Artifact):
            value = _input_record(value)
        elif isinstance(value, list) and value and isinstance(value[0], Artifact):
            value = [_input_record(v) for v in value]
        out[key] = canonical(value) if not isinstance(value, (dict, list)) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    """Lists and mappings as JSON has them, with entries that are pydantic models (a
    generator's structured parameters) as their fields."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _input_record(artifact: Artifact) -> dict[str, Any]:
    """An input as provenance records it: by content, and which item (or file) made it."""
    source = {"from": artifact.producer} if artifact.producer else {"file": artifact.path.name}
    return {**source, "sha256": artifact.sha256}
