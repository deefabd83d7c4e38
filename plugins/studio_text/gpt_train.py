"""Trains text.gpt: a byte-level BPE tokenizer (tokenizers), then a small GPT-2
(transformers) on next-token prediction over random windows of the text.

One document in ten is held out. Validation loss is reported per token and per
character (total nats over the held-out characters), the second comparable across
tokenizers: nanoGPT's character-level Shakespeare model reaches 1.47 nats per character.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import Field

from studio import UserError
from studio.training import Trainer
from studio_lm.likelihood import causal_lm_nll
from studio_lm.options import GPTShape

MIN_CHARS = 1000

END = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2's scheme) learned from `texts`, wrapped so transformers'
    AutoTokenizer loads it back from a directory."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[END], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=END, eos_token=END,
                                   unk_token=END, clean_up_tokenization_spaces=False)


class GPTTrainer(Trainer):
    generator = "text.gpt"
    description = "A small GPT-2 with its own byte-level BPE tokenizer."
    default_steps = 1000
    default_batch_size = 16
    default_lr = 1e-3

    class Options(GPTShape):
        block: int = Field(256, ge=8, le=4096, description=(
            "Context length in tokens: the model reads windows this long, and writes within it."))
        vocab_size: int = Field(2048, ge=257, le=65536, description=(
            "Tokens the byte-level BPE tokenizer learns: the 256 bytes, the end-of-text token, and merges. "
            "Kept from the first run when resuming."))

    options: Options

    def setup(self) -> None:
        import torch
        from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

        from studio_text.gpt_data import load_documents

        opts = self.options
        self.block = opts.block
        docs = load_documents(self.config.data)
        chars = sum(len(t) for _, t in docs)
        if chars < MIN_CHARS:
            raise UserError(f"--data: too little text: {chars:,} characters; need at least {MIN_CHARS:,} "
                            "(a few pages) to train a tokenizer and a model")
        held_out = [d for i, d in enumerate(docs) if i % 10 == 9] or docs[-1:]
        train_docs = [d for d in docs if d not in held_out] or docs
        tok_dir = self.config.out / "training" / "tokenizer"
        if (tok_dir / "tokenizer.json").is_file():  # a resumed run keeps its vocabulary
            self.tokenizer = _saved_tokenizer(tok_dir, AutoTokenizer)
        else:
            self.tokenizer = train_tokenizer([t for _, t in train_docs], opts.vocab_size)
            self.tokenizer.save_pretrained(tok_dir)
        eos = self.tokenizer.eos_token_id

        def stream(documents) -> torch.Tensor:
            ids = []
            for _, text in documents:
                ids += self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
            return torch.tensor(ids)

        self.train_ids, self.val_ids = stream(train_docs), stream(held_out)
        if len(self.train_ids) <= self.block + 1 or len(self.val_ids) < 2:
            raise UserError(f"--data: too little text: {chars:,} characters make {len(self.train_ids):,} training "
                            f"tokens; need more than {self.block + 1} (block {self.block}). Give more text or "
                            "a smaller --option block")
        self.val_chars = sum(len(t) + 1 for _, t in held_out)  # +1: the document break
        self.docs = {"train": [n for n, _ in train_docs], "held_out": [n for n, _ in held_out]}
        config = GPT2Config(vocab_size=len(self.tokenizer), n_positions=self.block, n_embd=opts.width,
                            n_layer=opts.layers, n_head=opts.heads, bos_token_id=eos, eos_token_id=eos,
                            resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
        self.model = GPT2LMHeadModel(config).to(self.device)
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.1,
                                                      betas=(0.9, 0.95))}

    def train_step(self, step: int) -> dict[str, float]:
        import torch

        starts = torch.randint(len(self.train_ids) - self.block - 1, (self.batch_size,), generator=self.rng)
        batch = torch.stack([self.train_ids[s:s + self.block] for s in starts]).to(self.device)
        self.model.train()
        loss = self.model(input_ids=batch, labels=batch).loss  # transformers shifts the labels
        self.optimize(loss, "model", clip=1.0)
        return {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        """Held-out loss over consecutive windows of the held-out documents."""
        total, count = causal_lm_nll(self.model, self.val_ids, self.block, self.device)
        per_token = total / count
        return {"val_loss_per_token": per_token, "val_loss_per_char": total / self.val_chars,
                "val_perplexity_per_token": math.exp(per_token), "val_tokens": count,
                "chars_per_token": self.val_chars / count}

    def samples(self) -> dict:
        """The opening of the held-out text continued greedily (no random draw), up to 120
        tokens within the model's context."""
        import torch

        prompt = self.val_ids[:min(16, self.block // 2)].unsqueeze(0).to(self.device)
        self.model.eval()
        made = self.model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                   max_new_tokens=max(1, min(120, self.block - prompt.shape[1])),
                                   do_sample=False, pad_token_id=self.tokenizer.eos_token_id)
        self.model.train()
        return {"continuation": self.tokenizer.decode(made[0], skip_special_tokens=True)}

    def export(self, out: Path) -> None:
        self.model.save_pretrained(out)  # config.json, generation_config.json, model.safetensors
        self.tokenizer.save_pretrained(out)  # tokenizer.json + tokenizer_config.json
        (out / "studio.json").write_text(json.dumps({"data": self.config.data, **self.docs}, indent=1))


MAX_TOKENIZER_BYTES = 64 * 2**20  # a learnt BPE of up to 65,536 tokens is a few MB


def _saved_tokenizer(folder, loader):
    """The tokenizer an earlier run of this folder learnt (a resumed run must keep its
    vocabulary), read as untrusted input: plain files of a bounded size, and whatever
    fails to load is the user's damaged folder (exit 2), not a crash."""
    import os
    import stat

    for name in os.listdir(folder):
        st = os.lstat(folder / name)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_TOKENIZER_BYTES:
            raise UserError(f"{folder / name}: not a plain file of at most {MAX_TOKENIZER_BYTES >> 20} MB, as the "
                            "tokenizer an earlier run saved would be; remove the training folder to start over")
    try:
        return loader.from_pretrained(folder)
    except Exception as exc:  # transformers raises many kinds on a damaged file
        raise UserError(f"{folder}: the tokenizer an earlier run saved cannot be loaded ({str(exc)[:200]}); "
                        "remove the training folder to start over") from None
