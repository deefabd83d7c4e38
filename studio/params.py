"""What a generator parameter accepts, described for people and checked per value."""

from __future__ import annotations

import types
import typing
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from studio.generator import accepted_media

REQUIRED = object()


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def field_kind(params_cls: type[BaseModel], name: str) -> str:
    """'media', 'media_list', 'text' (takes text references) or 'value'."""
    field = params_cls.model_fields[name]
    ann = _strip_optional(field.annotation)
    if accepted_media(params_cls, name):
        return "media_list" if typing.get_origin(ann) is list else "media"
    return "text" if ann is str else "value"


def type_name(annotation: Any) -> str:
    ann = _strip_optional(annotation)
    origin = typing.get_origin(ann)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin in (list, tuple):
        inner = typing.get_args(ann)
        return f"list of {type_name(inner[0])}" if inner else "list"
    if origin is dict:
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(ann) if a is not type(None))
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if isinstance(ann, type) and issubclass(ann, BaseModel):  # a structured entry: its keys
        return "mapping {" + ", ".join(ann.model_fields) + "}"
    return names.get(ann, getattr(ann, "__name__", str(ann)))


def bounds(field: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in field.metadata:
        for key in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(meta, key, None)
            if value is not None:
                out[key] = value
    return out


def describe(params_cls: type[BaseModel], name: str) -> str:
    """'integer, 1 <= value <= 200' — what a parameter allows, in words."""
    field = params_cls.model_fields[name]
    media = accepted_media(params_cls, name)
    if media:
        kind = field_kind(params_cls, name)
        what = f"{media} from ${{steps.<id>.outputs.<port>}} or a file path"
        return f"a list of {what}" if kind == "media_list" else what
    text = type_name(field.annotation)
    b = bounds(field)
    lo = ("ge", ">=") if "ge" in b else ("gt", ">") if "gt" in b else None
    hi = ("le", "<=") if "le" in b else ("lt", "<") if "lt" in b else None
    if lo or hi:
        parts = []
        if lo:
            parts.append(f"{b[lo[0]]} {'<=' if lo[1] == '>=' else '<'} value")
        else:
            parts.append("value")
        if hi:
            parts.append(f"{hi[1]} {b[hi[0]]}")
        text += ", " + " ".join(parts)
    if "max_length" in b:
        text += f", at most {b['max_length']} {'characters' if 'str' in str(field.annotation) else 'items'}"
    if "min_length" in b and b["min_length"]:
        text += f", at least {b['min_length']}"
    if _strip_optional(field.annotation) is not field.annotation or field.default is None and not field.is_required():
        text += ", or null"
    return text


@lru_cache(maxsize=None)
def _adapter(params_cls: type[BaseModel], name: str) -> TypeAdapter:
    field = params_cls.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


def check_value(params_cls: type[BaseModel], name: str, value: Any) -> str | None:
    """None when `value` is valid for the parameter on its own, else why not."""
    try:
        _adapter(params_cls, name).validate_python(value, strict=_strict(params_cls, name))
    except ValidationError as exc:
        return "; ".join(_where(e["loc"]) + e["msg"] for e in exc.errors(include_url=False))
    return None


def _where(loc: tuple) -> str:
    """Where inside a list or mapping value an error is ("[0].path: "), or ""."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return f"{text}: " if text else ""


def _strict(params_cls: type[BaseModel], name: str) -> bool:
    # YAML already gives typed scalars, so every parameter is checked strictly and the
    # same way: "5" for an integer or "true" for a boolean is a mistake to show, not to
    # guess at (strict mode still takes 5 for a float). The run validates laxly, after
    # references have been replaced by their text.
    return True


def default_of(params_cls: type[BaseModel], name: str) -> Any:
    field = params_cls.model_fields[name]
    return REQUIRED if field.is_required() else field.get_default(call_default_factory=True)
