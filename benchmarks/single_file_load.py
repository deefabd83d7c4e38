"""Loading an SD 1.5-size single-file checkpoint: Studio's image.diffusion load against
diffusers' own `from_single_file` handed the same configuration (Studio's shipped
single_file_configs/sd1 and the same CLIP tokenizer), on the CPU.

    python benchmarks/single_file_load.py [--repeat 3] [--keep DIR]

The checkpoint is built once into a temporary folder: random fp16 weights (about 2 GB) in
the original layout model sites ship (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.*), named by the same conversion tests/test_single_file.py
checks against diffusers. Each load runs in a fresh subprocess (nothing cached between
them, the file in the page cache after the first), in turn Studio then diffusers, so
drift in the machine's speed falls on both alike. Reported: the load's seconds inside the
subprocess (after the imports both sides pay alike, diffusers' lazy pipeline modules
included, and the parameters' validation, which runs before a run loads), wall and CPU time (the
CPU time is the steadier figure on a shared machine), and the subprocess's peak resident
memory (ru_maxrss), medians of --repeat; the ratio is diffusers' time over Studio's (>= 1:
Studio as fast or faster; issue 29 asks >= 0.97).

Studio's load is ImageDiffusion.load (the generator's own: the header checks, family
recognition, the shipped configs, the tokenizer built offline); the pipeline is fp32 in
both, as Studio loads it before `prepare` moves it to the device and precision.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(path: Path) -> int:
    """A random-weight SD 1.5 checkpoint in the single-file layout; its tensor count."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "tests"))
    from test_single_file import family_shapes  # the layout the single-file tests check

    generator = torch.Generator().manual_seed(0)
    tensors = {name: (torch.randn(shape, generator=generator) * 0.02).half()
               for name, shape in family_shapes("sd1").items()}
    save_file(tensors, path)
    return len(tensors)


def child(which: str, path: str) -> None:
    """One load in this fresh process; prints {"seconds", "cpu_seconds", "maxrss_mb"} as JSON."""
    import torch
    from diffusers import StableDiffusionPipeline  # imports both sides pay alike (lazy modules): not timed

    from studio_diffusers.clip_vocab import clip_tokenizer
    from studio_image.diffusion import ImageDiffusion
    from studio_image.diffusion_single_file import CONFIGS

    params = ImageDiffusion.Params(model=path)  # validated before a run loads: not timed
    began, cpu_began = time.perf_counter(), time.process_time()
    if which == "studio":
        pipe = ImageDiffusion().load(params, None).model.pipeline
    else:
        pipe = StableDiffusionPipeline.from_single_file(path, config=str(CONFIGS / "sd1"), local_files_only=True,
                                                        torch_dtype=torch.float32, tokenizer=clip_tokenizer())
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "maxrss_mb": maxrss_mb, "unet_params": unet_params}))


def measure(which: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", which, str(path)], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{which} load failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the checkpoint here (kept) instead of a temporary folder")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "sd15-random.safetensors"
        if not path.exists():
            began = time.perf_counter()
            count = build(path)
            print(f"built {count} tensors, {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - began:.0f} s")
        runs: dict[str, list[dict]] = {"studio": [], "diffusers": []}
        for _ in range(args.repeat):
            for which in runs:
                runs[which].append(measure(which, path))
    seconds = {w: statistics.median(r["seconds"] for r in rs) for w, rs in runs.items()}
    cpu = {w: statistics.median(r["cpu_seconds"] for r in rs) for w, rs in runs.items()}
    memory = {w: statistics.median(r["maxrss_mb"] for r in rs) for w, rs in runs.items()}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; medians of {args.repeat}, each load in "
          "a fresh process")
    for which in runs:
        each = ", ".join(f"{r['seconds']:.2f}" for r in runs[which])
        print(f"{which:10s} load {seconds[which]:7.2f} s ({each}; CPU {cpu[which]:.2f} s)   peak RSS "
              f"{memory[which]:8.0f} MB")
    print(f"single-file load, Studio/diffusers speed: {seconds['diffusers'] / seconds['studio']:.3f} wall, "
          f"{cpu['diffusers'] / cpu['studio']:.3f} CPU time (>= 0.97 wanted); peak memory Studio - diffusers: "
          f"{memory['studio'] - memory['diffusers']:+.0f} MB")

if __name__ == "__main__":
    main()
