from __future__ import annotations

import string

from pydantic import Field, field_validator

from studio import Generator, Params
from studio import media


class TextTemplate(Generator):
    name = "text.template"
    description = (
        "Compose text from literals and upstream text. References to text outputs "
        "(${steps.<id>.outputs.text}) are filled in by the host; {name} placeholders are "
        "filled from `vars`."
    )
    outputs = {"text": media.TEXT}

    class Params(Params):
        template: str = Field(..., min_length=1, max_length=20_000,
                              description="The text to write; may embed ${steps.<id>.outputs.text} and {name} placeholders.")
        vars: dict[str, str] = Field(default_factory=dict, max_length=100,
                                     description="Values for {name} placeholders in the template.")
        strip: bool = Field(True, description="Trim whitespace at both ends of the result.")

        @field_validator("template")
        @classmethod
        def placeholders_are_valid(cls, value: str) -> str:
            try:
                list(string.Formatter().parse(value))
            except ValueError as exc:
                raise ValueError(f"bad placeholder syntax ({exc}); write {{{{ and }}}} for literal braces")
            return value

    def generate(self, params: Params, ctx) -> dict:
        names = [f for _, f, _, _ in string.Formatter().parse(params.template) if f]
        missing = [n for n in names if n not in params.vars]
        if missing:
            raise ValueError(f"placeholders {missing} have no value in `vars` (given: {sorted(params.vars)})")
        text = params.template.format_map(params.vars) if names else params.template.replace("{{", "{").replace("}}", "}")
        return {"text": text.strip() if params.strip else text}
