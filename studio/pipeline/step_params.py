"""A step's parameters checked one by one against its generator's Params model, as
studio.pipeline.spec reads the step: names, where each is given (`with:`, `sweep:`, `zip:`),
values and their bounds, references, model paths, and input files by their content.
What needs the whole plan (every item's values through the generator's validators) is
studio.pipeline.item_checks'."""

from __future__ import annotations

from typing import Any

from studio import params as P
from studio.errors import did_you_mean, echo
from studio.generator import model_spec
from studio.pipeline.refs import RefSyntaxError, find_refs, has_refs, whole_ref


def kind_of(value: Any) -> str:
    """What a value is, in words, for messages: "a list ([1, 2])"."""
    if value is None:
        return "nothing"
    kind = {"dict": "a mapping", "list": "a list", "str": "a string", "int": "an integer", "float": "a number",
            "bool": "a boolean"}.get(type(value).__name__, f"a {type(value).__name__}")
    return f"{kind} ({echo(value, 60)})"


def check_params(at, step, gen_cls, sections, locs, base_dir, issues, check_required=True, library=None) -> None:
    """Report what is wrong with a step's `with:`, `sweep:` and `zip:` (`sections`, copies
    of the YAML mappings); a model path resolved against `base_dir`, or a model name
    found in `library` (studio.models), replaces the value written in them."""
    check = (base_dir, library)
    params_cls = gen_cls.Params
    fields = list(params_cls.model_fields)
    given: dict[str, str] = {}
    for section, values in sections.items():
        for key, value in values.items():
            path = at + (section, key)
            if key not in params_cls.model_fields:
                issues.append(locs.issue(path, f"unknown parameter {echo(key)} for {gen_cls.name}."
                                               f"{did_you_mean(key, fields)} Parameters: {', '.join(fields)} "
                                               f"(see `studio plugins show {gen_cls.name}`)", step))
                continue
            if key in given:
                issues.append(locs.issue(path, f"{key!r} is set in both `{given[key]}:` and `{section}:`; "
                                               "give it in one place", step))
                continue
            given[key] = section
            if section == "with":
                resolved = _check_value(path, step, params_cls, key, value, locs, check, issues)
                if resolved is not None:
                    values[key] = resolved
                continue
            if not isinstance(value, list) or not value:
                issues.append(locs.issue(path, f"`{section}:` values are non-empty lists, got {kind_of(value)}", step))
                continue
            for j, item in enumerate(value):
                if has_refs(item):
                    issues.append(locs.issue(path + (j,), f"references are not allowed in `{section}:`; "
                                                          "put the reference in `with:`", step))
                else:
                    resolved = _check_value(path + (j,), step, params_cls, key, item, locs, check, issues)
                    if resolved is not None:
                        value = values[key] = [*value[:j], resolved, *value[j + 1:]]
            if section == "sweep" and len({repr(v) for v in value}) != len(value):
                issues.append(locs.issue(path, f"the sweep over {key!r} repeats a value: {echo(value)}", step))
    lengths = {k: len(v) for k, v in sections["zip"].items() if isinstance(v, list)}
    if len(set(lengths.values())) > 1:
        issues.append(locs.issue(at + ("zip",), "`zip:` lists must have equal lengths, got "
                                                + ", ".join(f"{k}: {n}" for k, n in lengths.items()), step))
    for name in fields if check_required else ():
        if params_cls.model_fields[name].is_required() and name not in given:
            issues.append(locs.issue(at + ("with",), f"missing required parameter {name!r} for {gen_cls.name} "
                                                     f"({P.describe(params_cls, name)}): "
                                                     f"{params_cls.model_fields[name].description}", step))


def _check_value(path, step, params_cls, key, value, locs, check, issues) -> Any:
    """Report what is wrong with one value; return the value to run with when it differs
    from the one written (a model path resolved against the pipeline's folder, a model
    name found in the library). `check` is (base_dir, library)."""
    base_dir, library = check
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
    nested = _nested_ref(value)
    if nested is not None:
        issues.append(locs.issue(path + nested[0], f"a reference inside a {nested[1]} ({echo(nested[2])}) is not "
                                                   "resolved; a reference goes in a text parameter's string, as "
                                                   "a media parameter's value, or as an entry of a media list",
                                     step))
        return
    problem = P.check_value(params_cls, key, value)
    if problem:
        issues.append(locs.issue(path, f"got {echo(value)}: {problem}. Allowed: {P.describe(params_cls, key)}", step))
        return
    wanted = model_spec(params_cls, key)
    if wanted is not None and isinstance(value, str):
        from studio.pipeline.modelpath import check_model

        resolved, problem = check_model(value, wanted, base_dir, library)
        if problem:
            issues.append(locs.issue(path, f"{key} {echo(value)} {problem}", step))
        return resolved
    return None


def _nested_ref(value: Any, at: tuple = ()) -> tuple[tuple, str, str] | None:
    """(path, 'list' or 'mapping', text) of the first `${...}` inside a list or mapping."""
    items = enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else ()
    for k, v in items:
        if isinstance(v, str) and has_refs(v):
            return at + (k,), "list" if isinstance(value, list) else "mapping", v
        found = _nested_ref(v, at + (k,))
        if found:
            return found
    return None


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


# Reading input files in full (a 2 MB MIDI is a fifth of a second) stops after this much
# of a validation: later files get studio.sniff's cheap check (a regular file within
# the size limits, whose header says what it is), and the run checks them in full.
INPUT_CHECK_BUDGET_S = 0.5


def _check_input_file(path, step, params_cls, key, value, locs, base_dir, issues) -> None:
    """An input file must exist inside reach, be what its content says, and be usable:
    sniffed, never trusted by its extension (in full while studio.pipeline.spec.read_spec's time budget
    lasts, by its header after that)."""
    from studio import media
    from studio.generator import accepted_media
    from studio.sniff import sniff

    if "\x00" in value:
        issues.append(locs.issue(path, f"input file {echo(value)} contains a NUL byte", step))
        return
    file = (base_dir / value).absolute()
    try:
        file = file.resolve()
        exists = file.exists()
    except RuntimeError:
        issues.append(locs.issue(path, f"input file {echo(value)} cannot be resolved: a symbolic link loops", step))
        return
    except OSError as exc:  # a name too long, a component that is a file ...
        issues.append(locs.issue(path, f"input file {echo(value)} cannot be used: {exc.strerror or exc}", step))
        return
    if not exists:
        issues.append(locs.issue(path, f"input file {echo(value)} not found (looked in {file}); give a path "
                                       "relative to the pipeline file, or a reference "
                                       "${steps.<id>.outputs.<port>}", step))
        return
    accepts = accepted_media(params_cls, key)
    found = sniff(file)
    if found.problem:
        what = f" ({found.media_type})" if found.media_type else ""
        issues.append(locs.issue(path, f"input file {echo(value)}{what} {found.problem}; '{key}' accepts {accepts}",
                                 step))
    elif not media.matches(accepts, found.media_type):
        issues.append(locs.issue(path, f"input file {echo(value)} is {found.media_type} (by its content); "
                                       f"{key!r} accepts {accepts}", step))
