"""`studio train`: the loop every family shares. A Trainer (registered by a plugin
through `register_trainers`) builds its models and does one optimisation step at a
time; this module owns everything around that: checking the trainer's options, the
progress bar, the loss log, periodic checkpoints, resuming, and writing the weights
directory that `model: DIR` loads. What it was given (TrainConfig) and the checks
before anything is written, the output folder's among them, are studio.training.config's.

Output layout:
    OUT/                 weights (what `model: OUT` loads; the trainer decides the files)
    OUT/training/        log.jsonl, checkpoint.safetensors, optimizer.pt, summary.json
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from studio.errors import UserError, echo
from studio.training.config import (MAX_STEPS, TrainConfig, check_config, check_out, checkpoint_paths, echo_value,
                                    links_leaving)
from studio.training.options import CommaSeparated, OneOf, TrainerOptions, parse_options

if TYPE_CHECKING:
    import torch

# what plugins may import from here (studio.PUBLIC_MODULES); docs/plugins.md describes them
__all__ = ["CommaSeparated", "OneOf", "TrainConfig", "Trainer", "TrainerOptions"]


class Trainer:
    """Subclass per generator. `setup()` fills `self.modules` and `self.optimizers`
    (everything in them is checkpointed); `train_step()` does one step and returns
    its losses; `export()` writes the weights directory. Its settings are a nested
    `class Options(TrainerOptions)`; `self.options` holds the checked values."""

    generator: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_steps: ClassVar[int] = 1000
    default_batch_size: ClassVar[int] = 32
    default_lr: ClassVar[float] = 1e-3
    Options: ClassVar[type[TrainerOptions]] = TrainerOptions  # no options

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a plugin's mistake, reported when it loads rather than when someone trains
        if not (isinstance(cls.Options, type) and issubclass(cls.Options, TrainerOptions)):
            raise TypeError(f"{cls.__name__}.Options must be a subclass of studio.training.TrainerOptions")
        if cls.Options.model_config.get("extra") != "forbid":
            raise TypeError(f"{cls.__name__}.Options must keep extra='forbid': a misspelt --option is an error")

    def __init__(self, config: TrainConfig, device: str, options: TrainerOptions | None = None):
        """`options`: config.options already checked (train() checks them first, before
        anything loads); None checks them here."""
        self.options = options if options is not None else parse_options(type(self), config.options)
        import torch

        self.config = config
        self.device = device
        self.steps = config.steps or self.default_steps
        self.batch_size = config.batch_size or self.default_batch_size
        self.lr = config.lr or self.default_lr
        self.rng = torch.Generator("cpu").manual_seed(config.seed)  # batches and noise
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def setup(self) -> None:
        raise NotImplementedError

    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics; called at checkpoints and at the end."""
        return {}

    def export(self, out: Path) -> None:
        raise NotImplementedError

    def samples(self) -> dict[str, Any]:
        """What the model makes now, to look at while it trains: {name: a PIL image, a
        str, a studio.media.Audio or a pretty_midi.PrettyMIDI}. Written under
        OUT/training/samples/step-N/ at every checkpoint and at the end, with an
        index.html. Must not draw from `self.rng` (a resumed run would train on other
        noise) nor change the model. None by default."""
        return {}

    def optimize(self, loss, optimizer: str, *, clip: float | None = None) -> None:
        """One update of `self.optimizers[optimizer]` from `loss`: clear the gradients,
        backpropagate, clip their norm to `clip` (over the optimizer's parameters), step."""
        import torch

        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
        opt.step()

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth."""
        warmup = min(100, self.steps // 10)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def set_learning_rate(self, step: int) -> float:
        lr = self.learning_rate(step)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr


# --- checkpoints -------------------------------------------------------------------


def save_checkpoint(trainer: Trainer, step: int) -> None:
    import torch
    from safetensors.torch import save_file

    weights_path, state_path = checkpoint_paths(trainer.config.out)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    # clone: tied weights (a language model's embedding and output layer) share memory,
    # which safetensors refuses; loading copies the values back into both
    tensors = {f"{name}.{k}": v.detach().cpu().clone().contiguous()
               for name, module in trainer.modules.items() for k, v in module.state_dict().items()}
    state = {"step": step, "rng": trainer.rng.get_state(), "torch_rng": torch.get_rng_state(),
             "optimizers": {n: o.state_dict() for n, o in trainer.optimizers.items()}}
    # written under temporary names and renamed: a crash mid-save keeps the last checkpoint
    save_file(tensors, str(weights_path) + ".tmp", metadata={"step": str(step), "generator": trainer.generator})
    torch.save(state, str(state_path) + ".tmp")
    os.replace(str(weights_path) + ".tmp", weights_path)
    os.replace(str(state_path) + ".tmp", state_path)


def load_checkpoint(trainer: Trainer) -> int:
    import torch
    from safetensors.torch import load_file

    from studio.limits import regular_file_problem
    from studio.weights import safetensors_problem

    weights_path, state_path = checkpoint_paths(trainer.config.out)
    if not weights_path.exists() or not state_path.exists():
        raise UserError(f"--resume: no checkpoint in {weights_path.parent}; start without --resume")
    start_over = f"delete {trainer.config.out} to start over"
    # the checkpoint is a file on disk like any input: never block on a FIFO, never
    # trust a damaged file, and say which file and what to do
    for path in (weights_path, state_path):
        problem = regular_file_problem(path)
        if problem:
            raise UserError(f"--resume: {problem}; {start_over}")
    problem = safetensors_problem(weights_path)
    if problem:
        raise UserError(f"--resume: {problem} (in {weights_path.parent}); {start_over}")
    _check_checkpoint_fits(trainer, weights_path, state_path, start_over)
    try:
        tensors = load_file(weights_path)
        for name, module in trainer.modules.items():
            prefix = name + "."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        state = torch.load(state_path, weights_only=True)  # never unpickles code
        for name, optimizer in trainer.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        trainer.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
    except MemoryError:
        raise UserError(f"--resume: the checkpoint in {weights_path.parent} does not fit in memory; "
                        f"{start_over}") from None
    except Exception as exc:  # a checkpoint of another model, other options, or damaged
        raise UserError(f"--resume: the checkpoint in {weights_path.parent} does not fit this training "
                        f"({type(exc).__name__}: {str(exc)[:300]}); resume with the options it was started "
                        f"with, or {start_over}") from None
    if type(step) is not int or not 0 <= step <= MAX_STEPS:
        raise UserError(f"--resume: {state_path} gives the step as {echo_value(step)}, not a whole number from 0 to "
                        f"{MAX_STEPS:,}: the file is damaged; {start_over}")
    return step


def _check_checkpoint_fits(trainer: Trainer, weights_path: Path, state_path: Path, start_over: str) -> None:
    """Before a byte of the checkpoint is loaded: it was made by this generator's trainer
    (its metadata says so), its tensors are this model's (names and shapes, from the
    header), and the optimizer state is no larger than such a model's can be. A foreign,
    damaged or huge checkpoint is a UserError naming the file."""
    from safetensors import safe_open

    from studio.weights import safetensors_shapes

    try:
        with safe_open(str(weights_path), "pt") as f:
            metadata = f.metadata() or {}
        shapes = safetensors_shapes(weights_path)
    except Exception as exc:  # safetensors_problem passed: only a file changed meanwhile gets here
        raise UserError(f"--resume: {weights_path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                        f"{start_over}") from None
    made_by = metadata.get("generator")
    if made_by is not None and made_by != trainer.generator:
        raise UserError(f"--resume: the checkpoint in {weights_path.parent} was made by the {echo(made_by, 80)} "
                        f"trainer, not {trainer.generator}'s; give the --out it was trained into, or {start_over}")
    expected = {f"{name}.{k}": (list(v.shape), v.numel() * v.element_size())
                for name, module in trainer.modules.items() for k, v in module.state_dict().items()}
    wrong = [key for key, (shape, _) in expected.items() if shapes.get(key) != shape]
    extra = [key for key in shapes if key not in expected]
    if wrong or extra:
        key = (wrong or extra)[0]
        found = f"{shapes[key]}" if key in shapes else "missing"
        want = f"{expected[key][0]}" if key in expected else "none (this model has no such tensor)"
        raise UserError(f"--resume: the checkpoint in {weights_path.parent} does not fit this training: "
                        f"{len(wrong) + len(extra)} tensors differ (the first, {echo(key, 120)}: {found}, this model: "
                        f"{want}); resume with the options it was started with, or {start_over}")
    # an optimizer keeps at most a few values per parameter (Adam: two), plus small bookkeeping
    limit = 3 * sum(nbytes for _, nbytes in expected.values()) + 64 * 2**20
    size = state_path.stat().st_size
    if size > limit:
        raise UserError(f"--resume: {state_path} is {size / 2**20:,.0f} MiB, more than the optimizer state of this "
                        f"model can be ({limit / 2**20:,.0f} MiB); it is not this training's. {start_over}")


# --- the loop ----------------------------------------------------------------------


@dataclass
class TrainResult:
    out: Path
    steps: int
    losses: dict[str, float]  # mean of the last log window
    metrics: dict[str, float]
    seconds: float


def train(trainer_cls: type[Trainer], config: TrainConfig, *, show_progress: bool = True) -> TrainResult:
    """Train `trainer_cls` (what a plugin registered for `trainer_cls.generator`) as
    `config` says, and write the weights to config.out."""
    # the options first: a mistake in them costs no torch import, no data, no OUT
    check_config(config)
    config.out = Path(config.out)
    options = parse_options(trainer_cls, config.options)
    from studio.execute.runtime import resolve_device

    generator = trainer_cls.generator
    device = resolve_device(config.device)
    out = config.out
    check_out(out, config.resume)
    import torch

    torch.manual_seed(config.seed)  # weight initialisation: the same command makes the same weights
    trainer = trainer_cls(config, device, options)
    trainer.setup()
    start = load_checkpoint(trainer) if config.resume else 0
    if start >= trainer.steps:
        raise UserError(f"the checkpoint in {out} is at step {start}, and --steps is {trainer.steps}; "
                        "raise --steps to train further")
    (out / "training").mkdir(parents=True, exist_ok=True)
    log = _Log(out / "training" / "log.jsonl", time.perf_counter())
    progress = _progress(show_progress, generator, trainer.steps, start)
    done = start
    try:
        with _stop_between_steps() as stop:
            for step in range(start, trainer.steps):
                if stop.requested:
                    break
                done = _one_step(trainer, config, step, log, progress)
    finally:
        progress.close()
    began, last = log.began, log.last
    if done < trainer.steps:  # Ctrl-C: the finished steps are kept
        if done > start:
            save_checkpoint(trainer, done)
        raise TrainingInterrupted(out, done, trainer.steps, saved=done > start)
    save_checkpoint(trainer, trainer.steps)
    write_samples(trainer, trainer.steps)
    metrics = trainer.evaluate()
    links_leaving(out)  # nothing made since the start leads elsewhere either
    trainer.export(out)
    seconds = time.perf_counter() - began
    summary = {"generator": generator, "trainer": trainer_cls.__name__, "data": config.data,
               "steps": trainer.steps, "batch_size": trainer.batch_size, "lr": trainer.lr,
               "seed": config.seed, "device": device, "options": options.model_dump(mode="json"),
               "final_losses": last, "metrics": metrics, "seconds_this_session": round(seconds, 1),
               "config": _config_record(config, options)}
    (out / "training" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return TrainResult(out, trainer.steps, last, metrics, seconds)


def write_samples(trainer: Trainer, step: int) -> None:
    """Trainer.samples() as files under OUT/training/samples/step-N/, and the index.html
    that shows every step's, newest first."""
    import torch

    from studio.execute.artifacts import write_json, write_midi, write_png, write_text, write_wav

    with torch.no_grad():
        made = trainer.samples()
    if not made:
        return
    root = trainer.config.out / "training" / "samples"
    folder = root / f"step-{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    provenance = {"generator": trainer.generator, "step": step}
    for name, value in made.items():
        kind = type(value).__name__
        writer, suffix = {"Image": (write_png, "png"), "str": (write_text, "txt"), "Audio": (write_wav, "wav"),
                          "PrettyMIDI": (write_midi, "mid")}.get(kind, (write_json, "json"))
        writer(value, folder / f"{name}.{suffix}", provenance)
    _samples_index(root, trainer.generator)


