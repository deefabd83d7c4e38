"""Pipeline YAML -> PipelineSpec. Every problem is collected, each with file, line,
YAML path and step, before anything runs or is written."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from studio import params as P
from studio.errors import Issue, PipelineError, UserError
from studio.generator import MAX_SEED
from studio.refs import RefSyntaxError, find_refs, has_refs, whole_ref
from studio.yamlfile import Locations, load_yaml

if TYPE_CHECKING:
    from studio.plugins import Host

TOP_LEVEL_KEYS = ("name", "description", "seed", "device", "precision", "compile", "steps")
STEP_KEYS = ("id", "uses", "description", "compile", "with", "sweep", "zip")
DEVICES = "auto | cpu | cuda | cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STEP_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


@dataclass
class StepSpec:
    id: str
    uses: str
    with_: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list] = field(default_factory=dict)
    zip: dict[str, list] = field(default_factory=dict)
    description: str | None = None
    index: int = 0  # position in the YAML list, for locations
    compile: bool | None = None  # None: the pipeline's `compile:`


@dataclass
class PipelineSpec:
    name: str
    steps: list[StepSpec]
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False  # torch.compile the models of every step (a step's `compile:` wins)
    description: str | None = None
    source: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)  # relative input files resolve here
    locations: Locations = field(default_factory=Locations)
    data: dict[str, Any] = field(default_factory=dict)  # as loaded, overrides applied

    def step(self, step_id: str) -> StepSpec:
        return next(s for s in self.steps if s.id == step_id)


def closest(word: Any, choices: list[str]) -> str:
    hint = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" Did you mean {hint[0]!r}?" if hint else ""


def read_pipeline_text(path: Path) -> str:
    if not path.exists():
        raise UserError(f"{path}: no such file. Give the path of a pipeline YAML file.")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the path of a pipeline YAML file.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}).")


def parse_override(text: str) -> tuple[str, str, Any]:
    """`STEP.PARAM=VALUE` -> (step, param, value); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    step, dot, param = key.strip().partition(".")
    if not sep or not dot or not step or not param:
        raise UserError(
            f"--set {text!r}: expected STEP.PARAM=VALUE, e.g. --set cover.steps=30"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return step, param, value


def load_spec(
    path: str | Path,
    host: Host,
    *,
    overrides: list[str] = (),
    seed: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool | None = None,
) -> PipelineSpec:
    """Read and validate a pipeline file; raise PipelineError with every issue."""
    path = Path(path)
    text = read_pipeline_text(path)
    data, locs, issues = load_yaml(text, str(path))
    if issues and data is None:
        raise PipelineError(issues)
    for name, value in (("seed", seed), ("device", device), ("precision", precision), ("compile", compile)):
        if value is not None and isinstance(data, dict):
            data[name] = value
            locs.origins[(name,)] = f"--{name}" if isinstance(value, bool) else f"--{name} {value}"
    if isinstance(data, dict) and isinstance(data.get("steps"), list):
        issues += _apply_overrides(data, locs, overrides)
    spec, more = build_spec(data, locs, host, base_dir=path.resolve().parent)
    issues += more
    if spec is not None:
        spec.source = path
        from studio.plan import check_graph

        issues += check_graph(spec, host)
    if issues:
        raise PipelineError(issues)
    return spec


def _apply_overrides(data: dict, locs: Locations, overrides: list[str]) -> list[Issue]:
    issues = []
    for text in overrides:
        step_id, param, value = parse_override(text)
        for i, step in enumerate(data["steps"]):
            if isinstance(step, dict) and step.get("id") == step_id:
                if not isinstance(step.get("with"), dict):
                    step["with"] = {}
                step["with"][param] = value
                locs.origins[("steps", i, "with", param)] = f"--set {text}"
                break
        else:
            ids = [s.get("id") for s in data["steps"] if isinstance(s, dict)]
            issues.append(Issue(
                f"no step {step_id!r}.{closest(step_id, [str(i) for i in ids])} "
                f"Steps: {', '.join(map(str, ids))}", f"--set {text}"))
    return issues


def build_spec(
    data: Any, locs: Locations, host: Host, base_dir: Path
) -> tuple[PipelineSpec | None, list[Issue]]:
    issues: list[Issue] = []
    if data is None:
        return None, [Issue("the pipeline is empty; it needs at least `name:` and `steps:`", locs.file)]
    if not isinstance(data, dict):
        return None, [locs.issue((), f"a pipeline is a mapping with `name:` and `steps:`, "
                                     f"got a {type(data).__name__}")]
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            issues.append(locs.issue((key,), f"unknown key {key!r}.{closest(key, list(TOP_LEVEL_KEYS))} "
                                              f"Allowed: {', '.join(TOP_LEVEL_KEYS)}"))
    name = data.get("name")
    if name is None:
        issues.append(locs.issue(("name",), "missing `name:` (it names the run directory, e.g. name: cover-art)"))
    elif not isinstance(name, str) or not PIPELINE_NAME.match(name):
        issues.append(locs.issue(("name",), f"got {name!r}; a name is 1-64 letters, digits, '_', '-' or '.', "
                                            "starting with a letter or digit (it names a directory)"))
    seed = data.get("seed", 0)
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        issues.append(locs.issue(("seed",), f"got {seed!r}; a seed is an integer from 0 to {MAX_SEED}"))
    device = data.get("device", "auto")
    if not isinstance(device, str) or not DEVICE.match(device):
        issues.append(locs.issue(("device",), f"got {device!r}; allowed: {DEVICES}"))
    precision = data.get("precision", "auto")
    if precision not in PRECISIONS:
        issues.append(locs.issue(("precision",), f"got {precision!r}; allowed: {' | '.join(PRECISIONS)}"))
    compile_all = data.get("compile", False)
    if not isinstance(compile_all, bool):
        issues.append(locs.issue(("compile",), f"got {compile_all!r}; allowed: true | false"))
    description = data.get("description")
    steps_data = data.get("steps")
    steps: list[StepSpec] = []
    if steps_data is None:
        issues.append(locs.issue(("steps",), "missing `steps:`, a list of steps (each with `id:` and `uses:`)"))
    elif not isinstance(steps_data, list) or not steps_data:
        issues.append(locs.issue(("steps",), f"`steps:` must be a non-empty list, got {_kind(steps_data)}"))
    else:
        first_line: dict[str, int | None] = {}
        for i, raw in enumerate(steps_data):
            step = _build_step(i, raw, locs, host, base_dir, first_line, issues)
            if step is not None:
                steps.append(step)
    spec = PipelineSpec(
        name=name, steps=steps, seed=seed, device=device, precision=precision,
        compile=compile_all is True, description=description, base_dir=base_dir, locations=locs, data=data,
    )
    return spec, issues


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__} ({value!r})"[:80]


