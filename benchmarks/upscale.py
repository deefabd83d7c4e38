"""image.upscale against spandrel's model called by hand, on the CPU.

    python benchmarks/upscale.py [--size 128] [--repeat 3] [--memory-size 256]

Speed: a 4x ESRGAN at the size model sites ship (RRDBNet, 64 filters, 23 blocks, 16.7M
parameters) with random weights, saved as .safetensors; one PNG of --size pixels a side.
Raw is what a script would write: the image read with PIL, the whole image through
spandrel's ImageModelDescriptor, the result saved as PNG. Studio runs the one-step
pipeline (tile 0: the whole image, as raw) with a warm runtime, so both sides have the
model loaded; they run in turn, medians of --repeat after a warm-up, wall and CPU time.
Ratio = raw / Studio.

Memory: a 4x ESRGAN with the real one's layer widths and 2 blocks (its peak is the
64-channel maps at 4x, the same in both) on a --memory-size image, whole and tiled (128
and 64 pixel tiles),
each in a fresh process: its peak resident memory (VmHWM, reset after loading through
/proc/self/clear_refs) less its resident memory then, so the figure is what inference holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def esrgan(path: Path) -> int:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return sum(p.numel() for p in net.parameters())


def shallow_esrgan(path: Path) -> None:
    """A 4x ESRGAN with the real one's layer widths (64 filters: the feature maps at 2x
    and 4x that dominate its memory) but 2 blocks instead of 23, so it runs in seconds."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=2, scale=4)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


def picture(path: Path, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def speed(tmp: Path, size: int, repeat: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from spandrel import ModelLoader

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import StudioRunner, paired_times

    model, image = tmp / "4x_esrgan.safetensors", tmp / "in.png"
    parameters = esrgan(model)
    picture(image, size)
    descriptor = ModelLoader().load_from_state_dict(load_file(str(model))).eval()

    def raw():
        array = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0
        with torch.inference_mode():
            out = descriptor(torch.from_numpy(array.transpose(2, 0, 1).copy())[None])
        pixels = (out[0].clamp(0, 1) * 255).round().byte().numpy().transpose(1, 2, 0)
        Image.fromarray(pixels).save(tmp / "raw.png")

    runner = StudioRunner(tmp)
    step = [{"id": "up", "uses": "image.upscale", "with": {"image": str(image), "model": str(model), "tile": 0}}]
    cpu: dict[str, list[float]] = {"raw": [], "studio": []}

    def timed(name, fn):  # CPU seconds too: the steadier figure on a shared machine
        def call():
            began = time.process_time()
            fn()
            cpu[name].append(time.process_time() - began)
        return call

    raw_s, studio_s = paired_times(timed("raw", raw), timed("studio", lambda: runner(step)), repeat)
    raw_cpu, studio_cpu = (statistics.median(cpu[name][1:]) for name in ("raw", "studio"))  # [0]: the warm-up
    return {"row": f"4x ESRGAN RRDBNet 64nf 23nb ({parameters / 1e6:.1f}M), {size}x{size} -> {4 * size}x{4 * size}",
            "raw_s": raw_s, "studio_s": studio_s, "ratio": raw_s / studio_s,
            "raw_cpu_s": raw_cpu, "studio_cpu_s": studio_cpu, "cpu_ratio": raw_cpu / studio_cpu}


def child(model: str, image: str, tile: int) -> None:
    """One upscale in this fresh process: peak memory above what loading left."""
    from studio.testing import make_artifact, make_context
    from studio_upscale.upscale import ImageUpscale

    gen, ctx = ImageUpscale(), make_context()
    params = ImageUpscale.Params(image=make_artifact(image), model=model, tile=tile)
    ctx.model(gen, params)  # loaded before the baseline
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak (VmHWM) starts again from here
    loaded = _status_mb("VmHWM")
    began = time.perf_counter()
    out = gen.generate(params, ctx)["image"]
    seconds = time.perf_counter() - began
    peak = _status_mb("VmHWM")
    print(json.dumps({"tile": tile, "seconds": seconds, "loaded_mb": loaded, "peak_mb": peak,
                      "inference_mb": peak - loaded, "size": list(out.size)}))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory(tmp: Path, size: int) -> list[dict]:
    model, image = tmp / "4x_esrgan_2nb.safetensors", tmp / "big.png"
    shallow_esrgan(model)
    picture(image, size)
    rows = []
    for tile in (0, 128, 64):
        done = subprocess.run([sys.executable, __file__, "--child", str(model), str(image), str(tile)],
                              capture_output=True, text=True, cwd=ROOT, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-size", type=int, default=256)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        result = {"speed": speed(Path(tmp), args.size, args.repeat), "memory": memory(Path(tmp), args.memory_size)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
