"""`studio train`: the loop every family shares. A Trainer (registered by a plugin
through `register_trainers`) builds its models and does one optimisation step at a
time; this module owns everything around that: checking the trainer's options, the
progress bar, the loss log, periodic checkpoints, resuming, and writing the weights
directory that `model: DIR` loads.

Output layout:
    OUT/                 weights (what `model: OUT` loads; the trainer decides the files)
    OUT/training/        log.jsonl, checkpoint.safetensors, optimizer.pt, summary.json
"""

from __future__ import annotations

import json
import math
import os
import time
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from studio.errors import UserError, did_you_mean, echo

if TYPE_CHECKING:
    import torch

# what plugins may import from here (studio.PUBLIC_MODULES); docs/plugins.md describes them
__all__ = ["CommaSeparated", "OneOf", "TrainConfig", "Trainer", "TrainerOptions"]


# --- trainer options ------------------------------------------------------------------


class TrainerOptions(BaseModel):
    """A trainer's own settings, `--option KEY=VALUE` on the command line. A Trainer
    declares them as a nested `class Options(TrainerOptions)`, every field with a type,
    a default, bounds and a description; `studio train GEN --help` lists them.

    Values arrive as text and pydantic converts them (lax mode: "32" is 32, "1e-4" is
    0.0001, "true" is True); a list is written comma separated (see `CommaSeparated`).
    An unknown key or a value out of bounds is a UserError before anything loads."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _split_commas(value: Any) -> Any:
    """'1,2,4' -> ['1', '2', '4']: how a list option is written after --option KEY=."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")] if value.strip() else []
    return value  # already a list or tuple (a caller in Python)


# a tuple field annotated with this takes "1,2,4" as well as (1, 2, 4)
CommaSeparated = BeforeValidator(_split_commas)


