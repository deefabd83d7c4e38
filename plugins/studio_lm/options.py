"""The shape of a small GPT-2, as the text and music trainers both take it: one set of
`--option`s (layers, width, heads) with one rule between them."""

from __future__ import annotations

from pydantic import Field, model_validator

from studio.training import TrainerOptions


class GPTShape(TrainerOptions):
    layers: int = Field(4, ge=1, le=48, description="Transformer blocks.")
    width: int = Field(192, ge=1, le=4096, description="Embedding size; a multiple of heads.")
    heads: int = Field(6, ge=1, le=64, description="Attention heads per block.")

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.width % self.heads:  # each head gets width / heads dimensions
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self
