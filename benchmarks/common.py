"""What the benchmark scripts share: timing (medians after a warm-up, CUDA synchronised),
Studio running one-step pipelines from YAML with a warm Runtime, and the JSON record."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn, repeats: int, warmups: int = 1) -> float:
    """Median seconds of `fn` over `repeats` calls, after `warmups` untimed ones
    (caches, the allocator, lazy imports, compilation)."""
    for _ in range(warmups):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def paired_times(raw, studio, repeats: int) -> tuple[float, float]:
    """Medians of `raw` and `studio`, each warmed up, then called in turn so that drift
    in the machine's speed (clocks, other load) falls on both alike."""
    raw(), studio()
    sync()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((raw, times[0]), (studio, times[1])):
            began = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - began)
    return statistics.median(times[0]), statistics.median(times[1])


class StudioRunner:
    """Runs one-step pipelines through the public API with a shared, warm Runtime: what
    is compared with the raw loop is the step (parameters, seeds, the generator, writing
    the file with its provenance, the manifest), not loading."""

    def __init__(self, tmp: Path, device: str = "cpu", precision: str = "fp32"):
        from studio.execute.runtime import Runtime

        self.tmp, self.device, self.precision = tmp, device, precision
        self.runtimes, self.count = {precision: Runtime(device, precision)}, 0

    def __call__(self, steps: list[dict], precision: str | None = None):
        from studio import api

        precision = precision or self.precision
        self.count += 1
        path = self.tmp / f"p{self.count}.yaml"
        path.write_text(json.dumps({"name": "bench", "device": self.device, "precision": precision,
                                    "steps": steps}))
        if precision not in self.runtimes:
            from studio.execute.runtime import Runtime

            self.runtimes[precision] = Runtime(self.device, precision)
        runtime = self.runtimes[precision]
        result = api.run(path, out=self.tmp / "runs", use_cache=False, runtime=runtime)
        assert result.status == "done", [item.error for item in result.failed]
        return result


def command_seconds(args: list[str], repeats: int) -> float:
    exe = Path(sys.executable).with_name("studio")
    return median_time(lambda: subprocess.run([str(exe), *args], cwd=ROOT, check=True, capture_output=True),
                       repeats)


def write_json(path: Path, device: str, rows: list[dict], **extra) -> None:
    import diffusers
    import transformers

    machine = f"{platform.machine()}, {torch.get_num_threads()} CPU threads"
    if device.startswith("cuda"):
        machine += f", {torch.cuda.get_device_name(device)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": machine, "device": device, "torch": torch.__version__,
        "cuda": torch.version.cuda, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), **extra, "rows": rows}, indent=1))
    print(f"wrote {path}")
