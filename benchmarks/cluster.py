"""The Ray executor (`studio run --executor ray`) against the local one, on a local Ray
cluster started once per cluster size (its start-up is reported, never counted in a run).

    python benchmarks/cluster.py [--only dispatch sweep throughput scaling] [--json FILE]
    python benchmarks/cluster.py --scale small    # a quick check of the script (about 90 s)
    python benchmarks/cluster.py --only dispatch --worker-env OMP_WAIT_POLICY=PASSIVE

JSON goes to benchmarks/results/cluster.json (cluster-small.json for --scale small);
`--worker-env` sets environment variables in the workers (the clusters' runtime_env).
Each row records the machine's load average: on a shared machine, judge noise by it.

Groups (each a table; `--only` picks groups):
- dispatch:   the same pipeline with the local executor (a warm Runtime: models cached)
              and on a 2-CPU cluster: a fake.sleep sweep (seconds: 0, batches of 8) and
              the embedded image.diffusion (a seed sweep, few steps, batches of 16). Rows:
              ray cold (the first run on a fresh cluster), ray again (later runs, items
              recomputed: use_cache=False), and ray with warm workers (see KeepWorkers).
              Ratio = ray / local; per-batch overhead = (ray - local) / batches.
- throughput: a CPU-bound sweep (fake.sleep busy: true) on 1 and on 2 CPUs.
- scaling:    fake.sleep (sleeping, so a 2-core machine can simulate many workers) on
              clusters of 1, 2, 4 ... 32 logical CPUs, the same items per worker (n
              workers get n times the items). Efficiency = T1 / (n x Tn), T1 being one
              worker's time for all n x the items, i.e. n x the 1-worker run's time
              (its items are one worker's share): so efficiency = T(1 worker) / Tn, 1.0
              perfect. Model loads counted from the manifest (distinct `loaded_in` pids:
              one per worker); the workers' memory (RSS and PSS).
- sweep:      a 1,000-item sweep end to end, the driver's resident memory sampled.

Every Ray row is the stock executor (`studio.api.run(..., executor="ray")`) except those
marked "warm workers": `KeepWorkers` below is the same executor with one change, its
worker actors kept alive from one run to the next in this process (the stock executor
kills them at the end of every run, so each run starts its workers and loads its models
again). It measures what dispatching costs once that start-up is out of the way.
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


class Cluster:
    """One local Ray cluster at a time in this process, started with `num_cpus` logical
    CPUs (workers); start-up timed. A cluster this process already had (a test's) is
    used as it is when its size is right, and never shut down here."""

    def __init__(self, worker_env: dict[str, str] | None = None) -> None:
        self.cpus: int | None = None
        self.owned = False
        self.startup_s = 0.0
        self.worker_env = worker_env or {}

    def ensure(self, cpus: int) -> float:
        """A cluster of `cpus` CPUs; the seconds its start took (0.0 when it was running)."""
        import ray

        if ray.is_initialized():
            if int(ray.cluster_resources().get("CPU", 0)) == cpus:
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
        import ray

        KeepWorkers.release()
        if self.owned and ray.is_initialized():
            ray.shutdown()
            time.sleep(1.0)  # let the old workers' processes exit before anything is timed
        self.cpus, self.owned = None, False


def keep_workers_executor():
    """The executor class KeepWorkers runs, made on first use (it subclasses
    studio.cluster.RayExecutor, whose module imports Ray)."""
    import studio.cluster as cluster

    class _DeferKill:
        """Ray, with `kill` recording the actor instead of ending it."""

        def __init__(self, ray: Any, killed: list):
            self._ray, self._killed = ray, killed

        def kill(self, actor: Any, **_: Any) -> None:
            self._killed.append(actor)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ray, name)

    class KeepWorkersExecutor(cluster.RayExecutor):
        """The stock RayExecutor with its worker actors kept from one run to the next (in
        this process): a run takes an idle worker of the same kind and precision that an
        earlier run started, whose plugins and models are loaded, instead of starting
        one. Benchmark-only: this is a what-if for the stock executor, which kills its
        workers at the end of each run (RayExecutor._run_steps' `finally`)."""

        idle: dict[tuple[str, str], list] = KeepWorkers.idle

        def _new_actor(self, kind: str, precision: str) -> Any:
            stash = self.idle.setdefault((kind, precision), [])
            self._kinds = getattr(self, "_kinds", {})
            actor = stash.pop() if stash else super()._new_actor(kind, precision)
            self._kinds[id(actor)] = (kind, precision)
            return actor

        def _run_steps(self) -> None:
            killed: list = []
            real = cluster.import_ray
            cluster.import_ray = lambda: _DeferKill(real(), killed)
            try:
                super()._run_steps()
            finally:
                cluster.import_ray = real
                for actor in killed:  # every worker this run used, alive: for the next run
                    self.idle.setdefault(self._kinds[id(actor)], []).append(actor)

    return KeepWorkersExecutor


class KeepWorkers:
    """Runs with the "warm workers" what-if (see keep_workers_executor): the workers an
    earlier run started, by (kind, precision), and ending them (they hold the cluster's
    CPUs, so a stock run cannot start its own while they live)."""

    idle: dict[tuple[str, str], list] = {}
    cls = None

    @classmethod
    def run(cls, path: Path, host: Any, out: Path):
        from studio import api

        cls.cls = cls.cls or keep_workers_executor()
        pipeline = api.load(path, host=host)
        return cls.cls(host.registry, host.hooks, pipeline.plan(), recipe=host.recipe, out=out,
                       use_cache=False).run()

    @classmethod
    def release(cls) -> None:
        """End the kept workers (they hold the cluster's CPUs)."""
        import ray

        if not ray.is_initialized():
            cls.idle.clear()
            return
        for actor in [a for stash in cls.idle.values() for a in stash]:
            ray.kill(actor)
        cls.idle.clear()

    @classmethod
    def pids(cls) -> list[int]:
        """The kept workers' process ids."""
        import ray

        actors = [a for stash in cls.idle.values() for a in stash]
        return ray.get([a.__ray_call__.remote(lambda self: os.getpid()) for a in actors])


# --- the runs -------------------------------------------------------------------------


def manifest_items(result) -> list[dict]:
    manifest = json.loads(result.manifest_path.read_text())
    return [i for s in manifest["steps"].values() for i in s["items"]]


def check(result) -> list[dict]:
    assert result.status == "done", [(i.name, i.error) for i in result.failed]
    return manifest_items(result)


def startup_of(items: list[dict]) -> float:
    """The longest wait of a batch for its worker: a new worker's first batch waits for
    the actor's process to start and load the plugins (queue_s), later ones only for
    the trip."""
    return max((i["worker"]["queue_s"] for i in items if "worker" in i), default=0.0)


class Bench:
    def __init__(self, args, tmp: Path):
        from studio.runtime import Runtime
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
        from studio import api

        return api.run(path, out=self.tmp / "runs", host=self.host, use_cache=False, executor="ray")

    def warm(self, path: Path):
        return KeepWorkers.run(path, self.host, self.tmp / "runs")

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
        """Cold: the first Ray run of this pipeline on the cluster (new workers, models
        loaded); then local and ray in turn; then local and ray-with-warm-workers in turn
        (kept workers hold the cluster's CPUs, so the stock runs come first); medians."""
        cold, items = self.timed(self.ray, path)
        cold_startup = startup_of(items)
        self.local(path)  # warm-up: the local model cache
        times: dict[str, list[float]] = {"local": [], "ray": [], "warm": []}
        startups = []
        for _ in range(self.repeats):
            for key, fn in (("local", self.local), ("ray", self.ray)):
                seconds, items = self.timed(fn, path)
                times[key].append(seconds)
                if key == "ray":
                    startups.append(startup_of(items))
        self.warm(path)  # starts the workers that the next runs keep
        for _ in range(self.repeats):
            for key, fn in (("local", self.local), ("warm", self.warm)):
                seconds, items = self.timed(fn, path)
                times[key].append(seconds)
        pids = KeepWorkers.pids()
        memory = {"workers": len(pids), "rss_mb": [round(rss_mb(p)) for p in pids],
                  "pss_mb": [round(pss_mb(p)) for p in pids]}
        KeepWorkers.release()
        local, ray, warm = (statistics.median(times[k]) for k in ("local", "ray", "warm"))

        def per_batch(t: float) -> float:
            return round((t - local) / batches * 1000, 1)

        self.row("dispatch", name, batches=batches, local_s=round(local, 3),
                 ray_cold_s=round(cold, 3), ray_cold_ratio=round(cold / local, 2),
                 cold_worker_startup_s=round(cold_startup, 3),
                 ray_s=round(ray, 3), ray_ratio=round(ray / local, 2), ray_per_batch_ms=per_batch(ray),
                 ray_worker_startup_s=round(statistics.median(startups), 3),
                 warm_s=round(warm, 3), warm_ratio=round(warm / local, 2), warm_per_batch_ms=per_batch(warm),
                 target="ratio <= 1.10, per batch < 20 ms",
                 times={k: [round(t, 3) for t in v] for k, v in times.items()}, warm_worker_memory=memory)

    # -- throughput, 1 vs 2 CPUs ---------------------------------------------------

    def throughput(self) -> None:
        t = self.sizes["throughput"]
        path = self.pipeline([{"id": "b", "uses": "fake.sleep", "with": {"seconds": t["seconds"], "busy": True},
                               "sweep": {"seed": list(range(t["items"]))}}])
        work = t["items"] * t["seconds"]
        found: dict[int, dict] = {}
        for cpus in (1, 2):
            started = self.cluster.ensure(cpus)
            ray_s, items = self.timed(self.ray, path)
            self.warm(path)  # start and keep the workers
            warm_s, _ = self.timed(self.warm, path)
            KeepWorkers.release()
            found[cpus] = {"ray_s": ray_s, "warm_s": warm_s}
            self.row("throughput", f"{cpus} CPU worker(s), {t['items']} items x {t['seconds']} s busy "
                     f"({work:g} CPU-s)", cluster_startup_s=round(started, 2), ray_s=round(ray_s, 2),
                     worker_startup_s=round(startup_of(items), 2), workers=len({i["worker"]["pid"] for i in items}),
                     warm_s=round(warm_s, 2), items_per_s=round(t["items"] / ray_s, 2))
        self.row("throughput", "2 CPUs vs 1", speedup=round(found[1]["ray_s"] / found[2]["ray_s"], 2),
                 speedup_warm_workers=round(found[1]["warm_s"] / found[2]["warm_s"], 2), target=">= 1.7")

    # -- scaling, simulated --------------------------------------------------------

    def scaling(self) -> None:
        s = self.sizes["scaling"]
        base: dict[str, float] = {}
        for n in s["workers"]:
            self.cluster.stop()
            idle_mb = used_mb()
            started = self.cluster.ensure(n)
            cluster_mb = used_mb()
            items_n = n * s["per_worker"]
            path = self.pipeline([{"id": "z", "uses": "fake.sleep", "with": {"seconds": s["seconds"]},
                                   "sweep": {"seed": list(range(items_n))}}])
            ray_s, items = self.timed(self.ray, path)
            self.warm(path)  # starts n workers and keeps them
            with_workers_mb = used_mb()
            warm_s, warm_items = self.timed(self.warm, path)
            workers = {i["worker"]["pid"] for i in items}
            loads = {i["notes"]["loaded_in"] for i in items}
            assert all(i["notes"]["loaded_in"] == i["worker"]["pid"] for i in items + warm_items)
            pids = KeepWorkers.pids()
            rss = [rss_mb(p) for p in pids]
            pss = [pss_mb(p) for p in pids]
            KeepWorkers.release()
            if n == s["workers"][0]:
                base = {"ray": ray_s, "warm": warm_s}  # T1: one worker's share of the items
            self.row("scaling", f"{n} workers, {items_n} items x {s['seconds']} s", cluster_startup_s=round(started, 2),
                     ideal_s=round(s["per_worker"] * s["seconds"], 2), ray_s=round(ray_s, 2),
                     efficiency=round(base["ray"] / ray_s, 3), worker_startup_s=round(startup_of(items), 2),
                     warm_s=round(warm_s, 2), efficiency_warm=round(base["warm"] / warm_s, 3),
                     workers_used=len(workers), model_loads=len(loads), loads_ok=len(loads) == len(workers) == n,
                     worker_rss_mb=round(statistics.mean(rss)), worker_pss_mb=round(statistics.mean(pss)),
                     machine_used_mb={"no cluster": round(idle_mb), "cluster": round(cluster_mb),
                                      "with workers": round(with_workers_mb)},
                     target="efficiency >= 0.9 at 32; loads = workers")

    # -- a 1,000-item sweep --------------------------------------------------------

    def sweep(self) -> None:
        s = self.sizes["sweep"]
        self.cluster.ensure(2)
        small = self.pipeline([{"id": "w", "uses": "fake.sleep", "with": {"seconds": 0},
                                "sweep": {"seed": list(range(16))}}])
        self.ray(small), self.local(small)  # imports and first-run costs out of the way
        path = self.pipeline([{"id": "w", "uses": "fake.sleep", "with": {"seconds": s["seconds"]},
                               "sweep": {"seed": list(range(s["items"]))}}])
        local_s, _ = self.timed(self.local, path)
        for name, fn in (("ray 1", self.ray), ("ray 2", self.ray), ("ray 3", self.ray), ("warm workers", self.warm)):
            if fn == self.warm:
                self.warm(small)  # start the workers that the timed run keeps
            before = rss_mb()
            with RssSampler() as rss:
                seconds, items = self.timed(fn, path)
            peak = max(r for _, r in rss.samples)
            self.row("sweep", f"{name}: {s['items']} items fake.sleep seconds {s['seconds']}",
                     seconds=round(seconds, 2), items_per_s=round(s["items"] / seconds, 1), local_s=round(local_s, 2),
                     local_items_per_s=round(s["items"] / local_s, 1), batches=-(-s["items"] // 8),
                     workers=len({i["worker"]["pid"] for i in items}),
                     driver_rss_mb={"before": round(before, 1), "start": round(rss.at(0.0), 1),
                                    "middle": round(rss.at(0.5), 1), "end": round(rss.at(1.0), 1),
                                    "peak": round(peak, 1)}, samples=len(rss.samples))
        KeepWorkers.release()


SUMMARY = {  # the columns of each group's table at the end
    "dispatch": ["batches", "local_s", "ray_cold_s", "ray_s", "ray_ratio", "ray_per_batch_ms", "warm_s", "warm_ratio",
                 "warm_per_batch_ms"],
    "sweep": ["seconds", "items_per_s", "local_s", "workers"],
    "throughput": ["ray_s", "warm_s", "workers", "speedup", "speedup_warm_workers"],
    "scaling": ["ray_s", "efficiency", "worker_startup_s", "warm_s", "efficiency_warm", "model_loads",
                "worker_pss_mb"],
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