@dataclass(frozen=True)
class OneOf:
    """Field metadata: the value must be one of `choices`, compared after conversion.
    (Literal[1, 3] would refuse the text "3" that --option gives.)"""

    choices: tuple[Any, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        if value not in self.choices:
            raise ValueError(f"should be one of {', '.join(_option_text(c) for c in self.choices)}")
        return value


def parse_options(trainer_cls: type[Trainer], given: Mapping[Any, Any]) -> TrainerOptions:
    """`given` (--option values: text from the command line, or typed values from
    Python) checked and converted by the trainer's Options. Everything wrong becomes a
    UserError that names the option, what it got and what it takes."""
    options_cls = trainer_cls.Options
    known = list(options_cls.model_fields)
    for key in given:
        if key not in known:
            raise UserError(_unknown_option(trainer_cls.generator, str(key), known))
    try:
        return options_cls(**given)
    except ValidationError as exc:
        raise UserError("\n".join(_bad_value(trainer_cls, given, error)
                                   for error in exc.errors(include_url=False))) from None


def _unknown_option(generator: str, key: str, known: list[str]) -> str:
    if not known:
        return f"--option {echo(key)}: the {generator} trainer takes no --option"
    return (f"--option {echo(key)}: the {generator} trainer has no such option." + did_you_mean(key, known)
            + f" Its options: {', '.join(known)} (`studio train {generator} --help` describes them)")


def _bad_value(trainer_cls: type[Trainer], given: Mapping[Any, Any], error: dict[str, Any]) -> str:
    reason = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    if not error["loc"]:  # a rule across options (a model validator)
        return f"options of the {trainer_cls.generator} trainer: {reason}"
    name, *item = error["loc"]
    if item:  # one entry of a list option
        reason = f"entry {item[0] + 1}: {reason}"
    doc = next(d for d in describe_options(trainer_cls.Options) if d.name == name)
    return (f"--option {name}={echo(given.get(name))} for the {trainer_cls.generator} trainer: {reason}. "
            f"Allowed: {doc.allowed}; default: {doc.default}")


@dataclass(frozen=True)
class OptionDoc:
    """One option as `studio train GEN --help` shows it."""

    name: str
    allowed: str  # "integer, 4 to 1024, a multiple of 4"
    default: str  # as it is written after --option KEY=
    description: str


def describe_options(options_cls: type[TrainerOptions]) -> list[OptionDoc]:
    return [OptionDoc(name, _allowed(f.annotation, f.metadata),
                      _option_text(f.get_default(call_default_factory=True)), f.description or "")
            for name, f in options_cls.model_fields.items()]


_TYPE_NAMES = {int: "integer", float: "number", str: "text", bool: "true or false"}


def _allowed(annotation: Any, metadata: list[Any]) -> str:
    """What a field takes, in words: its type, then its bounds."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *extra = typing.get_args(annotation)
        return _allowed(inner, [*extra, *metadata])
    if origin in (tuple, list):
        item, *_ = typing.get_args(annotation) or (Any,)
        item_text = _allowed(item, [])
        kind, _, item_bounds = item_text.partition(", ")
        text = f"comma-separated {kind}s" + (f" (each {item_bounds})" if item_bounds else "")
        return ", ".join([text, *_bounds(metadata, "entries")])
    return ", ".join([_TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation))),
                      *_bounds(metadata, "characters")])


def _bounds(metadata: list[Any], units: str) -> list[str]:
    # Field(ge=...) arrives as annotated_types objects, possibly wrapped in a FieldInfo
    flat = [m for meta in metadata for m in getattr(meta, "metadata", [meta])]
    found = {key: getattr(m, key) for m in flat
             for key in ("ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length")
             if getattr(m, key, None) is not None}
    if "ge" in found and "le" in found:
        words = [f"{found['ge']} to {found['le']}"]
    else:
        words = [f"{text} {found[key]}" for key, text in (("ge", "at least"), ("gt", "more than"),
                                                           ("le", "at most"), ("lt", "less than")) if key in found]
    if "multiple_of" in found:
        words.append(f"a multiple of {found['multiple_of']}")
    if "min_length" in found and "max_length" in found:
        words.append(f"{found['min_length']} to {found['max_length']} {units}")
    elif "min_length" in found or "max_length" in found:
        words.append(f"at least {found['min_length']} {units}" if "min_length" in found
                     else f"at most {found['max_length']} {units}")
    words += [f"one of {', '.join(_option_text(c) for c in m.choices)}" for m in flat if isinstance(m, OneOf)]
    return words


def _option_text(value: Any) -> str:
    """A value as it is written after --option KEY=."""
    if isinstance(value, (tuple, list)):
        return ",".join(_option_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class TrainConfig:
    data: str  # a directory, or a named source such as "sklearn:digits"
    out: Path
    steps: int | None = None  # None: the trainer's default
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 250
    log_every: int = 25
    # the trainer's own settings as given (--option KEY=VALUE: text; from Python: text or
    # typed values), checked by its Options when training starts
    options: dict[str, Any] = field(default_factory=dict)


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


def _checkpoint_paths(out: Path) -> tuple[Path, Path]:
    return out / "training" / "checkpoint.safetensors", out / "training" / "optimizer.pt"


def save_checkpoint(trainer: Trainer, step: int) -> None:
    import torch
    from safetensors.torch import save_file

    weights_path, state_path = _checkpoint_paths(trainer.config.out)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    # clone: tied weights (a language model's embedding and output layer) share memory,
    # which safetensors refuses; loading copies the values back into both
    tensors = {f"{name}.{k}": v.detach().cpu().clone().contiguous()
               for name, module in trainer.modules.items() for k, v in module.state_dict().items()}
    state = {"step": step, "rng": trainer.rng.get_state(), "torch_rng": torch.get_rng_state(),
             "optimizers": {n: o.state_dict() for n, o in trainer.optimizers.items()}}
    # written under temporary names and renamed: a crash mid-save keeps the last checkpoint
    save_file(tensors, str(weights_path) + ".tmp", metadata={"step": str(step)})
    torch.save(state, str(state_path) + ".tmp")
    os.replace(str(weights_path) + ".tmp", weights_path)
    os.replace(str(state_path) + ".tmp", state_path)


def load_checkpoint(trainer: Trainer) -> int:
    import torch
    from safetensors.torch import load_file

    from studio.limits import regular_file_problem
    from studio.weights import safetensors_problem

    weights_path, state_path = _checkpoint_paths(trainer.config.out)
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
        return int(state["step"])
    except Exception as exc:  # a checkpoint of another model, other options, or damaged
        raise UserError(f"--resume: the checkpoint in {weights_path.parent} does not fit this training "
                        f"({type(exc).__name__}: {str(exc)[:300]}); resume with the options it was started "
                        f"with, or {start_over}") from None


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
    options = parse_options(trainer_cls, config.options)
    from studio.runtime import resolve_device

    generator = trainer_cls.generator
    device = resolve_device(config.device)
    out = config.out
    if not config.resume and _checkpoint_paths(out)[0].exists():
        raise UserError(f"{out} already holds a training run; pass --resume to continue it, "
                        "or choose another --out")
    import torch

    torch.manual_seed(config.seed)  # weight initialisation: the same command makes the same weights
    trainer = trainer_cls(config, device, options)
    trainer.setup()
    start = load_checkpoint(trainer) if config.resume else 0
    if start >= trainer.steps:
        raise UserError(f"the checkpoint in {out} is at step {start}, and --steps is {trainer.steps}; "
                        "raise --steps to train further")
    (out / "training").mkdir(parents=True, exist_ok=True)
    log_path = out / "training" / "log.jsonl"
    began = time.perf_counter()
    window: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    progress = _progress(show_progress, generator, trainer.steps, start)
    try:
        for step in range(start, trainer.steps):
            lr = trainer.set_learning_rate(step)
            for key, value in trainer.train_step(step).items():
                if not math.isfinite(value):
                    raise UserError(f"training diverged at step {step + 1}: {key} is {value}. "
                                    "Lower --lr or resume from the last checkpoint")
                window.setdefault(key, []).append(value)
            done = step + 1
            if done % config.log_every == 0 or done == trainer.steps:
                last = {k: sum(v) / len(v) for k, v in window.items()}
                window = {}
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(json.dumps({"step": done, "lr": lr, **last,
                                          "seconds": round(time.perf_counter() - began, 2)}) + "\n")
                progress.update(done, last)
            if done % config.checkpoint_every == 0 and done < trainer.steps:
                save_checkpoint(trainer, done)
    finally:
        progress.close()
    save_checkpoint(trainer, trainer.steps)
    metrics = trainer.evaluate()
    trainer.export(out)
    seconds = time.perf_counter() - began
    summary = {"generator": generator, "trainer": trainer_cls.__name__, "data": config.data,
               "steps": trainer.steps, "batch_size": trainer.batch_size, "lr": trainer.lr,
               "seed": config.seed, "device": device, "options": options.model_dump(mode="json"),
               "final_losses": last, "metrics": metrics, "seconds_this_session": round(seconds, 1),
               "config": _config_record(config, options)}
    (out / "training" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return TrainResult(out, trainer.steps, last, metrics, seconds)


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
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(f"train {name}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
            self.task = self.bar.add_task("", total=total, completed=start, losses="")
            self.bar.start()

    def update(self, done: int, losses: dict[str, float]) -> None:
        if self.bar:
            text = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
            self.bar.update(self.task, completed=done, losses=text)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