def _build_step(i, raw, locs, host, base_dir, first_line, issues) -> StepSpec | None:
    at = ("steps", i)
    if not isinstance(raw, dict):
        issues.append(locs.issue(at, f"a step is a mapping with `id:` and `uses:`, got {_kind(raw)}"))
        return None
    step_id = raw.get("id")
    label = step_id if isinstance(step_id, str) else None
    for key in raw:
        if key not in STEP_KEYS:
            issues.append(locs.issue(at + (key,), f"unknown key {key!r}.{closest(key, list(STEP_KEYS))} "
                                                  f"Allowed in a step: {', '.join(STEP_KEYS)}", label))
    if step_id is None:
        issues.append(locs.issue(at + ("id",), "missing `id:` (lower-case letters, digits, '_' and '-')"))
    elif not isinstance(step_id, str) or not STEP_ID.match(step_id):
        issues.append(locs.issue(at + ("id",), f"step id {step_id!r} is not allowed: use 1-64 lower-case "
                                               "letters, digits, '_' and '-' (it names a directory)"))
    elif step_id in first_line:
        issues.append(locs.issue(at + ("id",), f"duplicate step id {step_id!r} (first defined at line "
                                               f"{first_line[step_id]}); ids must be unique", label))
    else:
        first_line[step_id] = locs.lines.get(at + ("id",))
    uses = raw.get("uses")
    gen_cls = None
    if uses is None:
        issues.append(locs.issue(at + ("uses",), "missing `uses:`, the generator to run (see `studio plugins list`)", label))
    else:
        try:
            gen_cls = host.generator(str(uses))
        except UserError as exc:
            issues.append(locs.issue(at + ("uses",), str(exc), label))
    sections = {}
    sections_ok = True
    for section in ("with", "sweep", "zip"):
        value = raw.get(section)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            sections_ok = False
            issues.append(locs.issue(at + (section,), f"`{section}:` must be a mapping of parameter: value, "
                                                      f"got {_kind(value)}", label))
            value = {}
        sections[section] = value
    if gen_cls is not None:
        _check_params(at, label, gen_cls, sections, locs, base_dir, issues, check_required=sections_ok)
    compile_step = raw.get("compile")
    if compile_step is not None and not isinstance(compile_step, bool):
        issues.append(locs.issue(at + ("compile",), f"got {compile_step!r}; allowed: true | false "
                                                    "(torch.compile this step's models)", label))
        compile_step = None
    if not isinstance(step_id, str) or first_line.get(step_id) != locs.lines.get(at + ("id",)):
        return None  # no usable id: graph checks cannot refer to this step
    return StepSpec(step_id, uses, sections["with"], sections["sweep"], sections["zip"], raw.get("description"), i,
                    compile_step)


