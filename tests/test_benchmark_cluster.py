"""benchmarks/cluster.py still runs: its sweep group at a small size on the shared
local cluster (a few seconds). What it measures is never asserted here, only that the
rows are whole, that no Studio worker it kept is left afterwards, and that the shared
cluster is still up."""

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
    import ray

    bench_module = load_script()
    monkeypatch.setitem(bench_module.SCALES["small"], "sweep", {"items": 24, "seconds": 0.0})
    args = argparse.Namespace(scale="small", repeats=1, only=["sweep"], worker_env=None, json=None)
    bench = bench_module.Bench(args, tmp_path)
    kept = []
    real_stop = bench_module.stop_workers

    def stop_and_record(*a, **k):  # which workers the benchmark's runs kept
        kept.extend(bench_module.named_workers())
        return real_stop(*a, **k)

    monkeypatch.setattr(bench_module, "stop_workers", stop_and_record)
    try:
        bench.sweep()
    finally:
        bench.cluster.stop()  # the shared cluster is not this benchmark's: only its workers stop

    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == ray_cluster["CPU"]  # the fixture's, still up
    assert kept, "the stock runs kept no worker"
    assert not set(bench_module.named_workers()) & set(kept)
    assert not bench_module.named_workers()
    assert [r["row"].split(":")[0] for r in bench.rows] == ["stock 1", "stock 2", "stock 3", "fresh workers"]
    for row in bench.rows:
        assert row["batches"] == 3 and 1 <= row["workers"] <= 2
        assert set(row["driver_rss_mb"]) == {"before", "start", "middle", "end", "peak"}
        assert row["seconds"] > 0 and row["items_per_s"] > 0
