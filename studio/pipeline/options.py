"""The choices a caller makes about one pipeline run, in two typed objects made once
(by the command line from its flags, by studio.api from its keyword arguments) and
handed down unchanged:

- PipelineOptions shape the pipeline itself: `--set` overrides, seed, device,
  precision, compile, the folder relative input files are read from, and the model
  folders names like `model: dreamshaper_8` are looked up in (studio.models). The spec
  reader (studio.pipeline.spec.read_spec) applies them over the file's values; the manifest
  records the pipeline as they made it.
- RunOptions shape how a checked plan runs: where the outputs go, the step cache, the
  event sink, the memory for loaded models, and the executor (local or a Ray cluster).

Nothing heavy is imported here: `studio validate` builds PipelineOptions too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.execute.events import Sink
    from studio.execute.runtime import ModelBudget, Runtime


@dataclass(frozen=True)
class PipelineOptions:
    """What the caller sets over the pipeline file; None keeps the file's value."""

    overrides: tuple[str, ...] = ()  # "STEP.PARAM=VALUE", as `--set` takes them
    seed: int | None = None
    device: str | None = None
    precision: str | None = None
    compile: bool | None = None
    base_dir: Path | None = None  # relative input files; None: the pipeline file's folder
    model_dirs: tuple[Path, ...] = ()  # `--models DIR`s, searched before STUDIO_MODELS' folders

    def __post_init__(self) -> None:
        # any iterable of strings (a list, click's tuple) is kept as a tuple: the object stays frozen
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "model_dirs", tuple(Path(d) for d in self.model_dirs))
        if self.base_dir is not None:
            object.__setattr__(self, "base_dir", Path(self.base_dir))

    def top_level(self) -> dict[str, object]:
        """The top-level keys these options set (a key the file lacks goes after its own)."""
        values = {"seed": self.seed, "device": self.device, "precision": self.precision, "compile": self.compile}
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class RunOptions:
    """How a checked plan runs."""

    out: Path = Path("runs")  # runs go to OUT/<pipeline>/<run-id>/
    use_cache: bool = True  # reuse finished items from the step cache
    events: Sink | None = None  # progress events; None: none
    runtime: Runtime | None = None  # device, precision and model cache; None: made from the spec
    memory: ModelBudget | None = None  # bytes of loaded models kept, when no runtime is given
    executor: str | None = None  # "local" or "ray"; None: the pipeline's `executor:`
    ray_address: str | None = None  # the Ray cluster (None: RAY_ADDRESS, else a local one)
    keep_workers: float | None = None  # seconds idle Ray workers wait for the next run (None: its default)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