def _samples_index(root: Path, generator: str) -> None:
    import html

    from studio.runs.report import piano_roll

    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(generator)} samples</title>",
             "<style>body{font-family:system-ui,sans-serif;margin:2rem}img{image-rendering:pixelated;max-width:"
             "480px}pre{white-space:pre-wrap;background:#f3f3f3;padding:.4rem;max-width:60rem}</style>",
             f"<h1>{html.escape(generator)}: samples during training</h1>"]
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        parts.append(f"<h2>{html.escape(folder.name)}</h2>")
        for f in sorted(folder.iterdir()):
            rel = html.escape(f"{folder.name}/{f.name}")
            if f.suffix == ".png":
                parts.append(f'<img src="{rel}" alt="{rel}" width=480>')
            elif f.suffix == ".wav":
                parts.append(f'<audio controls src="{rel}"></audio>')
            elif f.suffix == ".mid":
                roll = piano_roll(f, width=480, height=120)
                image = f'<img src="{roll}" alt="piano roll of {rel}" width=480><br>' if roll else ""
                parts.append(f'<div>{image}<a href="{rel}">{rel}</a></div>')
            elif f.suffix == ".txt":
                parts.append(f"<pre>{html.escape(f.read_text(encoding='utf-8', errors='replace')[:5000])}</pre>")
            else:
                parts.append(f'<a href="{rel}">{rel}</a>')
    (root / "index.html").write_text("\n".join(parts), encoding="utf-8")


