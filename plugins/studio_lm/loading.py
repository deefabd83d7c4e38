"""Loading a causal language model and its tokenizer safely: text.gpt generates with
one, eval measures perplexity under one. 'default' is the embedded model whose folder
each caller names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio.weights import loading, local_path, refuse

LOAD_FIX = ("Give 'default', a directory with config.json, .safetensors weights and tokenizer files (as "
            "save_pretrained writes them), or a hub id in your Hugging Face cache")


def load_causal_lm(model: str, default_dir: Path) -> dict[str, Any]:
    """{"model": causal LM, "tokenizer": its tokenizer} from 'default' (the weights in
    `default_dir`), a directory (config.json + weights + tokenizer files, as
    save_pretrained writes) or a hub id in the local cache. Never downloads, never reads
    a pickle, never runs a model's own code."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    root = local_path(model, default_dir)
    refuse(model, root)
    path = str(root) if root is not None else model
    with loading(model, "a causal language model", LOAD_FIX):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, local_files_only=True)
    return {"model": lm, "tokenizer": tokenizer}
