"""text.gpt: text from a causal language model (transformers), prompt in, text out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from studio import Generator, Params, UserError, batch_groups, media, model_input
from studio.weights import config, local_path, weights_problem

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "gpt"
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length")


def load_model(model: str) -> dict[str, Any]:
    """{"model": causal LM, "tokenizer": its tokenizer} from 'default' (the embedded
    model), a directory or a hub id in the local cache (studio_lm.loading's rules)."""
    from studio_lm.loading import load_causal_lm

    return load_causal_lm(model, DEFAULT_WEIGHTS)


def context_of(data: dict[str, Any]) -> int | None:
    """The context length a config.json states (or its text model's), None when unstated."""
    for source in (data, data.get("text_config") if isinstance(data.get("text_config"), dict) else {}):
        for name in CONTEXT_KEYS:
            value = source.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def context_length(lm) -> int:
    config = lm.config
    for name in CONTEXT_KEYS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def context_problem(max_new_tokens: int, context: int) -> str | None:
    """The decoder keeps the end of the prompt and writes max_new_tokens after it, all
    within the model's context: at least one prompt token must fit."""
    if max_new_tokens >= context:
        return (f"max_new_tokens {max_new_tokens} does not fit the model's context of {context} tokens; give at "
                f"most {context - 1}")
    return None


class TextGPT(Generator):
    name = "text.gpt"
    description = ("A causal language model (transformers): the embedded GPT-2 trained on Shakespeare, "
                   "or any causal LM directory or hub id. Continues `prompt`.")
    outputs = {"text": media.TEXT}
    precisions = ("bf16", "fp16", "fp32")
    default_weights = DEFAULT_WEIGHTS
    batchable = True
    max_batch_size = 32

    class Params(Params):
        model: str = model_input("default", files=("config.json",), hub=True, description=(
            "'default' (embedded GPT-2 trained on Shakespeare's plays), a causal LM directory (safetensors), "
            "or a hub id in the local Hugging Face cache."))
        prompt: str = Field("", max_length=20000, description=(
            "Text to continue: literal, or upstream text (${steps.<id>.outputs.text}). Empty: start fresh."))
        max_new_tokens: int = Field(120, ge=1, le=4096, description=(
            "At most this many tokens are written; less than the model's context (the prompt's end fills the rest)."))
        temperature: float = Field(0.8, ge=0.0, le=3.0, description="Sampling temperature; 0 is greedy decoding.")
        top_k: int = Field(0, ge=0, le=100000, description="Sample among the k likeliest tokens; 0 = all.")
        top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling: the likeliest tokens up to this mass.")
        repetition_penalty: float = Field(1.0, ge=1.0, le=5.0, description=(
            "Above 1 makes tokens already in the text less likely (transformers' repetition penalty)."))
        stop: list[str] = Field(default_factory=list, max_length=16, description=(
            "Writing ends at the first of these strings (1 to 200 characters each); the string itself is not kept."))
        include_prompt: bool = Field(True, description="Start the output with the prompt.")

        @field_validator("model")
        @classmethod
        def weights_are_plain(cls, value: str) -> str:
            problem = weights_problem(value, local_path(value, DEFAULT_WEIGHTS))
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("stop")
        @classmethod
        def stops_are_strings(cls, value: list[str]) -> list[str]:
            for s in value:
                if not 1 <= len(s) <= 200:  # "" is in every text: writing would stop before it starts
                    raise ValueError(f"stop string {s[:40]!r} has {len(s)} characters; give 1 to 200")
            return value

        @field_validator("max_new_tokens")
        @classmethod
        def fits_the_context(cls, value: int, info: ValidationInfo) -> int:
            model = info.data.get("model")
            root = local_path(model, DEFAULT_WEIGHTS) if isinstance(model, str) else None
            if root is not None and root.is_dir():
                context = context_of(config(root))  # config.json: read once, a few kilobytes
                problem = context and context_problem(value, context)
                if problem:
                    raise ValueError(problem)
            return value

    def load(self, params: Params, ctx) -> Any:
        return load_model(params.model)

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        out: list[dict | None] = [None] * len(params)
        # items that differ only in prompt and seed share a batch
        keys = [(p.model, p.max_new_tokens, p.temperature, p.top_k, p.top_p, p.repetition_penalty, tuple(p.stop))
                for p in params]
        for indexes in batch_groups(keys):
            texts = self._write([params[i] for i in indexes], [ctxs[i] for i in indexes])
            for i, text in zip(indexes, texts):
                out[i] = {"text": text}
        return out  # type: ignore[return-value]

    def _write(self, params: list[Params], ctxs: list) -> list[str]:
        from studio_lm.sampling import Row, Settings, cut_at_stop, sample

        first = params[0]
        loaded = ctxs[0].model(self, first)
        lm, tokenizer = loaded["model"], loaded["tokenizer"]
        context = context_length(lm)
        problem = context_problem(first.max_new_tokens, context)
        if problem:
            raise UserError(problem)
        room = context - first.max_new_tokens
        eos = tokenizer.eos_token_id
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        rows = []
        for p, ctx in zip(params, ctxs):
            prompt = tokenizer(p.prompt, add_special_tokens=False)["input_ids"] if p.prompt else []
            if not prompt:
                if start is None:
                    raise UserError("this model's tokenizer has no BOS or EOS token to start from; give a prompt")
                prompt = [start]
            if len(prompt) > room:  # keep the end of a long prompt: it is what gets continued
                ctx.record(prompt_tokens_dropped=len(prompt) - room)
                prompt = prompt[-room:]
            rows.append(Row(prompt=prompt, generator=ctx.torch_generator()))
        settings = Settings(max_new_tokens=first.max_new_tokens, temperature=first.temperature, top_k=first.top_k,
                            top_p=first.top_p, repetition_penalty=first.repetition_penalty, stop=list(first.stop))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=True)

        with ctxs[0].autocast():
            sample(lm, rows, settings, eos_id=eos, pad_id=pad, decode=decode, context=context,
                   on_step=lambda done, total: [c.progress(done, total) for c in ctxs])
        texts = []
        for p, ctx, row in zip(params, ctxs, rows):
            new = cut_at_stop(decode(row.new), p.stop)
            ctx.record(new_tokens=len(row.new), stopped_by=row.stopped_by or "max_new_tokens")
            texts.append(p.prompt + new if p.include_prompt else new)
        return texts
