"""music.transformer: writes MIDI one performance event at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from studio import Artifact, Generator, Params, UserError, media, media_input, model_input
from studio.weights import config, loading, local_path, model_problem, refuse

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "transformer"
MAX_CONTEXT = 65_536  # positions: the decoding cache is allocated this long at most
LOAD_FIX = ("Give 'default', a directory `studio train music.transformer --out DIR` wrote (config.json and "
            "model.safetensors), or a hub id in your Hugging Face cache")


def config_problem(data: dict[str, Any]) -> str | None:
    """Why a config.json is not a model of Studio's MIDI events, or None."""
    from studio_music.events import VOCAB_SIZE

    if data.get("model_type") != "gpt2":
        return f"config.json is a {data.get('model_type')!r} model; music.transformer runs GPT-2 models over MIDI events"
    if data.get("vocab_size") != VOCAB_SIZE:
        return (f"config.json has a vocabulary of {data.get('vocab_size')!r} tokens, not the {VOCAB_SIZE} MIDI "
                "performance events music.transformer writes (train one with `studio train music.transformer`)")
    positions = data.get("n_positions")
    if not isinstance(positions, int) or not 2 <= positions <= MAX_CONTEXT:
        return f"config.json: n_positions {positions!r} is not a context from 2 to {MAX_CONTEXT:,} events"
    return None


class MusicTransformer(Generator):
    name = "music.transformer"
    description = ("A decoder-only transformer over MIDI performance events (note on/off, 10 ms time "
                   "shifts, velocity): writes a new piece, or continues a primer.")
    outputs = {"midi": media.MIDI}
    precisions = ("bf16", "fp16", "fp32")
    default_weights = DEFAULT_WEIGHTS

    class Params(Params):
        model: str = model_input("default", files=("config.json",), hub=True, description=(
            "'default' (embedded, trained on Bach), a trained directory (safetensors), or a hub id in the "
            "local Hugging Face cache."))
        duration_s: float = Field(20.0, gt=0, le=600, description="Seconds of new music to write.")
        temperature: float = Field(1.0, ge=0.0, le=3.0, description="Sampling temperature; 0 is greedy.")
        top_k: int = Field(0, ge=0, le=390, description="Sample among the k likeliest events; 0 = all.")
        top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling: the likeliest events up to this mass.")
        primer: Artifact | None = media_input(
            "audio/midi", None, description="MIDI to continue: an upstream MIDI output or a .mid file.")
        primer_s: float = Field(30.0, gt=0, le=600, description=(
            "Use at most this many seconds from the end of the primer (cut before it is read into events; "
            "the model sees as much of it as its context holds)."))
        include_primer: bool = Field(True, description="Start the output with the primer (else only the continuation).")
        program: int = Field(0, ge=0, le=127, description="General MIDI instrument of the output (0 = piano, 19 = organ).")

        @field_validator("model")
        @classmethod
        def is_a_music_model(cls, value: str) -> str:
            problem = model_problem(value, local_path(value, DEFAULT_WEIGHTS), config_problem)
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("primer")
        @classmethod
        def primer_is_readable(cls, value: Artifact | None) -> Artifact | None:
            from studio_midi.reading import check_midi_input

            check_midi_input(value)  # notes, and a last tick pretty_midi can hold
            return value

    def load(self, params: Params, ctx) -> Any:
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        root = local_path(params.model, DEFAULT_WEIGHTS)
        refuse(params.model, root)
        with loading(params.model, "a music transformer", LOAD_FIX):
            if params.model != "default" and root is not None:
                problem = config_problem(config(root))
                if problem:
                    raise UserError(f"model {params.model!r}: {problem}")
            # local files only, safetensors only: nothing is downloaded and no pickle is read
            return AutoModelForCausalLM.from_pretrained(str(root) if root is not None else params.model,
                                                        use_safetensors=True, local_files_only=True)

    def generate(self, params: Params, ctx) -> dict:
        from studio_midi.reading import load_midi
        from studio_music.events import BOS, decode, duration_of, encode_notes, notes_of, tail_notes
        from studio_music.transformer_network import sample

        model = ctx.model(self, params)
        primer: list[int] = []
        if params.primer is not None:
            primer_midi = load_midi(params.primer.path)
            primer = encode_notes(tail_notes(notes_of(primer_midi), params.primer_s))
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
