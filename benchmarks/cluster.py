"""The Ray executor (`studio run --executor ray`) against the local one, on a local Ray
cluster started once per cluster size (its start-up is reported, never counted in a run).

    python benchmarks/cluster.py [--only dispatch sweep throughput scaling] [--json FILE]
    python benchmarks/cluster.py --scale small    # a quick check of the script (about a minute)
    python benchmarks/cluster.py --only dispatch --worker-env OMP_WAIT_POLICY=ACTIVE

JSON goes to benchmarks/results/cluster.json (cluster-small.json for --scale small);
`--worker-env` sets environment variables in the workers (the clusters' runtime_env; the
workers set OMP_WAIT_POLICY=PASSIVE themselves unless it is set there).
Each row records the machine's load average: on a shared machine, judge noise by it.

Two kinds of Ray run, both `studio.api.run(..., executor="ray")`, items always recomputed
(use_cache=False):
- stock:         the default: workers outlive the run (detached actors named in the Ray
                 namespace "studio", idle for up to 300 s), so a run after the first
                 finds them with their models loaded. Timed runs here always follow a run
                 that started them.
- fresh workers: keep_workers=0: the run stops its workers at its end, so every run
                 starts its workers and loads its models again (what every run paid before
                 workers were kept). A keep_workers=0 run also adopts, and then stops,
                 workers that earlier runs kept: stop_workers() comes first.
Between groups, and before a cluster is reused, the kept workers are stopped
(stop_workers) so that they never hold CPUs a later run needs; a cluster of another size
is a new one (ray.shutdown ends the old cluster's workers).

Groups (each a table; `--only` picks groups):
- dispatch:   the same pipeline with the local executor (a warm Runtime: models cached)
              and on a 2-CPU cluster: a fake.sleep sweep (seconds: 0, batches of 8) and
              the embedded image.diffusion (a seed sweep, few steps, batches of 16). Rows:
              cold (the pipeline's first Ray run, no worker running; for the first
              pipeline also the driver's first use of the fresh cluster), stock (later
              runs, the cold run's workers kept: the headline figure) and fresh workers,
              in that order (local and Ray in turn, medians). Ratio = ray / local;
              per-batch overhead = (ray - local) / batches; the kept workers' memory
              (RSS and PSS) on the stock row.
- throughput: a CPU-bound sweep (fake.sleep busy: true) on 1 and on 2 CPUs: a fresh-
              workers run on the new cluster, then a stock run to start the workers and
              the timed stock run.
- scaling:    fake.sleep (sleeping, so a 2-core machine can simulate many workers) on
              clusters of 1, 2, 4 ... 32 logical CPUs, the same items per worker (n
              workers get n times the items), runs as in throughput. Efficiency =
              T1 / (n x Tn), T1 being one worker's time for all n x the items, i.e. n x
              the 1-worker run's time (its items are one worker's share): so efficiency =
              T(1 worker) / Tn, 1.0 perfect. Model loads counted from the manifest
              (distinct `loaded_in` pids: one per worker in a fresh-workers run; loads
              stamped during a stock run: none); the kept workers' memory (RSS and PSS).
- sweep:      a 1,000-item sweep end to end (3 stock runs, then a fresh-workers one), the
              driver's resident memory sampled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent

SCALES = {
    "real": {"repeats": 3, "sleep_items": 64, "diffusion": {"seeds": 32, "steps": 10},
             "throughput": {"items": 32, "seconds": 0.5},
             "scaling": {"workers": (1, 2, 4, 8, 16, 32), "per_worker": 16, "seconds": 0.5},
             "sweep": {"items": 1000, "seconds": 0.0}},
    "small": {"repeats": 1, "sleep_items": 16, "diffusion": {"seeds": 8, "steps": 2},
              "throughput": {"items": 16, "seconds": 0.05},
              "scaling": {"workers": (1, 2, 4), "per_worker": 8, "seconds": 0.05},
              "sweep": {"items": 100, "seconds": 0.0}},
}
GROUPS = ["dispatch", "sweep", "throughput", "scaling"]  # scaling last: 32 workers load the machine


# --- memory ---------------------------------------------------------------------------


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (VmRSS), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int | str = "self") -> float:
    """Proportional set size (shared pages divided among the processes sharing them), MB:
    what a process adds to the machine's memory, unlike RSS, which counts shared
    libraries in every process."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def used_mb() -> float:
    """The machine's memory in use (MemTotal - MemAvailable), MB."""
    info = {line.split(":")[0]: int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()}
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