def _check_params(at, step, gen_cls, sections, locs, base_dir, issues, check_required=True) -> None:
    params_cls = gen_cls.Params
    fields = list(params_cls.model_fields)
    given: dict[str, str] = {}
    for section, values in sections.items():
        for key, value in values.items():
            path = at + (section, key)
            if key not in params_cls.model_fields:
                issues.append(locs.issue(path, f"unknown parameter {key!r} for {gen_cls.name}."
                                               f"{closest(key, fields)} Parameters: {', '.join(fields)} "
                                               f"(see `studio plugins show {gen_cls.name}`)", step))
                continue
            if key in given:
                issues.append(locs.issue(path, f"{key!r} is set in both `{given[key]}:` and `{section}:`; "
                                               "give it in one place", step))
                continue
            given[key] = section
            if section == "with":
                _check_value(path, step, params_cls, key, value, locs, base_dir, issues)
                continue
            if not isinstance(value, list) or not value:
                issues.append(locs.issue(path, f"`{section}:` values are non-empty lists, got {_kind(value)}", step))
                continue
            for j, item in enumerate(value):
                if has_refs(item):
                    issues.append(locs.issue(path + (j,), f"references are not allowed in `{section}:`; "
                                                          "put the reference in `with:`", step))
                else:
                    _check_value(path + (j,), step, params_cls, key, item, locs, base_dir, issues)
            if section == "sweep" and len({repr(v) for v in value}) != len(value):
                issues.append(locs.issue(path, f"the sweep over {key!r} repeats a value: {value!r}", step))
    lengths = {k: len(v) for k, v in sections["zip"].items() if isinstance(v, list)}
    if len(set(lengths.values())) > 1:
        issues.append(locs.issue(at + ("zip",), "`zip:` lists must have equal lengths, got "
                                                + ", ".join(f"{k}: {n}" for k, n in lengths.items()), step))
    problems_before = len(issues)
    for name in fields if check_required else ():
        if params_cls.model_fields[name].is_required() and name not in given:
            issues.append(locs.issue(at + ("with",), f"missing required parameter {name!r} for {gen_cls.name} "
                                                     f"({P.describe(params_cls, name)}): "
                                                     f"{params_cls.model_fields[name].description}", step))
    if check_required and len(issues) == problems_before and not any(i.step == step for i in issues):
        _check_combination(at, step, params_cls, sections, locs, issues)


