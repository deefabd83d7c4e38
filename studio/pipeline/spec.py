"""Pipeline YAML -> PipelineSpec, step by step (keys, generators, parameters, input
files), with the caller's options (studio.pipeline.options.PipelineOptions) applied over the
file's values. Every problem is collected, each with file, line, YAML path and step,
before anything runs or is written. Each parameter's own checks are studio.pipeline.step_params';
the graph between steps is studio.pipeline.plan's to check, and studio.pipeline.validate runs both."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio import media
from studio.errors import Issue, UserError, clip, did_you_mean, echo
from studio.generator import MAX_SEED
from studio.pipeline import imageformat
from studio.pipeline.imageformat import ImageFormat
from studio.pipeline.options import PipelineOptions
from studio.pipeline.step_params import INPUT_CHECK_BUDGET_S, check_params, kind_of
from studio.pipeline.yamlfile import Locations, load_yaml

if TYPE_CHECKING:
    from studio.host.registry import Registry
    from studio.models.library import ModelLibrary

TOP_LEVEL_KEYS = ("name", "description", "seed", "device", "precision", "compile", "format", "quality", "executor",
                  "steps")
STEP_KEYS = ("id", "uses", "description", "compile", "format", "quality", "with", "sweep", "zip")
DEVICES = "auto | cpu | cuda | cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EXECUTORS = ("local", "ray")  # where the generators run: this process, or a Ray cluster
STEP_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:(0|[1-9][0-9]{0,3}))$")  # ASCII digits, no leading zeros
MAX_STEPS = 1000


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
    format: str | None = None  # None: the pipeline's `format:` (studio.pipeline.imageformat)
    quality: int | None = None  # None: the pipeline's `quality:`, else the format's default


@dataclass
class PipelineSpec:
    name: str
    steps: list[StepSpec]
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False  # torch.compile the models of every step (a step's `compile:` wins)
    format: str = "png"  # the image outputs' file format (a step's `format:` wins)
    quality: int | None = None  # JPEG/WebP quality (a step's `quality:` wins)
    executor: str = "local"  # local | ray (--executor overrides it)
    description: str | None = None
    source: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)  # relative input files resolve here
    locations: Locations = field(default_factory=Locations)
    data: dict[str, Any] = field(default_factory=dict)  # as loaded, overrides applied
    models: ModelLibrary | None = None  # the user's model folders (validators get it as context["models"])

    def step(self, step_id: str) -> StepSpec:
        return next(s for s in self.steps if s.id == step_id)

    def image_format(self, step: StepSpec) -> ImageFormat:
        """The format `step` writes its image outputs in: its own over the pipeline's."""
        return imageformat.resolve((step.format, step.quality), (self.format, self.quality))


def read_pipeline_text(path: Path) -> str:
    """The pipeline file's text. Only a regular file is read, and at most the size limit
    plus one byte of it: a FIFO must not hang validation and /dev/zero must not fill memory."""
    import os
    import stat

    from studio.pipeline.yamlfile import MAX_BYTES

    shown = clip(str(path), 200)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{shown}: no such file. Give the path of a pipeline YAML file.") from None
    except IsADirectoryError:
        raise UserError(f"{shown}: is a directory; give the path of a pipeline YAML file.") from None
    except OSError as exc:
        raise UserError(f"{shown}: cannot be read ({exc.strerror or exc}).") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UserError(f"{shown}: is a directory; give the path of a pipeline YAML file.")
        if not stat.S_ISREG(mode):
            raise UserError(f"{shown}: is not a regular file (a pipe, socket or device); give the path of a "
                            "pipeline YAML file.")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UserError(f"{shown}: cannot be read ({exc.strerror or exc}).") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:
        raise UserError(f"{shown}: larger than {MAX_BYTES // 1_000_000} MB; a pipeline is a small text file.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{shown}:{line}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); save the "
                        "pipeline as UTF-8.") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """`STEP.PARAM=VALUE` -> (step, param, value); the value is read as YAML, with the
    same limits as a pipeline file (size, nesting, aliases, control characters)."""
    shown = repr(clip(text))
    key, sep, raw = text.partition("=")
    step, dot, param = key.strip().partition(".")
    if not sep or not dot or not step or not param:
        raise UserError(f"--set {shown}: expected STEP.PARAM=VALUE, e.g. --set cover.steps=30")
    if not raw.strip():
        return step, param, ""
    value, _, issues = load_yaml(raw, None, what="the --set value")
    if issues:
        problem = issues[0].message.split("\n")[0]
        raise UserError(f"--set {shown}: the value is not usable YAML: {problem}")
    return step, param, value


