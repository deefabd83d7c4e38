"""Text: a GPT-style causal language model (transformers + tokenizers)."""

from studio import hookimpl
from studio_text.gpt import TextGPT
from studio_text.gpt_train import GPTTrainer


@hookimpl
def register_generators(register):
    register(TextGPT)


@hookimpl
def register_trainers(register):
    register(GPTTrainer)
