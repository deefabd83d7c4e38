"""A trainer's typed options (`studio train GEN --option KEY=VALUE`): the base class a
Trainer's nested `Options` subclasses, the field helpers for values given as text, the
check that turns every mistake into a located UserError, and their description for
`studio train GEN --help`."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from studio.errors import UserError, did_you_mean, echo


class TrainerOptions(BaseModel):
    """A trainer's own settings, `--option KEY=VALUE` on the command line. A Trainer
    declares them as a nested `class Options(TrainerOptions)`, every field with a type,
    a default, bounds and a description; `studio train GEN --help` lists them.

    Values arrive as text and pydantic converts them (lax mode: "32" is 32, "1e-4" is
    0.0001, "true" is True); a list is written comma separated (see `CommaSeparated`).
    An unknown key or a value out of bounds is a UserError before anything loads."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _split_commas(value: Any) -> Any:
    """'1,2,4' -> ['1', '2', '4']: how a list option is written after --option KEY=."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")] if value.strip() else []
    return value  # already a list or tuple (a caller in Python)


# a tuple field annotated with this takes "1,2,4" as well as (1, 2, 4)
CommaSeparated = BeforeValidator(_split_commas)


@dataclass(frozen=True)
class OneOf:
    """Field metadata: the value must be one of `choices`, compared after conversion.
    (Literal[1, 3] would refuse the text "3" that --option gives.)"""

    choices: tuple[Any, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        if value not in self.choices:
            raise ValueError(f"should be one of {', '.join(_option_text(c) for c in self.choices)}")
        return value


def parse_options(trainer_cls: type, given: Mapping[Any, Any]) -> TrainerOptions:
    """`given` (--option values: text from the command line, or typed values from
    Python) checked and converted by `trainer_cls.Options` (a studio.training.Trainer). Everything wrong becomes a
    UserError that names the option, what it got and what it takes."""
    options_cls = trainer_cls.Options
    known = list(options_cls.model_fields)
    for key in given:
        if key not in known:
            raise UserError(_unknown_option(trainer_cls.generator, str(key), known))
    try:
        return options_cls(**given)
    except ValidationError as exc:
        raise UserError("\n".join(_bad_value(trainer_cls, given, error)
                                   for error in exc.errors(include_url=False))) from None


def _unknown_option(generator: str, key: str, known: list[str]) -> str:
    if not known:
        return f"--option {echo(key)}: the {generator} trainer takes no --option"
    return (f"--option {echo(key)}: the {generator} trainer has no such option." + did_you_mean(key, known)
            + f" Its options: {', '.join(known)} (`studio train {generator} --help` describes them)")


def _bad_value(trainer_cls: type, given: Mapping[Any, Any], error: dict[str, Any]) -> str:
    reason = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    if not error["loc"]:  # a rule across options (a model validator)
        return f"options of the {trainer_cls.generator} trainer: {reason}"
    name, *item = error["loc"]
    if item:  # one entry of a list option
        reason = f"entry {item[0] + 1}: {reason}"
    doc = next(d for d in describe_options(trainer_cls.Options) if d.name == name)
    return (f"--option {name}={echo(given.get(name))} for the {trainer_cls.generator} trainer: {reason}. "
            f"Allowed: {doc.allowed}; default: {doc.default}")


@dataclass(frozen=True)
class OptionDoc:
    """One option as `studio train GEN --help` shows it."""

    name: str
    allowed: str  # "integer, 4 to 1024, a multiple of 4"
    default: str  # as it is written after --option KEY=
    description: str


def describe_options(options_cls: type[TrainerOptions]) -> list[OptionDoc]:
    return [OptionDoc(name, _allowed(f.annotation, f.metadata),
                      _option_text(f.get_default(call_default_factory=True)), f.description or "")
            for name, f in options_cls.model_fields.items()]


_TYPE_NAMES = {int: "integer", float: "number", str: "text", bool: "true or false"}


def _allowed(annotation: Any, metadata: list[Any]) -> str:
    """What a field takes, in words: its type, then its bounds."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *extra = typing.get_args(annotation)
        return _allowed(inner, [*extra, *metadata])
    if origin in (tuple, list):
        item, *_ = typing.get_args(annotation) or (Any,)
        item_text = _allowed(item, [])
        kind, _, item_bounds = item_text.partition(", ")
        text = f"comma-separated {kind}s" + (f" (each {item_bounds})" if item_bounds else "")
        return ", ".join([text, *_bounds(metadata, "entries")])
    return ", ".join([_TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation))),
                      *_bounds(metadata, "characters")])


def _bounds(metadata: list[Any], units: str) -> list[str]:
    # Field(ge=...) arrives as annotated_types objects, possibly wrapped in a FieldInfo
    flat = [m for meta in metadata for m in getattr(meta, "metadata", [meta])]
    found = {key: getattr(m, key) for m in flat
             for key in ("ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length")
             if getattr(m, key, None) is not None}
    if "ge" in found and "le" in found:
        words = [f"{found['ge']} to {found['le']}"]
    else:
        words = [f"{text} {found[key]}" for key, text in (("ge", "at least"), ("gt", "more than"),
                                                           ("le", "at most"), ("lt", "less than")) if key in found]
    if "multiple_of" in found:
        words.append(f"a multiple of {found['multiple_of']}")
    if "min_length" in found and "max_length" in found:
        words.append(f"{found['min_length']} to {found['max_length']} {units}")
    elif "min_length" in found or "max_length" in found:
        words.append(f"at least {found['min_length']} {units}" if "min_length" in found
                     else f"at most {found['max_length']} {units}")
    words += [f"one of {', '.join(_option_text(c) for c in m.choices)}" for m in flat if isinstance(m, OneOf)]
    return words


def _option_text(value: Any) -> str:
    """A value as it is written after --option KEY=."""
    if isinstance(value, (tuple, list)):
        return ",".join(_option_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
