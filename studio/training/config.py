"""What `studio train` was given (TrainConfig), the bounds of its own flags, and the
checks made before anything loads or is written: every value of the config, and the
output folder (never a system directory, a file, a folder of someone else's files, or
a link inside it that leads elsewhere). Public through studio.training.

Output layout:
    OUT/                 weights (what `model: OUT` loads; the trainer decides the files)
    OUT/training/        log.jsonl, checkpoint.safetensors, optimizer.pt, summary.json
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import UserError, echo

# the bounds of `studio train`'s own flags (the command line's option types say the same)
MAX_STEPS = 10_000_000
MAX_BATCH_SIZE = 65536
MAX_SEED = 2**63 - 1
# OUT is walked for links that lead elsewhere before anything is written: the folders
# training writes reach 4 levels down (OUT/training/samples/step-N/NAME); a folder holding
# more entries than this is not a training run's
MAX_OUT_ENTRIES = 100_000
OUT_DEPTH = 4


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


def checkpoint_paths(out: Path) -> tuple[Path, Path]:
    """The checkpoint's weights and optimizer state in OUT/training/."""
    return out / "training" / "checkpoint.safetensors", out / "training" / "optimizer.pt"


def echo_value(value: Any, limit: int = 60) -> str:
    """A value for a message: echo's clipped repr, but never the repr of an integer past
    Python's digit limit (that would raise)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"{'-' if value < 0 else ''}a {value.bit_length():,}-bit number"
    return echo(value, limit)


def check_config(config: TrainConfig) -> None:
    """Every value of `config` that is not the trainer's own option (those are
    parse_options'), checked before anything loads: a UserError naming the option
    (--steps, --lr, ...), what it got and what it takes. The command line's types refuse
    the same values; this holds for a TrainConfig built in Python too."""

    def whole(value: Any, flag: str, low: int, high: int, *, optional: bool = False) -> None:
        if value is None and optional:
            return
        if type(value) is not int or not low <= value <= high:
            raise UserError(f"{flag} {echo_value(value)}: give a whole number from {low:,} to {high:,}")

    if not isinstance(config.data, str) or not config.data.strip() or "\x00" in config.data \
            or len(config.data) > 4096:
        raise UserError(f"--data {echo(config.data, 100)}: give a folder or file of training data, or a named "
                        "source (e.g. sklearn:digits): a path of at most 4,096 characters, without NUL")
    whole(config.steps, "--steps", 1, MAX_STEPS, optional=True)
    whole(config.batch_size, "--batch-size", 1, MAX_BATCH_SIZE, optional=True)
    whole(config.seed, "--seed", 0, MAX_SEED)
    whole(config.checkpoint_every, "--checkpoint-every", 1, MAX_STEPS)
    whole(config.log_every, "log_every", 1, MAX_STEPS)
    lr = config.lr
    try:
        lr_ok = lr is None or (isinstance(lr, (int, float)) and not isinstance(lr, bool)
                               and math.isfinite(float(lr)) and 0 < lr <= 1)
    except OverflowError:  # an int past a float's range
        lr_ok = False
    if not lr_ok:
        raise UserError(f"--lr {echo_value(lr)}: give a number above 0 and at most 1 (e.g. 3e-4)")
    if not isinstance(config.device, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,4})?", config.device):
        raise UserError(f"--device {echo(config.device, 60)}: give auto, cpu, cuda or cuda:N (N a device number)")
    if not isinstance(config.options, dict) or not all(isinstance(k, str) for k in config.options):
        raise UserError(f"--option: {echo(config.options, 100)}: give KEY=VALUE settings")
    if not isinstance(config.out, (str, os.PathLike)) or "\x00" in str(config.out) or not str(config.out):
        raise UserError(f"--out {echo(config.out, 100)}: give a folder for the model")


def links_leaving(out: Path) -> None:
    """A UserError when a link inside OUT (training/, a checkpoint, the samples, the weights,
    the model card: anything training writes, OUT_DEPTH levels down) leads outside OUT, a
    dangling one included: writing through it would put the file elsewhere; or when a FIFO,
    socket or device sits there (writing to it would block or go elsewhere). The walk is a
    loop that follows no link and looks at no more than MAX_OUT_ENTRIES entries."""
    real_out = os.path.realpath(out)
    if not os.path.isdir(real_out):
        return
    fence = real_out.rstrip(os.sep) + os.sep
    pending, looked = [(str(out), 1)], 0
    while pending:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            raise UserError(f"--out {out}: {folder} cannot be read ({exc.strerror or exc}); "
                            "give another folder") from None
        for entry in entries:
            looked += 1
            if looked > MAX_OUT_ENTRIES:
                raise UserError(f"--out {out} holds more than {MAX_OUT_ENTRIES:,} entries; it is not a training run's "
                                "folder. Give a new folder for the model")
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if target != real_out and not target.startswith(fence):
                    raise UserError(f"--out {out}: {entry.path} is a link to {target}, outside --out; training writes "
                                    "there (checkpoints, optimizer state, samples, weights) and would write outside "
                                    f"{out}. Remove the link, or give another --out")
            elif entry.is_dir(follow_symlinks=False):
                if depth < OUT_DEPTH:
                    pending.append((entry.path, depth + 1))
            elif not entry.is_file(follow_symlinks=False):  # opening a FIFO to write would block
                raise UserError(f"--out {out}: {entry.path} is not a regular file (a FIFO, socket or device); "
                                "training writes plain files in --out. Remove it, or give another --out")


def check_out(out: Path, resume: bool) -> None:
    """Training writes config.json, model.safetensors, a model card and training/ into
    OUT: never into a system directory, a file, or a folder of someone else's files, nor
    through a link inside OUT to somewhere else."""
    from studio.pipeline.modelpath import SYSTEM_DIRS

    try:
        real = out.expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise UserError(f"--out {out} cannot be used ({exc}); give a new folder for the model") from None
    if str(real) in SYSTEM_DIRS or real == Path.home():
        raise UserError(f"--out {out} is {real}, a system directory; give a new folder for the model, "
                        "e.g. --out models/my-model")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a new folder for the model")
    if out.is_symlink() and not out.exists():
        raise UserError(f"--out {out} is a link to {os.readlink(out)}, which does not exist; give a new folder "
                        "for the model")
    links_leaving(out)
    if resume:
        return  # load_checkpoint says what it finds there
    if checkpoint_paths(out)[0].exists():
        raise UserError(f"{out} already holds a training run; pass --resume to continue it, "
                        "or choose another --out")
    if out.is_dir():
        try:
            # training/ alone is this command's own (a run that stopped before its first checkpoint)
            present = sorted(p.name for p in out.iterdir() if p.name != "training")
        except OSError as exc:
            raise UserError(f"--out {out} cannot be read ({exc.strerror or exc}); give a new folder") from None
        if present:
            shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
            raise UserError(f"--out {out} already holds files ({shown}) and no training run; training would "
                            "overwrite them. Give a new or empty folder")