def read_spec(
    path: str | Path, registry: Registry, options: PipelineOptions | None = None
) -> tuple[PipelineSpec | None, list[Issue]]:
    """Read a pipeline file with the caller's options over it and check it step by step
    (keys, generators, parameters, input files): the spec, or None when it cannot be
    built, and every issue found. The graph between steps is studio.pipeline.plan's to check.
    Relative input files resolve against `options.base_dir`, by default the file's
    folder (a pipeline re-opened from an output names the folder it first ran from)."""
    options = options or PipelineOptions()
    path = Path(path)
    text = read_pipeline_text(path)
    data, locs, issues = load_yaml(text, str(path))
    if issues and data is None:
        return None, issues
    data = _with_options(data, locs, options, issues)
    from studio.models.library import ModelLibrary
    from studio.sniff import check_budget

    library = ModelLibrary.from_dirs(options.model_dirs)
    with check_budget(INPUT_CHECK_BUDGET_S):  # input files: see _check_input_file
        spec, more = build_spec(data, locs, registry, base_dir=options.base_dir or path.resolve().parent,
                                library=library)
    issues += more
    if spec is not None:
        spec.source = path
    return spec, issues


def _with_options(data: Any, locs: Locations, options: PipelineOptions, issues: list[Issue]) -> Any:
    """The pipeline as the options make it: a new mapping, the file's own left as parsed
    (a YAML alias shares one mapping between places; only the place named changes).
    Each value set here is located at the option that set it."""
    if not isinstance(data, dict):
        return data
    resolved = {**data, **options.top_level()}
    for name, value in options.top_level().items():
        locs.origins[(name,)] = f"--{name}" if isinstance(value, bool) else f"--{name} {value}"
    if isinstance(data.get("steps"), list):
        resolved["steps"] = list(data["steps"])
        issues += _apply_overrides(resolved["steps"], locs, options.overrides)
    return resolved


def _apply_overrides(steps: list, locs: Locations, overrides: tuple[str, ...]) -> list[Issue]:
    """Set each `--set STEP.PARAM=VALUE` in `steps` (a copy of the file's list), copying
    the step and its `with:` it changes."""
    issues = []
    for text in overrides:
        try:
            step_id, param, value = parse_override(text)
        except UserError as exc:
            issues.append(Issue(str(exc)))
            continue
        for i, step in enumerate(steps):
            if isinstance(step, dict) and step.get("id") == step_id:
                given = step.get("with")
                steps[i] = {**step, "with": {**(given if isinstance(given, dict) else {}), param: value}}
                locs.origins[("steps", i, "with", param)] = f"--set {clip(text)}"
                break
        else:
            ids = [str(s.get("id")) for s in steps if isinstance(s, dict)]
            issues.append(Issue(
                f"no step {echo(step_id)}.{did_you_mean(step_id, ids)} "
                f"Steps: {clip(', '.join(ids), 400)}", f"--set {clip(text)}"))
    return issues


def build_spec(
    data: Any, locs: Locations, registry: Registry, base_dir: Path, library: ModelLibrary | None = None
) -> tuple[PipelineSpec | None, list[Issue]]:
    """A mapping read from YAML -> PipelineSpec, checked key by key: the spec (None when
    it is not a mapping at all) and every issue found. Model names are looked up in
    `library`."""
    if data is None:
        return None, [Issue("the pipeline is empty; it needs at least `name:` and `steps:`", locs.file)]
    if not isinstance(data, dict):
        return None, [locs.issue((), f"a pipeline is a mapping with `name:` and `steps:`, "
                                     f"got a {type(data).__name__}")]
    issues: list[Issue] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            issues.append(locs.issue((key,), f"unknown key {key!r}.{did_you_mean(key, list(TOP_LEVEL_KEYS))} "
                                              f"Allowed: {', '.join(TOP_LEVEL_KEYS)}"))
    settings = _top_level_settings(data, locs, issues)
    steps = _build_steps(data.get("steps"), locs, registry, (base_dir, library), issues)
    spec = PipelineSpec(steps=steps, base_dir=base_dir, locations=locs, data=data, models=library, **settings)
    issues += _quality_without_lossy_format(spec, data)
    return spec, issues


