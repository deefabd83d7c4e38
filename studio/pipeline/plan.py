"""Expand sweeps into items, bind references to upstream items, order the steps.
No I/O: a plan is what `studio plan` prints and what the executor walks.

Fan-out rules:
- `sweep:` is the product of its lists, `zip:` walks its lists in parallel; a step's
  items are zip x sweep.
- A reference in a list-typed parameter receives every item of the upstream step.
- A reference in a single-valued parameter maps over the upstream items: one item
  here per upstream item (several such upstream steps: their product).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from studio import media
from studio import params as P
from studio.errors import Issue, did_you_mean
from studio.generator import accepted_media
from studio.pipeline.imageformat import PNG, ImageFormat
from studio.pipeline.refs import Ref, RefSyntaxError, find_refs, has_refs, whole_ref

if TYPE_CHECKING:
    from studio.host.registry import Registry
    from studio.pipeline.spec import PipelineSpec, StepSpec

MAX_ITEMS_PER_STEP = 1000
MAX_ITEMS = 10_000


@dataclass(frozen=True)
class Binding:
    """A parameter value that comes from upstream items, resolved when they finish.

    mode: 'whole' (value is the artifact, or its text for a text parameter),
    'interpolate' (a string with text references inside), 'list' (all items)."""

    mode: str
    template: str | list  # the string as written (a list for 'list' mode)
    items: dict[Ref, tuple[str, ...]]  # reference -> upstream item names it reads


@dataclass(frozen=True)
class FileInput:
    """A literal file path given for a media parameter (relative to the pipeline)."""

    path: str


@dataclass
class PlanItem:
    step_id: str
    index: int
    name: str  # "cover@seed=1,guidance_scale=3", or the step id for a single item
    dirname: str  # directory under the run directory
    labels: dict[str, Any]
    params: dict[str, Any]  # literal values, Binding or FileInput
    seed: int
    seed_derived: bool
    deps: tuple[str, ...] = ()  # upstream item names


@dataclass
class PlanStep:
    id: str
    uses: str
    items: list[PlanItem] = field(default_factory=list)
    depends_on: tuple[str, ...] = ()
    compile: bool = False
    image_format: ImageFormat = PNG  # the file format of its image outputs (`format:`, `quality:`)


@dataclass
class Plan:
    spec: PipelineSpec
    steps: list[PlanStep]  # in execution order

    @property
    def items(self) -> list[PlanItem]:
        return [item for step in self.steps for item in step.items]


def derive_seed(run_seed: int, step_id: str, index: int) -> int:
    """A stable per-item seed: the same pipeline gives the same seeds on any machine."""
    digest = hashlib.sha256(f"{run_seed}:{step_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# --- checks ------------------------------------------------------------------------


def step_refs(step: StepSpec) -> list[tuple[str, Ref]]:
    """(parameter, reference) pairs in a step's `with:`; bad syntax is skipped (the
    spec check reports it)."""
    out = []
    for key, value in step.with_.items():
        for v in value if isinstance(value, list) else [value]:
            if has_refs(v):
                try:
                    out += [(key, r) for r in find_refs(v)]
                except RefSyntaxError:
                    pass
    return out


def check_graph(spec: PipelineSpec, registry: Registry) -> list[Issue]:
    """References (step, port, media type), cycles and sweep sizes."""
    issues: list[Issue] = []
    locs = spec.locations
    by_id = {s.id: s for s in spec.steps}
    raw_steps = spec.data.get("steps") if isinstance(spec.data.get("steps"), list) else []
    ids = [str(s.get("id")) for s in raw_steps if isinstance(s, dict)]
    for step in spec.steps:
        gen_cls = registry.generators.get(step.uses)
        for key, ref in step_refs(step):
            path = ("steps", step.index, "with", key)
            if ref.step not in by_id:
                if ref.step not in ids:
                    issues.append(locs.issue(path, f"{ref} refers to step {ref.step!r}, which does not exist."
                                                   f"{did_you_mean(ref.step, ids)} Steps: {', '.join(ids)}", step.id))
                continue
            upstream = registry.generators.get(by_id[ref.step].uses)
            if upstream is None or gen_cls is None or key not in gen_cls.Params.model_fields:
                continue
            if P.field_kind(gen_cls.Params, key) == "value":
                continue  # the spec check already says it cannot take a reference
            if ref.port not in upstream.outputs:
                ports = list(upstream.outputs)
                issues.append(locs.issue(path, f"{ref}: step {ref.step!r} ({upstream.name}) has no output "
                                               f"{ref.port!r}.{did_you_mean(ref.port, ports)} Its outputs: "
                                               f"{', '.join(ports)}", step.id))
                continue
            actual = spec.image_format(by_id[ref.step]).output(upstream.outputs[ref.port])  # as `format:` writes it
            accepts = accepted_media(gen_cls.Params, key) or "text/*"
            if not media.matches(accepts, actual):
                issues.append(locs.issue(path, f"media type mismatch: {key!r} accepts {accepts}, but {ref} "
                                               f"is {actual}", step.id))
    cycle = find_cycle(spec.steps)
    if cycle:
        first = by_id[cycle[0]]
        issues.append(locs.issue(("steps", first.index), "steps form a cycle: " + " -> ".join(cycle)
                                 + "; a step can only use outputs of steps that do not need it", first.id))
    if not issues and all(s.uses in registry.generators for s in spec.steps):
        issues += _check_sizes(spec, registry)
    return issues


def find_cycle(steps: list[StepSpec]) -> list[str] | None:
    """A cycle of references as a list of step ids, or None. Iterative: a chain of a
    thousand steps must not exhaust Python's recursion limit."""
    deps = {s.id: [r.step for _, r in step_refs(s)] for s in steps}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    for start in deps:
        if start in state:
            continue
        path: list[str] = [start]
        pending = [iter(deps[start])]
        state[start] = 1
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                state[path.pop()] = 2
                pending.pop()
            elif dep in deps and state.get(dep) == 1:
                found = path[path.index(dep):] + [dep]
                return list(reversed(found))  # in the direction data flows: producer -> consumer
            elif dep in deps and dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(deps[dep]))
    return None