class RssSampler:
    """The driver's RSS every `every` seconds on a thread, with the time of each sample."""

    def __init__(self, every: float = 0.02):
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        began = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - began, rss_mb()))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.samples[-1][0] if self.samples else 0.0, rss_mb()))

    def at(self, fraction: float) -> float:
        """The sample nearest to this fraction of the run."""
        end = self.samples[-1][0]
        return min(self.samples, key=lambda s: abs(s[0] - fraction * end))[1]


# --- the cluster ----------------------------------------------------------------------

NAMESPACE = "studio"  # where the executor names its kept workers (studio.execute.cluster.NAMESPACE)


def named_workers() -> list[str]:
    """The names of the Studio workers alive on the cluster (kept by earlier runs)."""
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith("worker/")]


def worker_pids() -> dict[str, int]:
    """The kept workers' process ids, by name."""
    import ray

    refs = {}
    for name in named_workers():
        try:
            refs[name] = ray.get_actor(name, namespace=NAMESPACE).__ray_call__.remote(lambda self: os.getpid())
        except ValueError:  # it has just stopped
            continue
    return dict(zip(refs, ray.get(list(refs.values()))))


def stop_workers(timeout_s: float = 30.0) -> int:
    """Stop every Studio worker kept on the cluster and wait until they are gone and their
    CPUs free again; how many there were."""
    import ray

    if not ray.is_initialized():
        return 0
    names = named_workers()
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            continue
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (
            set(named_workers()) & set(names)
            or ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0)):
        time.sleep(0.1)
    return len(names)


class Cluster:
    """One local Ray cluster at a time in this process, started with `num_cpus` logical
    CPUs (workers); start-up timed. A cluster this process already had (a test's) is
    used as it is when its size is right, and never shut down here (only the workers
    kept on it are stopped)."""

    def __init__(self, worker_env: dict[str, str] | None = None) -> None:
        self.cpus: int | None = None
        self.owned = False
        self.startup_s = 0.0
        self.worker_env = worker_env or {}

    def ensure(self, cpus: int) -> float:
        """A cluster of `cpus` CPUs with no worker kept on it; the seconds its start took
        (0.0 when it was running)."""
        import ray

        if ray.is_initialized():
            if int(ray.cluster_resources().get("CPU", 0)) == cpus:
                stop_workers()  # an earlier group's: they would hold the CPUs
                self.cpus = cpus
                return 0.0
            if not self.owned:
                raise RuntimeError(f"a Ray cluster of another size runs in this process; {cpus} CPUs are needed")
        self.stop()
        began = time.perf_counter()
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", runtime_env={"env_vars": self.worker_env} if self.worker_env else None)
        self.startup_s = time.perf_counter() - began
        self.cpus, self.owned = cpus, True
        return self.startup_s

    def stop(self) -> None:
        """Shut down the cluster this script started (its kept workers end with it); on
        one it did not start, stop the kept workers only."""
        import ray

        if ray.is_initialized():
            if self.owned:
                ray.shutdown()
                time.sleep(1.0)  # let the old workers' processes exit before anything is timed
            else:
                stop_workers()
        self.cpus, self.owned = None, False


# --- the runs -------------------------------------------------------------------------


def manifest_items(result) -> list[dict]:
    manifest = json.loads(result.manifest_path.read_text())
    return [i for s in manifest["steps"].values() for i in s["items"]]


def check(result) -> list[dict]:
    assert result.status == "done", [(i.name, i.error) for i in result.failed]
    return manifest_items(result)