def _top_level_settings(data: dict, locs: Locations, issues: list[Issue]) -> dict[str, Any]:
    """name, seed, device, precision, compile, executor and description, each checked."""
    name = data.get("name")
    if name is None:
        issues.append(locs.issue(("name",), "missing `name:` (it names the run directory, e.g. name: cover-art)"))
    elif not isinstance(name, str) or not PIPELINE_NAME.fullmatch(name):
        issues.append(locs.issue(("name",), f"got {echo(name)}; a name is 1-64 letters, digits, '_', '-' or '.', "
                                            "starting with a letter or digit (it names a directory)"))
    seed = data.get("seed", 0)
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        issues.append(locs.issue(("seed",), f"got {echo(seed)}; a seed is an integer from 0 to {MAX_SEED}"))
    device = data.get("device", "auto")
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        hint = ""
        if isinstance(device, str) and device.startswith("cuda:"):
            hint = " (N is the index of a GPU, 0 to 9999; `nvidia-smi -L` lists them)"
        issues.append(locs.issue(("device",), f"got {echo(device)}; allowed: {DEVICES}{hint}"))
    precision = data.get("precision", "auto")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        issues.append(locs.issue(("precision",), f"got {echo(precision)}; allowed: {' | '.join(PRECISIONS)}"))
    compile_all = data.get("compile", False)
    if not isinstance(compile_all, bool):
        issues.append(locs.issue(("compile",), f"got {echo(compile_all)}; allowed: true | false"))
    image_format, quality = imageformat.check_keys(data, (), locs, None, issues)
    executor = data.get("executor", "local")
    if not isinstance(executor, str) or executor not in EXECUTORS:
        issues.append(locs.issue(("executor",), f"got {echo(executor)}; allowed: {' | '.join(EXECUTORS)} "
                                                "(ray runs the generators on a Ray cluster; see docs/scale-out.md)"))
        executor = "local"
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        issues.append(locs.issue(("description",), f"got {kind_of(description)}; a description is text "
                                                   "(quote it, or use `|` for several lines)"))
        description = None
    return {"name": name, "seed": seed, "device": device, "precision": precision, "compile": compile_all is True,
            "format": image_format or "png", "quality": quality, "executor": executor, "description": description}


def _build_steps(steps_data: Any, locs: Locations, registry: Registry, where: tuple,
                 issues: list[Issue]) -> list[StepSpec]:
    """`where` is (base_dir, library): where relative paths and model names are found."""
    if steps_data is None:
        issues.append(locs.issue(("steps",), "missing `steps:`, a list of steps (each with `id:` and `uses:`)"))
    elif not isinstance(steps_data, list) or not steps_data:
        issues.append(locs.issue(("steps",), f"`steps:` must be a non-empty list, got {kind_of(steps_data)}"))
    elif len(steps_data) > MAX_STEPS:
        issues.append(locs.issue(("steps",), f"{len(steps_data):,} steps; the limit is {MAX_STEPS:,}. Use "
                                             "`sweep:` or `zip:` to make many items of one step"))
    else:
        first_line: dict[str, tuple[int, int | None]] = {}
        built = (_build_step(i, raw, locs, registry, where, first_line, issues) for i, raw in enumerate(steps_data))
        return [step for step in built if step is not None]
    return []


def _build_step(i, raw, locs, registry, where, first_line, issues) -> StepSpec | None:
    """One entry of `steps:` -> StepSpec, or None when it has no usable id (every
    problem is reported either way)."""
    at = ("steps", i)
    if not isinstance(raw, dict):
        issues.append(locs.issue(at, f"a step is a mapping with `id:` and `uses:`, got {kind_of(raw)}"))
        return None
    step_id = raw.get("id")
    label = step_id if isinstance(step_id, str) else None
    for key in raw:
        if key not in STEP_KEYS:
            issues.append(locs.issue(at + (key,), f"unknown key {key!r}.{did_you_mean(key, list(STEP_KEYS))} "
                                                  f"Allowed in a step: {', '.join(STEP_KEYS)}", label))
    _check_step_id(at, step_id, locs, first_line, issues)
    uses = raw.get("uses")
    gen_cls = _generator_of(at, label, uses, locs, registry, issues)
    sections, sections_ok = _sections(at, label, raw, locs, issues)
    if gen_cls is not None:
        check_params(at, label, gen_cls, sections, locs, where[0], issues, check_required=sections_ok,
                     library=where[1])
    compile_step = raw.get("compile")
    if compile_step is not None and not isinstance(compile_step, bool):
        issues.append(locs.issue(at + ("compile",), f"got {compile_step!r}; allowed: true | false "
                                                    "(torch.compile this step's models)", label))
        compile_step = None
    image_format = _step_image_format(at, label, raw, gen_cls, locs, issues)
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        issues.append(locs.issue(at + ("description",), f"got {kind_of(description)}; a description is text", label))
        description = None
    if not isinstance(step_id, str) or first_line.get(step_id, (None,))[0] != i:
        return None  # no usable id: graph checks cannot refer to this step
    # only well-formed lists expand (the others are reported): sizes stay arithmetic
    sweep = {k: v for k, v in sections["sweep"].items() if isinstance(v, list) and v}
    zipped = {k: v for k, v in sections["zip"].items() if isinstance(v, list) and v}
    if len({len(v) for v in zipped.values()}) > 1:
        zipped = {}
    uses = uses if isinstance(uses, str) else ""  # reported above; "" names no generator
    return StepSpec(step_id, uses, sections["with"], sweep, zipped, description, i, compile_step, *image_format)