def _own_count(step: StepSpec) -> int:
    n = 1
    if step.zip:
        n = len(next(iter(step.zip.values())))
    for values in step.sweep.values():
        n *= len(values)
    return n


def _check_sizes(spec: PipelineSpec, registry: Registry) -> list[Issue]:
    counts: dict[str, int] = {}
    issues = []
    for step in order_steps(spec.steps):
        n = _own_count(step)
        for upstream in _mapped_upstreams(step, registry):
            n *= counts[upstream]
        counts[step.id] = n
        if n > MAX_ITEMS_PER_STEP:
            where = "sweep" if step.sweep else "zip" if step.zip else "with"
            issues.append(spec.locations.issue(
                ("steps", step.index, where),
                f"expands to {n:,} items; the limit is {MAX_ITEMS_PER_STEP:,} per step. "
                "Shorten the sweep lists or split the step", step.id))
            counts[step.id] = 1
    total = sum(counts.values())
    if not issues and total > MAX_ITEMS:
        issues.append(spec.locations.issue(("steps",), f"the pipeline expands to {total:,} items; "
                                                        f"the limit is {MAX_ITEMS:,}"))
    return issues


# --- planning ----------------------------------------------------------------------


def order_steps(steps: list[StepSpec]) -> list[StepSpec]:
    """Topological order, keeping YAML order among independent steps (steps of a cycle,
    which check_graph reports, come last)."""
    by_id = {s.id: s for s in steps}
    needs = {s.id: {r.step for _, r in step_refs(s) if r.step in by_id and r.step != s.id} for s in steps}
    users: dict[str, list[str]] = {s.id: [] for s in steps}
    for step_id, deps in needs.items():
        for dep in deps:
            users[dep].append(step_id)
    position = {s.id: i for i, s in enumerate(steps)}
    import heapq

    ready = [(position[i], i) for i, deps in needs.items() if not deps]
    heapq.heapify(ready)
    ordered: list[StepSpec] = []
    while ready:
        _, step_id = heapq.heappop(ready)
        ordered.append(by_id[step_id])
        for user in users[step_id]:
            needs[user].discard(step_id)
            if not needs[user]:
                heapq.heappush(ready, (position[user], user))
    placed = {s.id for s in ordered}
    return ordered + [s for s in steps if s.id not in placed]