def _check_combination(at, step, params_cls, sections, locs, issues) -> None:
    """Rules between parameters (a mode that needs a second input...) are the Params
    model's own validators: run them on every item's values, media and references
    standing in as placeholders, so `studio validate` reports what the run would."""
    from itertools import product

    from pydantic import ValidationError

    from studio.generator import Artifact

    placeholder = Artifact(path=Path("placeholder"), media_type="*/*", sha256="", size=0)

    def stand_in(key: str, value: Any) -> Any:
        kind = P.field_kind(params_cls, key)
        if kind == "media":
            return placeholder
        if kind == "media_list":
            return [placeholder] * (len(value) if isinstance(value, list) else 1)
        return "" if has_refs(value) else value

    swept = [[(k, v) for v in values] for k, values in sections["sweep"].items()]
    zipped = list(zip(*[[(k, v) for v in values] for k, values in sections["zip"].items()])) or [()]
    for combo in list(product(*swept))[:64]:
        for row in zipped:
            values = {**sections["with"], **dict(combo), **dict(row)}
            try:
                params_cls.model_validate({k: stand_in(k, v) for k, v in values.items()})
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    if error["loc"] == ():  # a rule between parameters; field errors were reported above
                        item = ", ".join(f"{k}={v!r}" for k, v in [*combo, *row])
                        message = error["msg"].removeprefix("Value error, ")
                        issues.append(locs.issue(at + ("with",), message + (f" (item {item})" if item else ""), step))
                        return


def _check_value(path, step, params_cls, key, value, locs, base_dir, issues) -> None:
    kind = P.field_kind(params_cls, key)
    if kind in ("media", "media_list"):
        values = value if kind == "media_list" and isinstance(value, list) else [value]
        if kind == "media" and isinstance(value, list):
            issues.append(locs.issue(path, f"takes one input, got a list; allowed: {P.describe(params_cls, key)}", step))
            return
        for j, v in enumerate(values):
            where = path + (j,) if values is value else path
            if not isinstance(v, str) or not v.strip():
                issues.append(locs.issue(where, f"got {v!r}; allowed: {P.describe(params_cls, key)}", step))
            elif has_refs(v):
                _check_ref_syntax(where, step, v, locs, issues)
                if not _is_whole_ref(v):
                    issues.append(locs.issue(where, f"got {v!r}; a media parameter takes exactly one "
                                                    "reference ${steps.<id>.outputs.<port>} or a file path", step))
            else:
                _check_input_file(where, step, params_cls, key, v, locs, base_dir, issues)
        return
    if has_refs(value):
        if kind != "text":
            issues.append(locs.issue(path, f"{key!r} ({P.describe(params_cls, key)}) cannot take a reference; "
                                           "only text and media parameters can", step))
        else:
            _check_ref_syntax(path, step, value, locs, issues)
        return
    problem = P.check_value(params_cls, key, value)
    if problem:
        issues.append(locs.issue(path, f"got {value!r}: {problem}. Allowed: {P.describe(params_cls, key)}", step))


def _is_whole_ref(value: str) -> bool:
    try:
        return whole_ref(value) is not None
    except RefSyntaxError:
        return True  # reported as a syntax error already


def _check_ref_syntax(path, step, value, locs, issues) -> None:
    try:
        find_refs(value)
    except RefSyntaxError as exc:
        issues.append(locs.issue(path, str(exc), step))


def _check_input_file(path, step, params_cls, key, value, locs, base_dir, issues) -> None:
    from studio import media
    from studio.artifacts import media_type_of_file
    from studio.generator import accepted_media

    file = (base_dir / value).resolve()
    if not file.is_file():
        issues.append(locs.issue(path, f"input file {value!r} not found (looked in {file}); give a path "
                                       "relative to the pipeline file, or a reference "
                                       "${steps.<id>.outputs.<port>}", step))
        return
    accepts = accepted_media(params_cls, key)
    actual = media_type_of_file(file)
    if actual is None or not media.matches(accepts, actual):
        issues.append(locs.issue(path, f"input file {value!r} is {actual or 'of an unknown type'}; "
                                       f"{key!r} accepts {accepts}", step))
