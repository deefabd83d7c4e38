from __future__ import annotations

import string

from pydantic import Field, model_validator

from studio import Generator, Params, UserError
from studio import media

MAX_OUTPUT_CHARS = 1_000_000  # a template repeating a long value must not grow without bound


def placeholders(template: str) -> list[str]:
    """The {name} placeholders of a template, once per occurrence. A ValueError says
    what is wrong: unbalanced braces, a placeholder that is not a plain name."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad placeholder syntax ({exc}); write {{{{ and }}}} for literal braces") from None
    for name, spec, conversion in fields:
        # plain names only: `{x.attr}`, `{x[0]}`, `{x!r}` and `{x:>999999999}` reach into
        # Python objects or build huge strings, and a template has no use for them
        if not name.isidentifier() or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"placeholder {shown!r} is not a plain name; write placeholders as {{name}} (letters, "
                             "digits and _), and {{ and }} for literal braces")
    return [name for name, _, _ in fields]


class TextTemplate(Generator):
    name = "text.template"
    description = (
        "Compose text from literals and upstream text. References to text outputs "
        "(${steps.<id>.outputs.text}) are filled in by the host; {name} placeholders are "
        "filled from `vars` (when `vars` is given; write {{ and }} for literal braces then)."
    )
    outputs = {"text": media.TEXT}
    uses_device = False

    class Params(Params):
        template: str = Field(..., min_length=1, max_length=20_000,
                              description="The text to write; may embed ${steps.<id>.outputs.text} and {name} placeholders.")
        vars: dict[str, str] = Field(default_factory=dict, max_length=100,
                                     description="Values for {name} placeholders in the template.")
        strip: bool = Field(True, description="Trim whitespace at both ends of the result.")

        @model_validator(mode="after")
        def placeholders_are_valid(self):
            if not self.vars:  # without vars, braces are plain text (upstream text may hold some)
                return self
            names = placeholders(self.template)
            missing = sorted(set(n for n in names if n not in self.vars))
            if missing:
                raise ValueError(f"placeholders {missing} have no value in `vars` (given: {sorted(self.vars)}); "
                                 "add them to `vars`, or write {{ and }} for literal braces")
            length = len(self.template) + sum(len(self.vars[n]) for n in names)
            if length > MAX_OUTPUT_CHARS:
                raise ValueError(f"the text would be {length:,} characters (the template repeats long `vars` "
                                 f"values); the limit is {MAX_OUTPUT_CHARS:,}")
            return self

    def generate(self, params: Params, ctx) -> dict:
        text = params.template
        if params.vars:
            missing = sorted(set(n for n in placeholders(text) if n not in params.vars))
            if missing:
                raise UserError(f"placeholders {missing} have no value in `vars` (given: {sorted(params.vars)})")
            text = text.format_map(params.vars)
        return {"text": text.strip() if params.strip else text}