def _mapped_upstreams(step: StepSpec, registry: Registry) -> list[str]:
    """Upstream steps this step maps over (references in single-valued parameters)."""
    gen_cls = registry.generators[step.uses]
    out: list[str] = []
    for key, ref in step_refs(step):
        if key not in gen_cls.Params.model_fields:
            continue  # an unknown parameter, reported by the spec check
        if P.field_kind(gen_cls.Params, key) != "media_list" and ref.step not in out:
            out.append(ref.step)
    return out


_SAFE_DIR = re.compile(r"^[A-Za-z0-9._=,+-]{1,100}$")


def format_labels(labels: dict[str, Any]) -> str:
    return ",".join(f"{k}={_label_value(v)}" for k, v in labels.items())


def _label_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _slug(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)).strip("_")


def build_plan(spec: PipelineSpec, registry: Registry) -> Plan:
    """Expand a validated spec into items in execution order."""
    items_of: dict[str, list[PlanItem]] = {}
    steps: list[PlanStep] = []
    for step in order_steps(spec.steps):
        gen_cls = registry.generators[step.uses]
        mapped = _mapped_upstreams(step, registry)
        upstream_combos = list(itertools.product(*(items_of[u] for u in mapped)))
        own = _own_combos(step)
        items: list[PlanItem] = []
        for ups, combo in itertools.product(upstream_combos, own):
            index = len(items)
            labels: dict[str, Any] = {}
            for up in ups:
                for k, v in up.labels.items():
                    labels[k if k not in labels else f"{up.step_id}.{k}"] = v
            labels.update(combo)
            chosen = {u: up.name for u, up in zip(mapped, ups)}
            params, deps = _bind_params(step, gen_cls, combo, chosen, items_of)
            explicit = params.get("seed")
            seed = explicit if explicit is not None else derive_seed(spec.seed, step.id, index)
            name = f"{step.id}@{format_labels(labels)}" if labels else step.id
            items.append(PlanItem(step.id, index, name, "", labels, params, seed, explicit is None, deps))
        _name_dirs(step.id, items)
        items_of[step.id] = items
        steps.append(PlanStep(step.id, step.uses, items, tuple(dict.fromkeys(r.step for _, r in step_refs(step))),
                              spec.compile if step.compile is None else step.compile, spec.image_format(step)))
    return Plan(spec, steps)


def _own_combos(step: StepSpec) -> list[dict[str, Any]]:
    zipped = [dict(zip(step.zip, values)) for values in zip(*step.zip.values())] or [{}]
    swept = [dict(zip(step.sweep, values)) for values in itertools.product(*step.sweep.values())]
    return [{**z, **s} for z in zipped for s in swept]


def _bind_params(step, gen_cls, combo, chosen, items_of):
    params: dict[str, Any] = {}
    deps: list[str] = []
    for key, value in {**step.with_, **combo}.items():
        kind = P.field_kind(gen_cls.Params, key)
        if kind == "media_list":
            values = value if isinstance(value, list) else [value]
            refs = {}
            for v in values:
                if has_refs(v):
                    ref = whole_ref(v)
                    refs[ref] = tuple(i.name for i in items_of[ref.step])
                    deps += refs[ref]
            params[key] = Binding("list", values, refs) if refs else [FileInput(v) for v in values]
        elif has_refs(value):
            refs = {r: (chosen[r.step],) for r in find_refs(value)}
            deps += [n for names in refs.values() for n in names]
            mode = "whole" if whole_ref(value) else "interpolate"
            params[key] = Binding(mode, value, refs)
        elif kind == "media":
            params[key] = FileInput(value)
        else:
            params[key] = value
    return params, tuple(dict.fromkeys(deps))


def _name_dirs(step_id: str, items: list[PlanItem]) -> None:
    """`cover@seed=1,guidance_scale=3` (other characters become '_') when that is short
    and unique; otherwise `cover@item-0003`."""
    suffixes = [_slug(format_labels(i.labels)) for i in items]
    safe = all(_SAFE_DIR.fullmatch(s) for s in suffixes if s) and len(set(suffixes)) == len(suffixes)
    for item, suffix in zip(items, suffixes):
        if len(items) == 1 and not suffix:
            item.dirname = step_id
        elif safe:
            item.dirname = f"{step_id}@{suffix}"
        else:
            item.dirname = f"{step_id}@item-{item.index:04d}"
    if len({i.name for i in items}) != len(items):  # equal labels: names from indexes
        for item in items:
            item.name = f"{step_id}@{item.index}"
