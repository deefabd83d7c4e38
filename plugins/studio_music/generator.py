"""music.transformer: writes MIDI one performance event at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from studio import Artifact, Generator, Params, media, media_input
from studio.errors import UserError
from studio.generator import resolve_weights

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "transformer"


def resolve_model(model: str) -> str:
    return resolve_weights(model, DEFAULT_WEIGHTS)


class MusicTransformer(Generator):
    name = "music.transformer"
    description = ("A decoder-only transformer over MIDI performance events (note on/off, 10 ms time "
                   "shifts, velocity): writes a new piece, or continues a primer.")
    outputs = {"midi": media.MIDI}
    precisions = ("bf16", "fp16", "fp32")
    default_weights = DEFAULT_WEIGHTS

    class Params(Params):
        model: str = Field("default", max_length=500,
                           description="'default' (embedded, trained on Bach), a trained directory, or a hub id.")
        duration_s: float = Field(20.0, gt=0, le=600, description="Seconds of new music to write.")
        temperature: float = Field(1.0, ge=0.0, le=3.0, description="Sampling temperature; 0 is greedy.")
        top_k: int = Field(0, ge=0, le=390, description="Sample among the k likeliest events; 0 = all.")
        top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling: the likeliest events up to this mass.")
        primer: Artifact | None = media_input(
            "audio/midi", None, description="MIDI to continue: an upstream MIDI output or a .mid file.")
        primer_s: float = Field(30.0, gt=0, le=600, description="Use at most this many seconds from the end of the primer.")
        include_primer: bool = Field(True, description="Start the output with the primer (else only the continuation).")
        program: int = Field(0, ge=0, le=127, description="General MIDI instrument of the output (0 = piano, 19 = organ).")

    def load(self, params: Params, ctx) -> Any:
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        try:
            return AutoModelForCausalLM.from_pretrained(resolve_model(params.model))
        except (OSError, ValueError) as exc:
            raise UserError(f"model {params.model!r} could not be loaded: {exc}") from exc

    def generate(self, params: Params, ctx) -> dict:
        from studio_music.data import load_midi
        from studio_music.events import BOS, decode, duration_of, encode
        from studio_music.model import sample

        model = ctx.model(self, params)
        primer: list[int] = []
        if params.primer is not None:
            primer_midi = load_midi(params.primer.path)
            primer = _tail(encode(primer_midi), params.primer_s)
        with ctx.autocast():
            new = sample(model, [BOS, *primer], duration_s=params.duration_s, temperature=params.temperature,
                         top_k=params.top_k, top_p=params.top_p, generator=ctx.torch_generator(),
                         on_progress=lambda done, total: ctx.progress(round(done), round(total)))
        tokens = primer + new if params.include_primer else new
        midi = decode(tokens, program=params.program)
        if not midi.instruments[0].notes:
            raise UserError("the model wrote no notes; raise temperature or duration_s")
        ctx.record(events=len(new), primer_events=len(primer), seconds=round(duration_of(tokens), 2))
        return {"midi": midi}


def _tail(tokens: list[int], seconds: float) -> list[int]:
    """The events of the last `seconds` (cut at a time shift, notes still sounding then
    are dropped from the primer)."""
    from studio_music.events import duration_of

    total = duration_of(tokens)
    if total <= seconds:
        return tokens
    elapsed = 0.0
    for i, t in enumerate(tokens):
        elapsed += duration_of([t])
        if elapsed >= total - seconds:
            return tokens[i + 1:]
    return tokens
