from __future__ import annotations

import string

from pydantic import Field, model_validator

from studio import Generator, Params
from studio import media


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
            if self.vars:
                try:
                    list(string.Formatter().parse(self.template))
                except ValueError as exc:
                    raise ValueError(f"bad placeholder syntax ({exc}); write {{{{ and }}}} for literal braces")
            return self

    def generate(self, params: Params, ctx) -> dict:
        text = params.template
        if params.vars:  # without vars, braces are plain text (upstream text may hold some)
            names = [f for _, f, _, _ in string.Formatter().parse(text) if f]
            missing = [n for n in names if n not in params.vars]
            if missing:
                raise ValueError(f"placeholders {missing} have no value in `vars` (given: {sorted(params.vars)})")
            text = text.format_map(params.vars)
        return {"text": text.strip() if params.strip else text}
