"""Run history at scale: `studio runs list` over N runs, and the disk hard links save.

    python benchmarks/history.py [--runs 1000]

Makes one real run of a 16-item pipeline with the fake generators, then N-1 copies of
its manifest under other run ids (a long history), and times in fresh processes:
- the first `studio runs list` (no index: every manifest read, the index built),
- the next one (the index up to date: only stamps compared),
- the same after one new run (one manifest read).
Then runs the pipeline again, fully cached, and compares the disk the second run takes
with what copying its files would have taken.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from studio.runs.history import disk_usage

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = """
name: history
seed: 1
steps:
  - id: pic
    uses: image.title
    with: {width: 512, height: 512}
    sweep: {text: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p]}
"""


def studio(*args: str, cwd: Path) -> float:
    began = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("studio")), *args], cwd=cwd, check=True,
                   capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "p.yaml").write_text(PIPELINE)
        studio("run", "p.yaml", "--quiet", cwd=work)
        first = next(p for p in (work / "runs" / "history").iterdir() if not p.is_symlink())
        manifest = (first / "manifest.json").read_bytes()
        for n in range(args.runs - 1):
            copy = first.parent / f"20200101-{n:06d}-copy"
            copy.mkdir()
            (copy / "manifest.json").write_bytes(manifest)
        build = studio("runs", "list", "--limit", "20", cwd=work)
        warm = min(studio("runs", "list", "--limit", "20", cwd=work) for _ in range(3))
        studio("run", "p.yaml", "--quiet", cwd=work)  # fully cached
        after_new = studio("runs", "list", "--limit", "20", cwd=work)
        second = max(p for p in (work / "runs" / "history").iterdir() if not p.is_symlink())
        own, shared = disk_usage(second)
        first_own, first_shared = disk_usage(first)
        print(f"runs listed: {args.runs + 1}")
        print(f"studio runs list, no index (builds it): {build:.2f} s")
        print(f"studio runs list, index up to date: {warm:.2f} s")
        print(f"studio runs list after one new run: {after_new:.2f} s")
        print(f"first run: {first_own + first_shared} bytes on disk ({first_shared} shared with the cache)")
        print(f"cached re-run: {own} bytes of its own, {shared} shared by hard links "
              f"(a copy would have taken {own + shared})")


if __name__ == "__main__":
    main()