def startup_of(items: list[dict]) -> float:
    """The longest wait of a batch for its worker: a new worker's first batch waits for
    the actor's process to start and load the plugins (queue_s), later ones (and a kept
    worker's) only for the trip."""
    return max((i["worker"]["queue_s"] for i in items if "worker" in i), default=0.0)


def pids_of(items: list[dict]) -> set[int]:
    return {i["worker"]["pid"] for i in items}


def memory_of(pids: list[int]) -> dict[str, Any]:
    return {"workers": len(pids), "rss_mb": [round(rss_mb(p)) for p in pids],
            "pss_mb": [round(pss_mb(p)) for p in pids]}


class Bench:
    def __init__(self, args, tmp: Path):
        from studio.execute.runtime import Runtime
        from studio.testing import ClusterFakes, make_host

        self.args, self.tmp = args, tmp
        self.sizes = SCALES[args.scale]
        self.repeats = args.repeats or self.sizes["repeats"]
        self.host = make_host([("cluster", ClusterFakes())])
        self.runtime = Runtime("cpu", "fp32")  # the local runs' warm model cache
        self.cluster = Cluster(dict(v.split("=", 1) for v in args.worker_env or []))
        self.rows: list[dict] = []
        self.count = 0

    def pipeline(self, steps: list[dict]) -> Path:
        self.count += 1
        path = self.tmp / f"p{self.count}.yaml"
        path.write_text(json.dumps({"name": "bench", "device": "cpu", "steps": steps}))
        return path

    def local(self, path: Path):
        from studio import api

        return api.run(path, out=self.tmp / "runs", host=self.host, use_cache=False, runtime=self.runtime)

    def ray(self, path: Path):
        """Stock: the workers are kept for the next run (and this run adopts kept ones)."""
        from studio import api

        return api.run(path, out=self.tmp / "runs", host=self.host, use_cache=False, executor="ray")

    def fresh(self, path: Path):
        """Fresh workers: keep_workers=0, the workers stopped at the run's end."""
        from studio import api

        return api.run(path, out=self.tmp / "runs", host=self.host, use_cache=False, executor="ray",
                       keep_workers=0)

    def timed(self, fn: Callable, path: Path) -> tuple[float, list[dict]]:
        began = time.perf_counter()
        result = fn(path)
        seconds = time.perf_counter() - began
        return seconds, check(result)

    def row(self, group: str, name: str, **values) -> None:
        values["load_average"] = round(os.getloadavg()[0], 2)  # this machine may be shared: judge noise by it
        self.rows.append({"group": group, "row": name, **values})
        print(f"[{group}] {name}: " + "  ".join(f"{k} {v}" for k, v in values.items()), flush=True)

    # -- dispatch overhead --------------------------------------------------------

    def dispatch(self) -> None:
        started = self.cluster.ensure(2)
        self.row("dispatch", "cluster start-up (ray.init, 2 CPUs)", seconds=round(started or self.cluster.startup_s, 2))
        n = self.sizes["sleep_items"]
        sleep = self.pipeline([{"id": "s", "uses": "fake.sleep", "with": {"seconds": 0},
                                "sweep": {"seed": list(range(n))}}])
        self._dispatch(f"fake.sleep seconds 0, {n} items", sleep, -(-n // 8))
        d = self.sizes["diffusion"]
        diffusion = self.pipeline([{"id": "d", "uses": "image.diffusion", "with": {"steps": d["steps"]},
                                    "sweep": {"seed": list(range(d["seeds"]))}}])
        self._dispatch(f"image.diffusion {d['steps']} steps, {d['seeds']} seeds", diffusion, -(-d["seeds"] // 16))

    def _dispatch(self, name: str, path: Path, batches: int) -> None:
        """Cold: the first Ray run of this pipeline, no worker kept (its workers started,
        models loaded, and kept); then local and stock in turn (the kept workers adopted);
        then, the kept workers stopped, local and fresh workers in turn; medians."""
        stop_workers()  # the previous pipeline's: its generator's workers are no use here
        cold, items = self.timed(self.ray, path)
        cold_startup = startup_of(items)
        self.local(path)  # warm-up: the local model cache
        times: dict[str, list[float]] = {"local": [], "stock": [], "fresh": []}
        startups: dict[str, list[float]] = {"stock": [], "fresh": []}
        pids: dict[str, set[int]] = {"cold": pids_of(items), "stock": set(), "fresh": set()}

        def turns(mode: str, fn: Callable) -> None:
            for _ in range(self.repeats):
                for key, run in (("local", self.local), (mode, fn)):
                    seconds, items = self.timed(run, path)
                    times[key].append(seconds)
                    if key == mode:
                        startups[mode].append(startup_of(items))
                        pids[mode] |= pids_of(items)

        turns("stock", self.ray)
        memory = memory_of(list(worker_pids().values()))  # the kept workers, after the stock runs
        stop_workers()  # else the first fresh run would adopt them (and then stop them)
        turns("fresh", self.fresh)
        local = statistics.median(times["local"])

        def figures(seconds: float) -> dict[str, float]:
            return {"seconds": round(seconds, 3), "ratio": round(seconds / local, 2),
                    "per_batch_ms": round((seconds - local) / batches * 1000, 1)}

        common = {"batches": batches, "local_s": round(local, 3)}
        self.row("dispatch", f"{name}: cold", mode="cold", **common, **figures(cold),
                 worker_startup_s=round(cold_startup, 3), workers=len(pids["cold"]))
        stock = statistics.median(times["stock"])
        self.row("dispatch", f"{name}: stock", mode="stock", **common, **figures(stock),
                 worker_startup_s=round(statistics.median(startups["stock"]), 3),
                 workers=len(pids["stock"]), same_workers_as_cold=pids["stock"] == pids["cold"],
                 target="ratio <= 1.10, per batch < 20 ms", worker_memory=memory,
                 times={k: [round(t, 3) for t in times[k]] for k in ("local", "stock")})
        fresh = statistics.median(times["fresh"])
        self.row("dispatch", f"{name}: fresh workers", mode="fresh workers", **common, **figures(fresh),
                 worker_startup_s=round(statistics.median(startups["fresh"]), 3), workers=len(pids["fresh"]),
                 times={k: [round(t, 3) for t in times[k]] for k in ("local", "fresh")})

    # -- the kept-worker runs of throughput and scaling ----------------------------

    @staticmethod
    def driver_imports() -> None:
        """What the driver imports on its first Ray run (torch, about 1 s; Ray), out of the
        way before a group whose first run is timed (with --only, it may be the first)."""
        import importlib

        for module in ("torch", "studio.execute.cluster"):
            importlib.import_module(module)

    def _fresh_then_stock(self, path: Path) -> dict[str, Any]:
        """On a new cluster: a fresh-workers run (it starts its workers and stops them),
        a stock run that starts the workers and keeps them, the timed stock run; the kept
        workers' pids and memory, and the machine's memory with them; then they are
        stopped."""
        fresh_s, fresh_items = self.timed(self.fresh, path)
        stop_workers()  # none kept: waits until the CPUs of the workers it stopped are free
        first_s, _ = self.timed(self.ray, path)  # starts the workers that the timed run finds
        with_workers_mb = used_mb()
        began = time.time()
        stock_s, stock_items = self.timed(self.ray, path)
        kept = list(worker_pids().values())
        found = {"fresh_s": fresh_s, "fresh_items": fresh_items, "first_s": first_s, "stock_s": stock_s,
                 "stock_items": stock_items, "kept": kept, "memory": memory_of(kept),
                 "with_workers_mb": with_workers_mb,
                 # models loaded during the timed stock run (none: the kept workers have theirs)
                 "stock_new_loads": len({(i["notes"]["loaded_in"], i["notes"]["loaded_at"]) for i in stock_items
                                         if i["notes"]["loaded_at"] >= began})}
        stop_workers()
        return found

    # -- throughput, 1 vs 2 CPUs ---------------------------------------------------

    def throughput(self) -> None:
        t = self.sizes["throughput"]
        path = self.pipeline([{"id": "b", "uses": "fake.sleep", "with": {"seconds": t["seconds"], "busy": True},
                               "sweep": {"seed": list(range(t["items"]))}}])
        work = t["items"] * t["seconds"]
        found: dict[int, dict] = {}
        self.driver_imports()
        for cpus in (1, 2):
            started = self.cluster.ensure(cpus)
            f = found[cpus] = self._fresh_then_stock(path)
            self.row("throughput", f"{cpus} CPU worker(s), {t['items']} items x {t['seconds']} s busy "
                     f"({work:g} CPU-s)", cluster_startup_s=round(started, 2),
                     stock_s=round(f["stock_s"], 2), items_per_s=round(t["items"] / f["stock_s"], 2),
                     workers=len(pids_of(f["stock_items"])), stock_first_s=round(f["first_s"], 2),
                     fresh_s=round(f["fresh_s"], 2), fresh_items_per_s=round(t["items"] / f["fresh_s"], 2),
                     fresh_worker_startup_s=round(startup_of(f["fresh_items"]), 2),
                     fresh_workers=len(pids_of(f["fresh_items"])))
        self.row("throughput", "2 CPUs vs 1", speedup=round(found[1]["stock_s"] / found[2]["stock_s"], 2),
                 speedup_fresh_workers=round(found[1]["fresh_s"] / found[2]["fresh_s"], 2), target=">= 1.7")

    # -- scaling, simulated --------------------------------------------------------

    def scaling(self) -> None:
        s = self.sizes["scaling"]
        base: dict[str, float] = {}
        self.driver_imports()
        for n in s["workers"]:
            self.cluster.stop()
            idle_mb = used_mb()
            started = self.cluster.ensure(n)
            cluster_mb = used_mb()
            items_n = n * s["per_worker"]
            path = self.pipeline([{"id": "z", "uses": "fake.sleep", "with": {"seconds": s["seconds"]},
                                   "sweep": {"seed": list(range(items_n))}}])
            f = self._fresh_then_stock(path)
            fresh_items, stock_items = f["fresh_items"], f["stock_items"]
            workers = pids_of(fresh_items)
            loads = {i["notes"]["loaded_in"] for i in fresh_items}
            assert all(i["notes"]["loaded_in"] == i["worker"]["pid"] for i in fresh_items + stock_items)
            if n == s["workers"][0]:
                base = {"stock": f["stock_s"], "fresh": f["fresh_s"]}  # T1: one worker's share of the items
            rss, pss = f["memory"]["rss_mb"], f["memory"]["pss_mb"]
            self.row("scaling", f"{n} workers, {items_n} items x {s['seconds']} s", cluster_startup_s=round(started, 2),
                     ideal_s=round(s["per_worker"] * s["seconds"], 2), stock_s=round(f["stock_s"], 2),
                     efficiency=round(base["stock"] / f["stock_s"], 3),
                     stock_worker_startup_s=round(startup_of(stock_items), 2), stock_first_s=round(f["first_s"], 2),
                     fresh_s=round(f["fresh_s"], 2), efficiency_fresh=round(base["fresh"] / f["fresh_s"], 3),
                     fresh_worker_startup_s=round(startup_of(fresh_items), 2),
                     workers_used=len(workers), model_loads=len(loads), loads_ok=len(loads) == len(workers) == n,
                     stock_workers_used=len(pids_of(stock_items)), stock_model_loads=f["stock_new_loads"],
                     stock_used_kept_workers=pids_of(stock_items) <= set(f["kept"]),
                     worker_rss_mb=round(statistics.mean(rss)) if rss else None,
                     worker_pss_mb=round(statistics.mean(pss)) if pss else None, kept_workers=len(f["kept"]),
                     machine_used_mb={"no cluster": round(idle_mb), "cluster": round(cluster_mb),
                                      "with workers": round(f["with_workers_mb"])},
                     target="efficiency >= 0.9 at 32; loads = workers")

    # -- a 1,000-item sweep --------------------------------------------------------

    def sweep(self) -> None:
        s = self.sizes["sweep"]
        self.cluster.ensure(2)
        small = self.pipeline([{"id": "w", "uses": "fake.sleep", "with": {"seconds": 0},
                                "sweep": {"seed": list(range(16))}}])
        # imports and first-run costs out of the way; the stock run starts the workers
        # that the stock runs below find
        self.ray(small), self.local(small)
        path = self.pipeline([{"id": "w", "uses": "fake.sleep", "with": {"seconds": s["seconds"]},
                               "sweep": {"seed": list(range(s["items"]))}}])
        local_s, _ = self.timed(self.local, path)
        for name, fn in (("stock 1", self.ray), ("stock 2", self.ray), ("stock 3", self.ray),
                         ("fresh workers", self.fresh)):
            if fn == self.fresh:
                stop_workers()  # else it would adopt the kept workers
            before = rss_mb()
            with RssSampler() as rss:
                seconds, items = self.timed(fn, path)
            peak = max(r for _, r in rss.samples)
            self.row("sweep", f"{name}: {s['items']} items fake.sleep seconds {s['seconds']}",
                     seconds=round(seconds, 2), items_per_s=round(s["items"] / seconds, 1), local_s=round(local_s, 2),
                     local_items_per_s=round(s["items"] / local_s, 1), batches=-(-s["items"] // 8),
                     workers=len(pids_of(items)), worker_startup_s=round(startup_of(items), 3),
                     driver_rss_mb={"before": round(before, 1), "start": round(rss.at(0.0), 1),
                                    "middle": round(rss.at(0.5), 1), "end": round(rss.at(1.0), 1),
                                    "peak": round(peak, 1)}, samples=len(rss.samples))
        stop_workers()


SUMMARY = {  # the columns of each group's table at the end
    "dispatch": ["batches", "local_s", "seconds", "ratio", "per_batch_ms", "worker_startup_s", "workers"],
    "sweep": ["seconds", "items_per_s", "local_s", "workers", "worker_startup_s"],
    "throughput": ["stock_s", "items_per_s", "workers", "fresh_s", "speedup", "speedup_fresh_workers"],
    "scaling": ["stock_s", "efficiency", "fresh_s", "efficiency_fresh", "fresh_worker_startup_s", "model_loads",
                "stock_model_loads", "worker_pss_mb"],
}


def print_tables(rows: list[dict]) -> None:
    for group, columns in SUMMARY.items():
        mine = [r for r in rows if r["group"] == group]
        if not mine:
            continue
        print(f"\n| {group} | " + " | ".join(columns) + " |\n| --- |" + " --- |" * len(columns))
        for r in mine:
            print(f"| {r['row']} | " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
        if group == "sweep":
            print("driver RSS MB: " + "; ".join(f"{r['row'].split(':')[0]} {r['driver_rss_mb']}" for r in mine))


def write_json(path: Path, rows: list[dict], **extra) -> None:
    import ray

    path.parent.mkdir(parents=True, exist_ok=True)
    meminfo = Path("/proc/meminfo").read_text().split()
    path.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{int(meminfo[1]) // 1024 ** 2} GB", "ray": ray.__version__, "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(), **extra, "rows": rows}, indent=1))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="real", choices=sorted(SCALES))
    parser.add_argument("--only", nargs="*", choices=GROUPS)
    parser.add_argument("--repeats", type=int, help="timed runs per dispatch row (default: 3, small: 1)")
    parser.add_argument("--worker-env", nargs="*", metavar="KEY=VALUE",
                        help="environment variables for the Ray workers (the runtime_env of the clusters started here)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    groups = args.only or GROUPS
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args, Path(tmp))
        try:
            for group in groups:
                began = time.perf_counter()
                getattr(bench, group)()
                print(f"[{group}] done in {time.perf_counter() - began:.0f} s", flush=True)
        finally:
            bench.cluster.stop()
        print_tables(bench.rows)
        name = "cluster.json" if args.scale == "real" else f"cluster-{args.scale}.json"
        write_json(args.json or ROOT / "benchmarks" / "results" / name, bench.rows, scale=args.scale,
                   groups=groups, worker_env=bench.cluster.worker_env)


if __name__ == "__main__":
    sys.exit(main())
