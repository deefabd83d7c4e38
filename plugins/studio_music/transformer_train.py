"""Trains music.transformer: next-event prediction over windows of pieces, each window
transposed by a random interval (-5..+6 semitones) so every key is seen."""

from __future__ import annotations

import json
import math
from pathlib import Path

from studio import UserError
from studio.training import Trainer
from studio_lm.likelihood import causal_lm_nll
from studio_lm.options import GPTShape

WINDOW = 256


class MusicTrainer(Trainer):
    generator = "music.transformer"
    description = "A small GPT-2 over performance events."
    default_steps = 2000
    default_batch_size = 16
    default_lr = 1e-3

    class Options(GPTShape):
        """The model's shape; nothing else to set."""

    options: Options

    def setup(self) -> None:
        import numpy as np
        import torch
        from transformers import GPT2LMHeadModel

        from studio_music.transformer_data import load_pieces
        from studio_music.events import BOS, EOS, VOCAB_SIZE
        from studio_music.transformer_network import gpt2_config

        cache = self.config.out / "training" / "dataset.json"
        if cache.is_file():  # converting a corpus takes minutes; a resumed run reuses it
            pieces = json.loads(cache.read_text())
        else:
            pieces = load_pieces(self.config.data)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(pieces))
        if len(pieces) < 2 or not isinstance(pieces, list):
            raise UserError(f"--data {self.config.data!r}: {len(pieces)} piece(s) with notes; training needs at "
                            "least 2 MIDI files with notes (one in ten is held out to measure the model)")
        order = torch.randperm(len(pieces), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = max(1, len(pieces) // 10)
        self.test_pieces = [pieces[i] for i in order[:n_test]]
        train_pieces = [pieces[i] for i in order[n_test:]]
        self.stream = torch.tensor([t for p in train_pieces for t in [BOS, *p, EOS]])
        self.test_stream = torch.tensor([t for p in self.test_pieces for t in [BOS, *p, EOS]])
        if len(self.stream) <= WINDOW + 1:
            raise UserError(f"--data {self.config.data!r}: {len(self.stream):,} events of training music; need more "
                            f"than {WINDOW + 1} (a few minutes of MIDI): give more or longer files")
        counts = np.bincount(self.stream.numpy(), minlength=VOCAB_SIZE) + 1  # add-one smoothing
        self.unigram_nll = float(-(np.log(counts / counts.sum()) * counts).sum() / counts.sum())
        self.config_gpt = gpt2_config(n_layer=self.options.layers, n_embd=self.options.width,
                                      n_head=self.options.heads)
        self.model = GPT2LMHeadModel(self.config_gpt).to(self.device)
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.1,
                                                      betas=(0.9, 0.95))}
        self.pieces, self.events = len(pieces), len(self.stream) + len(self.test_stream)

    def _transpose(self, window):
        import torch

        from studio_music.events import NOTE_OFF, TIME_SHIFT

        shift = int(torch.randint(-5, 7, (1,), generator=self.rng))
        pitched = window < TIME_SHIFT
        pitch = torch.where(window < NOTE_OFF, window, window - NOTE_OFF)
        if not bool(((pitch + shift >= 0) & (pitch + shift <= 127) | ~pitched).all()):
            return window
        return torch.where(pitched, window + shift, window)

    def train_step(self, step: int) -> dict[str, float]:
        import torch

        starts = torch.randint(len(self.stream) - WINDOW - 1, (self.batch_size,), generator=self.rng)
        batch = torch.stack([self._transpose(self.stream[s:s + WINDOW + 1]) for s in starts]).to(self.device)
        self.model.train()
        loss = self.model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss  # HF shifts labels itself
        self.optimize(loss, "model", clip=1.0)
        return {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        """Held-out negative log-likelihood per event (nats), against a unigram model."""
        total, count = causal_lm_nll(self.model, self.test_stream, WINDOW, self.device)
        nll = total / count
        return {"held_out_nll_per_event": nll, "unigram_nll_per_event": self.unigram_nll,
                "held_out_perplexity": math.exp(nll), "pieces": self.pieces, "events": self.events}

    def samples(self) -> dict:
        """The opening of the first held-out piece (up to 6 s) continued for 8 s, drawn
        from a generator of its own with a fixed seed (so every checkpoint continues the
        same way and training's draws are untouched): the continuation as MIDI and as
        pretty_midi's sine synthesis, to hear without a soundfont."""
        import torch

        from studio.media import Audio
        from studio_music.events import BOS, decode, duration_of
        from studio_music.transformer_network import sample

        piece = self.test_pieces[0]
        opening: list[int] = []
        seconds = 0.0
        for token in piece:  # whole events until 6 s of music, within half the context
            seconds += duration_of([token])
            if len(opening) >= WINDOW // 2 or seconds > 6.0:
                break
            opening.append(token)
        self.model.eval()
        new = sample(self.model, [BOS, *opening], duration_s=8.0, temperature=1.0, top_k=0, top_p=0.95,
                     generator=torch.Generator("cpu").manual_seed(0))
        self.model.train()
        midi = decode(opening + new)
        made: dict = {"continuation": midi}
        if midi.instruments[0].notes:
            rate = 16_000
            wave = midi.synthesize(fs=rate)
            peak = float(abs(wave).max()) or 1.0
            made["continuation-sine"] = Audio((wave / peak * 0.5).astype("float32"), rate)
        return made

    def export(self, out: Path) -> None:
        self.model.save_pretrained(out)  # config.json + model.safetensors, as transformers loads
        (out / "studio.json").write_text(json.dumps({"encoding": "performance-388", "data": self.config.data}))