def _step_image_format(at, label, raw, gen_cls, locs, issues) -> tuple[str | None, int | None]:
    """A step's own `format:` and `quality:`, refused on a step that writes no image."""
    image_format = imageformat.check_keys(raw, at, locs, label, issues)
    if raw.get("format") is not None and image_format[0] is None:
        return None, None  # its format is refused: a word on its quality would only confuse
    if gen_cls is not None and media.IMAGE not in gen_cls.outputs.values():
        for key in ("format", "quality"):
            if raw.get(key) is not None:
                issues.append(imageformat.not_an_image_step(at, locs, label, key, gen_cls.name, gen_cls.outputs))
        return None, None
    if image_format[0] == "png" and image_format[1] is not None:
        issues.append(imageformat.quality_with_png(at, locs, label, "format: png writes png"))
        return "png", None
    return image_format


def _quality_without_lossy_format(spec: PipelineSpec, data: dict) -> list[Issue]:
    """`quality:` where every image is PNG: a step's own when the pipeline's format makes
    its images PNG, the pipeline's when no step writes JPEG or WebP."""
    issues = []
    for step in spec.steps:
        if step.format is None and step.quality is not None and spec.format == "png":
            issues.append(imageformat.quality_with_png(("steps", step.index), spec.locations, step.id,
                                                       "this step's images are png (the pipeline's format:, png "
                                                       "unless it says)"))
    if data.get("quality") is not None and spec.quality is not None and spec.format == "png" and \
            all(step.format in (None, "png") for step in spec.steps):
        issues.append(imageformat.quality_with_png((), spec.locations, None, "every step writes png"))
    return issues


def _check_step_id(at, step_id, locs, first_line, issues) -> None:
    """A step's `id:`: present, well formed and not taken; `first_line` records where
    each id is first defined."""
    if step_id is None:
        issues.append(locs.issue(at + ("id",), "missing `id:` (lower-case letters, digits, '_' and '-')"))
    elif not isinstance(step_id, str) or not STEP_ID.fullmatch(step_id):
        issues.append(locs.issue(at + ("id",), f"step id {echo(step_id)} is not allowed: use 1-64 lower-case "
                                               "letters, digits, '_' and '-' (it names a directory)"))
    elif step_id in first_line:
        first_index, first_at = first_line[step_id]
        where = at + ("id",)
        if locs.lines.get(where) == first_at:  # the same mapping again, through a YAML alias
            where = at
        issues.append(locs.issue(where, f"duplicate step id {step_id!r} (first defined at line {first_at}, "
                                        f"steps[{first_index}]); ids must be unique", step_id))
    else:
        first_line[step_id] = (at[1], locs.lines.get(at + ("id",)))


def _generator_of(at, label, uses, locs, registry, issues):
    """The generator class a step's `uses:` names, or None (reported)."""
    if uses is None:
        issues.append(locs.issue(at + ("uses",), "missing `uses:`, the generator to run (see `studio plugins list`)", label))
    elif not isinstance(uses, str) or len(uses) > 200:
        issues.append(locs.issue(at + ("uses",), f"got {kind_of(uses)}; `uses:` is the name of a registered "
                                                 "generator, e.g. image.diffusion (see `studio plugins list`)", label))
    else:
        try:
            return registry.generator(str(uses))
        except UserError as exc:
            issues.append(locs.issue(at + ("uses",), str(exc), label))
    return None


def _sections(at, label, raw, locs, issues) -> tuple[dict[str, dict], bool]:
    """A step's `with:`, `sweep:` and `zip:` as mappings (a missing or malformed one is
    empty), and whether all three were mappings."""
    sections = {}
    sections_ok = True
    for section in ("with", "sweep", "zip"):
        value = raw.get(section)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            sections_ok = False
            issues.append(locs.issue(at + (section,), f"`{section}:` must be a mapping of parameter: value, "
                                                      f"got {kind_of(value)}", label))
            value = {}
        sections[section] = dict(value)  # a copy: resolved model paths do not rewrite the YAML as loaded
    return sections, sections_ok
