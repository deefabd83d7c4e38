"""`studio models list` over a model folder of 200 files: the first listing (every file
hashed) and a cached one (hashes remembered by path, size and mtime), as a user runs it
(`studio` in a subprocess, its start-up included), and the scan alone in this process.

    python benchmarks/models_list.py [--files 200] [--mb 4] [--repeat 3]

The files are small safetensors headers padded to --mb megabytes each (real checkpoints
are 2-7 GB: the first listing's hashing grows with the bytes, at the disk's or sha256's
speed, about 1 GB/s here; the cached listing does not). Spread over an A1111 tree:
checkpoints, LoRAs (in sub-folders), embeddings and VAEs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIND_FOLDERS = ("Stable-diffusion", "Lora", "VAE", "../embeddings")


def build(root: Path, files: int, mb: float) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [int(mb * 2**18)], "data_offsets": [0, int(mb * 2**18) * 4]}})
    blob = struct.pack("<Q", len(header)) + header.encode()
    padding = b"\1" * (int(mb * 2**18) * 4)
    for n in range(files):
        folder = root / "models" / KIND_FOLDERS[n % len(KIND_FOLDERS)] / f"set{n % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"model_{n:04d}.safetensors").write_bytes(blob + padding)


def listing(root: Path, cache: Path) -> float:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "studio", "models", "list", "--json", "--models", str(root)],
                          env=env, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - began
    assert len(json.loads(done.stdout)) > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from studio.models.library import ModelLibrary

    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "webui", Path(tmp) / "cache"
        build(root, args.files, args.mb)
        began = time.perf_counter()
        found = len(ModelLibrary.from_dirs([root]).all())
        scan = time.perf_counter() - began
        first, cached = [], []
        for _ in range(args.repeat):
            for leftover in cache.glob("studio/*"):
                leftover.unlink()
            first.append(listing(root, cache))
            cached.append(listing(root, cache))
        startup = statistics.median(
            _time([sys.executable, "-m", "studio", "--version"]) for _ in range(args.repeat))
    total_mb = args.files * args.mb
    print(f"{found} models, {total_mb:.0f} MB in all; load average {os.getloadavg()[0]:.2f}")
    print(f"scan alone (in process):         {scan * 1000:8.1f} ms")
    print(f"studio --version (start-up):     {startup * 1000:8.1f} ms")
    print(f"studio models list, first:       {statistics.median(first) * 1000:8.1f} ms  (median of {args.repeat})")
    print(f"studio models list, cached:      {statistics.median(cached) * 1000:8.1f} ms  (median of {args.repeat})")


def _time(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
