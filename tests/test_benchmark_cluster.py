"""benchmarks/cluster.py still runs: its sweep group at a small size on the shared
local cluster (a few seconds). What it measures is never asserted here, only that the
rows are whole and the kept workers are gone afterwards."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "cluster.py"


def load_script():
    spec = importlib.util.spec_from_file_location("studio_benchmark_cluster", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cluster_benchmark_runs_its_sweep_and_leaves_no_worker_behind(tmp_path, ray_cluster, monkeypatch):
    import studio.cluster

    bench_module = load_script()
    monkeypatch.setitem(bench_module.SCALES["small"], "sweep", {"items": 24, "seconds": 0.0})
    args = argparse.Namespace(scale="small", repeats=1, only=["sweep"], worker_env=None, json=None)
    bench = bench_module.Bench(args, tmp_path)
    real_import_ray = studio.cluster.import_ray
    try:
        bench.sweep()
    finally:
        bench_module.KeepWorkers.release()
        bench.cluster.stop()  # the shared cluster is not this benchmark's: it stays up
    import ray

    assert ray.is_initialized()  # the fixture's cluster, used and left running
    assert studio.cluster.import_ray is real_import_ray
    assert not bench_module.KeepWorkers.idle
    assert [r["row"].split(":")[0] for r in bench.rows] == ["ray 1", "ray 2", "ray 3", "warm workers"]
    for row in bench.rows:
        assert row["batches"] == 3 and 1 <= row["workers"] <= 2
        assert set(row["driver_rss_mb"]) == {"before", "start", "middle", "end", "peak"}
        assert row["seconds"] > 0 and row["items_per_s"] > 0