class TrainingInterrupted(Exception):
    """Ctrl-C during `studio train`: the steps finished so far are in a checkpoint."""

    def __init__(self, out: Path, done: int, total: int, saved: bool):
        super().__init__(f"interrupted at step {done} of {total}")
        self.out, self.done, self.total, self.saved = out, done, total, saved


@dataclass
class _Log:
    """OUT/training/log.jsonl: the mean of each loss over the last `log_every` steps."""

    path: Path
    began: float
    window: dict[str, list[float]] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def flush(self, done: int, lr: float) -> None:
        self.last = {k: sum(v) / len(v) for k, v in self.window.items()}
        self.window = {}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": done, "lr": lr, **self.last,
                                "seconds": round(time.perf_counter() - self.began, 2)}) + "\n")


def _one_step(trainer: Trainer, config: TrainConfig, step: int, log: _Log, progress: "_progress") -> int:
    lr = trainer.set_learning_rate(step)
    for key, value in trainer.train_step(step).items():
        if not math.isfinite(value):
            raise UserError(f"training diverged at step {step + 1}: {key} is {value}. "
                            "Lower --lr or resume from the last checkpoint")
        log.window.setdefault(key, []).append(value)
    done = step + 1
    if done % config.log_every == 0 or done == trainer.steps:
        log.flush(done, lr)
    progress.update(done, log.last)  # every step: the bar and its estimate of the time left move
    if done % config.checkpoint_every == 0 and done < trainer.steps:
        save_checkpoint(trainer, done)
        write_samples(trainer, done)
    return done


class _stop_between_steps:
    """The first Ctrl-C asks training to stop after the step it is in (so the checkpoint
    holds whole steps); a second one stops at once. Only where signals can be handled
    (the main thread); elsewhere Ctrl-C stops at once, as it always does."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self) -> "_stop_between_steps":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        import signal

        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next one is at once

    def __exit__(self, *exc) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _config_record(config: TrainConfig, options: TrainerOptions) -> dict[str, Any]:
    """The command as given, as JSON values: null where the trainer's default was used,
    and only the options that were given, converted (summary.json's "options" has all)."""
    record = asdict(config)
    record["out"] = str(config.out)
    record["options"] = options.model_dump(mode="json", exclude_unset=True)
    return record


class _progress:
    def __init__(self, show: bool, name: str, total: int, start: int):
        self.bar = None
        if show:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn(f"train {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
            self.task = self.bar.add_task("", total=total, completed=start, losses="")
            self.bar.start()

    def update(self, done: int, losses: dict[str, float]) -> None:
        if self.bar:
            text = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
            self.bar.update(self.task, completed=done, losses=text)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
