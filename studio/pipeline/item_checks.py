"""Validate-time checks that need the plan: every item's parameters through its
generator's own Params model (its field and model validators), with input files as
validation can know them.

Validators get `info.context["device"]` ("cpu" or "cuda"), so a rule may weigh the
work against the device. A file the user named is checked by content (studio.sniff) and handed to the
validators as a real Artifact, so a rule such as "this MIDI renders to at most an
hour of audio" is checked by `studio validate`. An input an upstream step will make is
a *pending* Artifact (its media type is known, its content is not); validators skip
content checks for it and the run checks it when it exists, with the same rule.

Runs only when the pipeline's structure, types and graph are sound, so the number of
items is already bounded (studio.pipeline.plan.MAX_ITEMS).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from studio import params as P
from studio.errors import Issue
from studio.generator import Artifact
from studio.pipeline.plan import Binding, FileInput
from studio.pipeline.refs import whole_ref
from studio.sniff import sniff

if TYPE_CHECKING:
    from studio.host.registry import Registry
    from studio.pipeline.plan import Plan
    from studio.pipeline.spec import StepSpec

MAX_ISSUES_PER_STEP = 5  # the first few; the rest are the same mistake on other items
# Validation answers in well under two seconds whatever a pipeline declares: items past
# this budget are left to the run, which checks each one with the same validators.
TIME_BUDGET_S = 1.0


def check_items(plan: Plan, registry: Registry) -> list[Issue]:
    """Every item of `plan` through its generator's validators (the first item of each
    step always, the others while the time budget lasts); an issue per distinct problem."""
    spec = plan.spec
    context = {"device": likely_device(spec.device), "base_dir": spec.base_dir, "models": spec.models}
    deadline = time.monotonic() + TIME_BUDGET_S
    outputs = {s.id: registry.generators[s.uses].outputs for s in spec.steps}
    files: dict[str, Artifact | None] = {}
    issues: list[Issue] = []
    for plan_step in plan.steps:
        step = spec.step(plan_step.id)
        params_cls = registry.generators[step.uses].Params
        reported: set[str] = set()
        for n, item in enumerate(plan_step.items):
            if n and time.monotonic() > deadline:
                break  # the first item of every step is always checked
            values = _stand_ins(item.params, params_cls, outputs, spec.base_dir, files)
            if values is None:
                continue  # an input file is unusable: reported already
            try:
                params_cls.model_validate(values, context=context)
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    field = str(error["loc"][0]) if error["loc"] else None
                    if field is not None and isinstance(item.params.get(field), Binding) \
                            and P.field_kind(params_cls, field) == "text":
                        continue  # a text reference stands in as "": its content is the run's to check
                    message = str(error["msg"]).removeprefix("Value error, ")
                    if message in reported or len(reported) >= MAX_ISSUES_PER_STEP:
                        continue
                    reported.add(message)
                    where = f" (item {item.name})" if item.name != step.id else ""
                    issues.append(spec.locations.issue(_path_of(step, field, item.labels), message + where, step.id))
    return issues


def likely_device(requested: str) -> str:
    """The device kind the run will most likely get, without importing torch (which
    would cost validation seconds): "cuda" or "cpu". Validators use it to weigh work
    (image size x steps on a CPU); the run checks again with the real device."""
    if requested == "auto":
        return "cuda" if any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0")) else "cpu"
    return "cpu" if requested == "cpu" else "cuda"


def _stand_ins(params: dict[str, Any], params_cls, outputs, base_dir: Path,
               files: dict[str, Artifact | None]) -> dict[str, Any] | None:
    """An item's values as validators see them before the run."""
    values: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, FileInput):
            value = _file(value.path, base_dir, files)
            if value is None:
                return None
        elif isinstance(value, list) and value and isinstance(value[0], FileInput):
            value = [_file(v.path, base_dir, files) for v in value]
            if any(v is None for v in value):
                return None
        elif isinstance(value, Binding):
            value = _pending(value, P.field_kind(params_cls, key), outputs, base_dir, files)
            if value is None:
                return None
        values[key] = value
    return values


def _pending(binding: Binding, kind: str, outputs, base_dir, files) -> Any:
    if kind == "text":
        return ""
    if binding.mode == "list":
        out: list[Artifact | None] = []
        for entry in binding.template:
            ref = whole_ref(entry)
            if ref is None:  # a file path among the references
                out.append(_file(entry, base_dir, files))
            else:
                out += [_placeholder(outputs[ref.step][ref.port])] * len(binding.items[ref])
        return None if any(a is None for a in out) else out
    ref = next(iter(binding.items))
    return _placeholder(outputs[ref.step][ref.port])


def _placeholder(media_type: str) -> Artifact:
    return Artifact(path=Path("(made by an upstream step)"), media_type=media_type, sha256="", size=0, pending=True)


def _file(relative: str, base_dir: Path, files: dict[str, Artifact | None]) -> Artifact | None:
    if relative not in files:
        path = (base_dir / relative).resolve()
        found = sniff(path)
        files[relative] = None if not found.ok else Artifact(
            path=path, media_type=found.media_type, sha256="", size=path.stat().st_size)
    return files[relative]


def _path_of(step: StepSpec, field: str | None, labels: dict[str, Any]) -> tuple:
    at = ("steps", step.index)
    if field is None:
        return at + ("with",)
    for section, values in (("sweep", step.sweep), ("zip", step.zip)):
        if field in values:
            try:
                return at + (section, field, values[field].index(labels.get(field)))
            except ValueError:
                return at + (section, field)
    return at + ("with", field)
