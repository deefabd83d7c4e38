"""Running a plan on a Ray cluster (`studio run --executor ray`).

The driver (this process) does everything the local executor does except calling the
generators: it validates and plans, resolves inputs, looks up the step cache, writes every
artifact, the cache, the journal and the manifest. Only cache misses travel, one batch of
one step per Ray call, to long-lived worker actors that load the plugins once, keep their
models loaded across batches and steps, and call `studio.batch.run_batch` there. Inputs
made upstream go to the workers through Ray's object store (once per file), and outputs
come back the same way: one process writes the run directory, so there are no races on
shared files, and the outputs are the same bytes as a local run's.

A step starts as soon as the steps it reads from have finished; independent steps and the
batches of a step run at the same time, as many as the cluster has room for. Workers are
pooled per (generator, precision): a pool grows while there is room, and an idle worker
of another pool makes room when there is none. A worker that dies mid-batch is restarted
and the batch retried by Ray; a batch that runs out of memory is split in two, as locally.

Workers outlive the run that started them (Ray "detached" actors, named in the `studio`
namespace after what they were made for), so the next run on the same cluster finds its
models loaded: starting a worker and loading its models costs seconds, dispatching a
batch to a warm one about a millisecond. A worker idle for `keep_workers` seconds stops
itself and frees its CPU or GPU; workers left by another Studio setup (other versions,
plugins or thread count) are stopped by the next run that finds them idle.

Ray is imported only here, and this module only when `--executor ray` is asked for.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import pickle
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from studio.batch import BatchOutOfMemory, BatchResult, run_batch
from studio.errors import ClusterError, UserError, clip, echo, printable
from studio.executor import Executor, StepWork
from studio.generator import Artifact, StepContext
from studio.plan import PlanItem, PlanStep
from studio.records import ItemRun, StepRun
from studio.runtime import ModelBudget, Runtime, choose_precision
from studio.version import __version__

RAY_MISSING = ("running on a Ray cluster (--executor ray, or executor: ray in the pipeline) needs Ray, which is "
               "not installed here. Install it with `pip install 'studio-media[ray]'` (or `pip install ray`), or run "
               "with --executor local")
RETRIES = 3  # a worker that dies mid-batch is restarted and the batch run again, this often
KEEP_WORKERS_S = 300.0  # how long a worker waits, idle, for the next run's batches
NAMESPACE = "studio"  # the Ray namespace the named workers live in
PING_S = 0.5  # a worker that does not answer this fast is busy (in another run)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def connect(address: str | None, option: str = "--ray-address") -> dict[str, float]:
    """Join the cluster at `address` (else RAY_ADDRESS, else start a local one) unless
    this process is connected already; the cluster's resources. The address is checked
    before Ray is imported, and a host:port where nothing answers is refused after a
    bounded probe (Ray itself would retry for minutes). A Ray that Studio starts here
    keeps its messages for the driver out of the terminal (see `hold_ray_output`)."""
    joined = sys.modules.get("ray")
    if joined is not None and joined.is_initialized():
        return _resources(joined)  # the caller's own ray.init() chose the cluster
    address, source = resolve_address(address, option=option)
    ray = import_ray()
    if not ray.is_initialized():
        target, found_in = address, source
        if address in (None, "auto"):  # what Ray would join: the cluster `ray start` left here, if any
            target, found_in = _found_address(ray, address), "the cluster `ray start` recorded on this machine"
        problem = target not in (None, "auto", "local") and _unreachable(target)
        if problem:  # Ray itself would retry for minutes before saying so
            raise ClusterError(f"cannot reach the Ray cluster at {target!r} (from {found_in}): {problem}. Start one "
                               "with `ray start --head` and give the address it prints (see docs/scale-out.md)")
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address!r} (from {source})" if address else "a local Ray cluster"
            raise ClusterError(f"cannot reach {where}: {clip(printable(str(exc)), 300)}. Start one with `ray start "
                               "--head` and give its address with --ray-address (see docs/scale-out.md)") from None
        hold_ray_output(ray, for_good=True)  # this process is Studio's: Ray's messages never reach its terminal
    return _resources(ray)


def _resources(ray: Any) -> dict[str, float]:
    return {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}


def _found_address(ray: Any, address: str | None) -> str | None:
    """The host:port Ray would join for no address or "auto" (the cluster `ray start`
    last started here), or None when it would start one (or cannot tell)."""
    try:
        found = ray._private.services.get_ray_address_from_environment(address, None)
    except Exception:  # noqa: BLE001 - Ray's own words follow in ray.init
        return None
    try:
        return check_address(found, "RAY_ADDRESS") if isinstance(found, str) else None
    except UserError:
        return None


MAX_ADDRESS = 300  # characters: a host name has at most 253, a port 5, "ray://" 6
PROBE_S = 5.0  # how long the reachability probe waits for a name lookup and a connection, in all
ADDRESS_HELP = ("an address is HOST:PORT of the head (`ray start --head` prints it, e.g. 127.0.0.1:6379), "
                "[IPv6]:PORT, ray://HOST:PORT for Ray Client, auto or local (see docs/scale-out.md)")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_PORT = re.compile(r"0*[0-9]{1,5}")  # ASCII digits only: str.isdigit() also takes "٨٠" and "²"


def resolve_address(given: Any, *, option: str = "--ray-address") -> tuple[str | None, str]:
    """The cluster address a run joins and where it came from (`option`, or RAY_ADDRESS),
    checked the way Ray would read it: `given`, unless it is absent or "auto" and
    RAY_ADDRESS is set. Raises UserError naming the source for an address Ray could not
    use, before Ray is imported or started."""
    env = os.environ.get("RAY_ADDRESS")
    if given is not None and not isinstance(given, str):
        raise UserError(f"{option}: got {echo(given)} (a {type(given).__name__}); give the address as text: "
                        f"{ADDRESS_HELP}")
    if given is not None and given != "auto":
        return check_address(given, option), option
    if env:  # Ray reads it too when the address is absent or "auto" (an empty one is unset)
        return check_address(env, "RAY_ADDRESS"), "RAY_ADDRESS"
    return given, option


def check_address(text: str, source: str) -> str:
    """`text` as Ray would take it (its canonical form: the port as plain digits), or a
    UserError naming `source` that says what is wrong."""
    def refuse(why: str) -> UserError:
        return UserError(f"{source}: got {echo(text)}; {why}. {ADDRESS_HELP[0].upper()}{ADDRESS_HELP[1:]}")

    if len(text) > MAX_ADDRESS:
        raise refuse(f"it is {len(text):,} characters long, more than the {MAX_ADDRESS} an address can have")
    if not text.strip():
        raise refuse("it is empty" if not text else "it holds only spaces")
    bad = next((c for c in text if not "!" <= c <= "~"), None)
    if bad is not None:
        what = ("a space" if bad == " " else "a control character" if bad.isascii() or not bad.isprintable()
                else "a non-ASCII character")
        raise refuse(f"it holds {what} ({bad!r}) at position {text.index(bad) + 1}; an address is plain ASCII "
                     "(write an international host name in its xn-- form)")
    if text in ("auto", "local"):
        return text
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    elif scheme in ("http", "https"):
        raise refuse("that is a web address (the dashboard's or the job API's), not the cluster's; give the "
                     "address `ray start --head` printed (port 6379 by default)")
    elif scheme != "ray":
        raise refuse(f"the only scheme Ray Client takes is ray:// (Ray would import a Python module named "
                     f"{echo(scheme, 40)} for it)")
    if rest.startswith("["):
        host, close, port = rest[1:].partition("]")
        if not close or not port.startswith(":"):
            raise refuse("an IPv6 address in brackets needs a port after it: [::1]:6379")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse(f"{echo(host, 60)} in the brackets is not an IPv6 address") from None
    elif rest.count(":") > 1:
        raise refuse("an IPv6 address needs brackets around it and its port after them: [::1]:6379")
    else:
        host, colon, port = rest.partition(":")
        if not colon:
            raise refuse("there is no port: give HOST:PORT, e.g. 127.0.0.1:6379")
        if not host:
            raise refuse("there is no host before the port: give HOST:PORT, e.g. 127.0.0.1:6379")
        labels = host.removesuffix(".").split(".")
        if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise refuse(f"{echo(host, 60)} is not a host name or IPv4 address (letters, digits, '-' and '_' "
                         "in dot-separated parts of 1 to 63 characters)")
    if not port:
        raise refuse("the port is empty: give HOST:PORT, e.g. 127.0.0.1:6379")
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise refuse(f"the port {echo(port, 20)} is not a number from 1 to 65535 written in the digits 0-9")
    bracketed = f"[{host}]" if ":" in host else host
    return f"{scheme}://{bracketed}:{int(port)}" if scheme else f"{bracketed}:{int(port)}"


def _unreachable(address: str, timeout_s: float = PROBE_S) -> str | None:
    """Why nothing answers at a host:port, [IPv6]:port or ray://host:port address as
    `check_address` returns it, or None; within `timeout_s` in all, the name lookup
    included (it runs in a thread of its own: a resolver can wait far longer)."""
    rest = address.partition("://")[2] if "://" in address else address
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    deadline = time.monotonic() + timeout_s
    found: dict[str, Any] = {}

    def look_up() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            found["error"] = exc

    lookup = threading.Thread(target=look_up, name="studio-ray-address-lookup", daemon=True)
    lookup.start()
    lookup.join(timeout_s)
    if lookup.is_alive():
        return f"looking up the host name {host!r} took more than {timeout_s:g} s"
    if "error" in found:
        exc = found["error"]
        return f"cannot look up the host name {host!r} ({getattr(exc, 'strerror', None) or exc})"
    problem = "the host name has no address"
    for family, kind, proto, _, where in found["infos"]:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no answer within {timeout_s:g} s ({problem})"
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(where)
                return None
        except OSError as exc:
            problem = exc.strerror or str(exc) or type(exc).__name__
    return problem


RAY_LOG = "ray.log"  # in the run folder: what Ray had to say to the driver during the run
MAX_RAY_LINES = 2000  # the latest ones kept, each clipped


class RayOutput:
    """Ray's messages for the driver, kept for the run folder instead of the terminal:
    errors the cluster pushes to the driver (printed by Ray as "(raylet) Task Worker.keep
    failed ... killed by `ray.kill`" when a worker retires as a batch is sent, which the
    run handles) and Ray's log records. Workers' own stdout and stderr stay in Ray's
    session logs (log_to_driver=False)."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=MAX_RAY_LINES)
        self.lock = threading.Lock()
        self.dropped = 0

    def add(self, line: str) -> None:
        with self.lock:
            if len(self.lines) == self.lines.maxlen:
                self.dropped += 1
            self.lines.append(clip(printable(line.rstrip("\n")), 2000))

    def take(self) -> list[str]:
        with self.lock:
            lines, dropped = list(self.lines), self.dropped
            self.lines.clear()
            self.dropped = 0
        return ([f"({dropped:,} earlier lines dropped)"] if dropped else []) + lines


class _ToRayOutput(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            OUTPUT.add(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.levelname} {record.name}: "
                       f"{record.getMessage()}")
        except Exception:  # noqa: BLE001 - a log line must never fail the run
            pass


OUTPUT = RayOutput()
_held: dict[str, Any] | None = None  # what hold_ray_output replaced, to put back
_held_for_good = False


def hold_ray_output(ray: Any, for_good: bool = False) -> None:
    """From now on, what Ray would print for the driver in this process (pushed errors,
    its "ray" logger) goes to OUTPUT instead of stdout and stderr; `for_good` when this
    process is Studio's (it started Ray), else until `release_ray_output`."""
    global _held, _held_for_good
    _held_for_good = _held_for_good or for_good
    if _held is not None:
        return
    worker = sys.modules.get("ray._private.worker")
    logger = logging.getLogger("ray")
    _held = {"worker": worker, "print": getattr(worker, "print_to_stdstream", None),
             "handlers": list(logger.handlers), "propagate": logger.propagate}

    def print_to_run_log(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        try:
            for line in data.get("lines", ()):
                OUTPUT.add(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({data.get('pid', 'ray')}) {line}")
        except Exception:  # noqa: BLE001
            pass

    if _held["print"] is not None:  # Ray's error listener looks it up here for every message
        worker.print_to_stdstream = print_to_run_log
    logger.handlers = [_ToRayOutput()]
    logger.propagate = False


def release_ray_output() -> None:
    """Ray prints for the driver again as it did before (unless Studio started Ray)."""
    global _held
    if _held is None or _held_for_good:
        return
    if _held["print"] is not None:
        _held["worker"].print_to_stdstream = _held["print"]
    logger = logging.getLogger("ray")
    logger.handlers, logger.propagate = _held["handlers"], _held["propagate"]
    _held = None


def write_ray_log(run_dir: Path, lines: list[str]) -> None:
    """RUN/ray.log with `lines`, when there are any (written whole or not at all; a log
    never fails a finished run)."""
    if not lines:
        return
    partial = run_dir / f".{RAY_LOG}.{os.getpid()}.partial"
    try:
        with open(partial, "x", encoding="utf-8") as log:
            log.write("\n".join(lines) + "\n")
        os.replace(partial, run_dir / RAY_LOG)
    except OSError:
        try:
            partial.unlink()
        except OSError:
            pass


def session_logs(ray: Any) -> str | None:
    """Ray's session log folder (its raylet's and workers' logs) on this machine, or None."""
    try:
        return str(ray._private.worker._global_node.get_logs_dir_path())
    except Exception:  # noqa: BLE001 - a Ray Client driver has none here
        return None


def versions(registry: Any) -> dict[str, Any]:
    """What must be the same on the driver and every worker."""
    return {"studio": __version__,
            "plugins": {n: p.version for n, p in sorted(registry.plugins.items()) if p.ok}}


# --- what travels ---------------------------------------------------------------------


@dataclass
class Job:
    """One batch of one step, as a worker receives it."""

    step_id: str
    uses: str
    plugin: str
    precision: str
    compile: bool
    items: list[PlanItem]
    values: list[dict[str, Any]]  # each item's resolved parameters (Artifacts point at the driver's files)
    blobs: dict[str, Any]  # sha256 -> ObjectRef of an input file's bytes
    submitted: float = 0.0


@dataclass
class Part:
    """What became of some of a job's items (by index): outputs or one error."""

    indexes: list[int]
    outputs: list[dict[str, Any]] | None
    error: BaseException | None
    seconds: float
    notes: list[dict[str, Any]]


@dataclass
class Done:
    """A job's answer: its parts, or the out-of-memory error that asks for a smaller
    batch; and who made it, when."""

    parts: list[Part]
    out_of_memory: str | None
    identity: dict[str, Any]
    started: float
    ended: float


class Worker:
    """A Ray actor: the plugins loaded once, and one runtime whose model cache lives as
    long as the actor does, across batches and steps."""

    def __init__(self, recipe: dict[str, Any], device: str, precision: str, budget: ModelBudget, threads: int,
                 keep_s: float = 0.0):
        import sys
        import warnings

        import ray

        # as many CPU threads as a local run on the driver uses: torch's CPU kernels may sum
        # in another order with another thread count, and the outputs must be the same bytes
        # (Ray starts workers with OMP_NUM_THREADS=1; torch reads it when first imported)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        # several workers share a node's cores: threads waiting for work sleep instead of
        # spinning (spinning made a full node 10x slower); the sums are the same
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)

        from studio.plugins import Host

        with warnings.catch_warnings():  # a broken plugin is reported by the driver's own host
            warnings.simplefilter("ignore")
            self.host = Host.load(**recipe)
        self.runtime = Runtime(device, precision, budget)
        self.generators: dict[str, Any] = {}
        context = ray.get_runtime_context()
        self.identity = {"node": context.get_node_id(), "worker": context.get_actor_id(), "pid": os.getpid(),
                         "versions": versions(self.host.registry)}
        self.last_used = time.monotonic()
        self.keep_s = keep_s
        if keep_s > 0:
            threading.Thread(target=self._retire_when_idle, daemon=True).start()

    def run(self, job: Job) -> Done:
        """Make one batch: its input files written to a folder of their own for the
        batch's time, the generator called through run_batch."""
        import shutil

        self.last_used = time.monotonic()
        started = time.time()
        inputs = Path(tempfile.mkdtemp(prefix="studio-inputs-"))
        try:
            return self._run(job, started, inputs)
        finally:
            shutil.rmtree(inputs, ignore_errors=True)
            self.last_used = time.monotonic()

    def ping(self) -> bool:
        """Answers at once when idle (calls to an actor run one at a time)."""
        return True

    def keep(self, seconds: float) -> None:
        """Wait this long, idle, from now on: the latest run that took this worker sets it."""
        self.keep_s = seconds

    def retire(self, idle_since: float) -> None:
        """Stop this worker for good, unless a batch came since the timer asked."""
        if self.last_used == idle_since:
            import ray

            # a batch sent in the meantime fails as "killed by ray.kill" and the driver
            # sends it to a new worker (RayExecutor._receive)
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _retire_when_idle(self) -> None:
        """A timer thread: after `keep_s` without a batch, ask this actor (through its own
        queue, so never in the middle of a batch) to retire."""
        import ray

        me = ray.get_runtime_context().current_actor
        asked = None
        while True:
            time.sleep(min(self.keep_s, 1.0))
            idle_since = self.last_used
            if idle_since != asked and time.monotonic() - idle_since >= self.keep_s:
                me.retire.remote(idle_since)
                asked = idle_since

    def _run(self, job: Job, started: float, inputs: Path) -> Done:
        gen = self.generators.get(job.uses) or self.generators.setdefault(
            job.uses, self.host.registry.generator(job.uses)())
        items = []
        for plan_item, values in zip(job.items, job.values):
            ctx = StepContext(step_id=job.step_id, item_name=plan_item.name, seed=plan_item.seed,
                              runtime=self.runtime, precision=job.precision, labels=plan_item.labels,
                              compile=job.compile)
            params = gen.Params.model_construct(**{k: self._local(v, job.blobs, inputs) for k, v in values.items()})
            items.append(ItemRun(plan_item, params, ctx, Path("."), ""))
        run = StepRun(job.step_id, job.uses, job.plugin, gen, self.runtime, job.precision, items)
        try:
            results = run_batch(run, self.host.hooks.run_step)
        except BatchOutOfMemory as exc:
            return Done([], str(exc.__cause__), self.identity, started, time.time())
        position = {id(item): i for i, item in enumerate(items)}
        parts = [Part([position[id(i)] for i in r.items], r.outputs, _portable(r.error), r.seconds,
                      [dict(i.ctx.notes) for i in r.items]) for r in results]
        return Done(parts, None, self.identity, started, time.time())

    def _local(self, value: Any, blobs: dict[str, Any], inputs: Path) -> Any:
        """An input Artifact made a file on this machine (written once per content)."""
        if isinstance(value, list):
            return [self._local(v, blobs, inputs) for v in value]
        if not isinstance(value, Artifact) or value.sha256 not in blobs:
            return value
        import ray

        path = inputs / f"{value.sha256}{value.path.suffix}"
        if not path.exists():
            partial = path.with_name(path.name + f".{os.getpid()}.partial")
            partial.write_bytes(ray.get(blobs[value.sha256]))
            os.replace(partial, path)
        return value.model_copy(update={"path": path})


def _portable(error: BaseException | None) -> BaseException | None:
    """An exception that survives the trip to the driver, its traceback as text."""
    if error is None:
        return None
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # an exception holding something that does not pickle
        kind = UserError if isinstance(error, UserError) else RuntimeError
        error = kind(f"{type(error).__name__}: {error}")
    error.remote_traceback = text
    return error


# --- the driver -----------------------------------------------------------------------


class ClusterRuntime(Runtime):
    """The driver's view of the workers' runtime: the device they run on (a GPU when the
    cluster has any and the pipeline allows it), for precision choices and cache keys.
    The driver itself never loads a model."""

    def __init__(self, device: str, precision: str, budget: ModelBudget, cluster: dict[str, float]):
        super().__init__(device, precision, budget)
        gpus = cluster.get("GPU", 0) >= 1 and device != "cpu"
        if device.startswith("cuda") and not gpus:
            raise ClusterError(f"device {device!r} was asked for, but the Ray cluster has no GPU "
                               f"(resources: {_resources_text(cluster)}); use device: auto or cpu")
        self._device = "cuda" if gpus else "cpu"
        self.gpu_bf16: bool | None = None  # asked of a GPU worker when a choice needs it

    def precision_for(self, supported: tuple[str, ...]) -> str:
        if self._device == "cuda" and self.requested_precision == "auto" and "bf16" in supported:
            if self.gpu_bf16 is None:
                self.gpu_bf16 = _gpu_supports_bf16()
            return choose_precision("auto", "cuda", supported, bf16_ok=self.gpu_bf16)
        return choose_precision(self.requested_precision, self._device, supported, bf16_ok=False)

    def describe(self) -> dict[str, Any]:
        """The workers' device; the models live in the workers, so no cache here."""
        return {"device": self._device, "requested_device": self.requested_device,
                "precision": self.requested_precision}


def _gpu_supports_bf16() -> bool:
    ray = import_ray()

    @ray.remote(num_gpus=1, num_cpus=0)
    def probe() -> bool:
        import torch

        return bool(torch.cuda.is_bf16_supported())

    return bool(ray.get(probe.remote()))


def _resources_text(cluster: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(cluster.items()) if k in ("CPU", "GPU")) or "none"


@dataclass
class Slot:
    actor: Any
    kind: str  # "cpu" or "gpu"
    busy: bool = False
    adopted: bool = False  # left by an earlier run, not started by this one


@dataclass
class Batch:
    work: StepWork
    items: list[ItemRun]
    resent: int = 0  # times sent again because its worker had retired


@dataclass
class Flight:
    batch: Batch
    slot: Slot
    submitted: float

    @property
    def work(self) -> StepWork:
        return self.batch.work

    @property
    def items(self) -> list[ItemRun]:
        return self.batch.items


@dataclass
class Pools:
    """Worker actors by (generator, precision), within the cluster's CPUs and GPUs."""

    capacity: dict[str, int]
    by_key: dict[tuple, list[Slot]] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return sum(1 for pool in self.by_key.values() for s in pool if s.kind == kind)

    def all(self) -> list[Slot]:
        return [s for pool in self.by_key.values() for s in pool]

    def drop(self, slot: Slot) -> None:
        for pool in self.by_key.values():
            if slot in pool:
                pool.remove(slot)


class RayExecutor(Executor):
    """The local executor's driver with generators called on a Ray cluster."""

    def __init__(self, registry: Any, hooks: Any, plan: Any, *, recipe: dict[str, Any],
                 address: str | None = None, budget: ModelBudget | None = None,
                 keep_workers: float = KEEP_WORKERS_S, **kwargs: Any):
        super().__init__(registry, hooks, plan, **kwargs)
        self.recipe = recipe
        self.address = address
        self.budget = budget or ModelBudget()
        self.keep_workers = keep_workers
        self.cluster: dict[str, float] = {}
        self.expected = versions(registry)
        self._blobs: dict[str, Any] = {}

    def run(self):
        self.cluster = connect(self.address)  # an unreachable cluster fails before anything is written
        import torch

        self.threads = torch.get_num_threads()  # what a local run here would use (see Worker)
        if self.runtime is None or not isinstance(self.runtime, ClusterRuntime):
            given = self.runtime
            self.runtime = ClusterRuntime(given.requested_device if given else self.spec.device,
                                          given.requested_precision if given else self.spec.precision,
                                          given.budget if given else self.budget, self.cluster)
        hold_ray_output(import_ray())  # Ray's messages during the run go to RUN/ray.log, not the terminal
        OUTPUT.take()  # what came before this run is not this run's
        try:
            result = super().run()
        finally:
            lines = OUTPUT.take()
            release_ray_output()
        write_ray_log(result.run_dir, lines)
        return result

    def executor_info(self) -> dict[str, Any]:
        ray = import_ray()
        info = {"name": "ray", "address": ray.get_runtime_context().gcs_address,
                "resources": self.cluster, "versions": self.expected}
        logs = session_logs(ray)
        if logs:  # the raylet's and workers' logs; Ray's messages to the driver: RUN/ray.log
            info["logs"] = logs
        return info

    # -- scheduling ---------------------------------------------------------------

    def _run_steps(self) -> None:
        ray = import_ray()
        step_of = {item.name: step.id for step in self.plan.steps for item in step.items}
        upstream = {step.id: {step_of[d] for item in step.items for d in item.deps} - {step.id}
                    for step in self.plan.steps}
        waiting: list[PlanStep] = list(self.plan.steps)
        finished: set[str] = set()
        open_batches: dict[str, int] = {}
        queue: deque[Batch] = deque()
        inflight: dict[Any, Flight] = {}
        cpus = int(self.cluster.get("CPU", 0))
        self.pools = Pools({"cpu": max(1, cpus), "gpu": int(self.cluster.get("GPU", 0))})
        self.setup = _setup_id(self.expected, self.recipe, self.threads, self.runtime.budget)
        self._adopt_workers(ray)
        try:
            while waiting or queue or inflight:
                for step in [s for s in waiting if upstream[s.id] <= finished]:
                    waiting.remove(step)
                    work = self._start_step(step)
                    size = work.batch_size
                    batches = [work.todo[i:i + size] for i in range(0, len(work.todo), size)]
                    open_batches[step.id] = len(batches)
                    queue.extend(Batch(work, batch) for batch in batches)
                    if not batches:
                        self._step_done(step.id, finished)
                self._dispatch(queue, inflight)
                if not inflight:
                    if queue:
                        raise ClusterError(f"the Ray cluster has no room for a worker (resources: "
                                           f"{_resources_text(self.cluster)})")
                    continue
                ready, _ = ray.wait(list(inflight), num_returns=1)
                flight = inflight.pop(ready[0])
                flight.slot.busy = False
                step_id = flight.work.step.id
                open_batches[step_id] += self._receive(ray, ready[0], flight, queue) - 1
                if open_batches[step_id] == 0:
                    self._step_done(step_id, finished)
        finally:
            if self.keep_workers <= 0:  # else they wait, idle, for the next run
                for slot in self.pools.all():
                    if not slot.adopted:  # those keep the time the run that started them gave
                        ray.kill(slot.actor)
            self.pools.by_key.clear()

    def _adopt_workers(self, ray: Any) -> None:
        """Take over the idle workers earlier runs of this same setup left on the cluster
        (their models still loaded), and stop idle ones of other setups, which only hold
        CPUs and GPUs now. A worker that does not answer at once is busy in another run
        and left alone."""
        found = {}  # the ping's reference -> (name, actor)
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != NAMESPACE or not name.startswith("worker/"):
                continue
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # it has just stopped
                continue
            found[actor.ping.remote()] = (name, actor)
        if not found:
            return
        answered, _ = ray.wait(list(found), num_returns=len(found), timeout=PING_S)
        for ref in answered:
            name, actor = found[ref]
            try:
                ray.get(ref)
            except ray.exceptions.RayError:  # it stopped since it answered
                continue
            _, setup, kind, precision, _, generator = name.split("/", 5)
            if setup != self.setup:
                ray.kill(actor)
            elif self.pools.count(kind) < self.pools.capacity.get(kind, 0):
                self.pools.by_key.setdefault((generator, precision, kind), []).append(Slot(actor, kind, adopted=True))
                if self.keep_workers > 0:
                    actor.keep.remote(self.keep_workers)

    def _step_done(self, step_id: str, finished: set[str]) -> None:
        finished.add(step_id)
        self.events.emit("step_done", step=step_id)

    def _dispatch(self, queue: deque[Batch], inflight: dict[Any, Flight]) -> None:
        while queue:
            batch = queue[0]
            slot = self._idle_slot(batch.work)
            if slot is None:
                return  # every worker is busy: wait for one
            queue.popleft()
            slot.busy = True
            submitted = time.time()
            job = self._job(batch.work, batch.items, submitted)
            inflight[slot.actor.run.remote(job)] = Flight(batch, slot, submitted)

    def _idle_slot(self, work: StepWork) -> Slot | None:
        gen, precision = work.template.generator, work.template.precision
        kind = "gpu" if gen.uses_device and self.runtime.device == "cuda" else "cpu"
        pool = self.pools.by_key.setdefault((gen.name, precision, kind), [])
        for slot in pool:
            if not slot.busy:
                return slot
        if self.pools.count(kind) >= self.pools.capacity[kind]:
            idle = next((s for s in self.pools.all() if not s.busy and s.kind == kind), None)
            if idle is None:
                return None
            import_ray().kill(idle.actor)  # an idle worker of another generator makes room
            self.pools.drop(idle)
        slot = Slot(self._new_actor(kind, precision, gen.name), kind)
        pool.append(slot)
        return slot

    def _new_actor(self, kind: str, precision: str, generator: str) -> Any:
        ray = import_ray()
        # a GPU worker asks for its GPU only: CPUs held by (idle) CPU workers must never keep
        # it from starting, and the GPU count alone bounds the GPU workers
        options: dict[str, Any] = {"num_cpus": 0 if kind == "gpu" else 1, "num_gpus": 1 if kind == "gpu" else 0,
                                   "max_restarts": RETRIES, "max_task_retries": RETRIES}
        if self.keep_workers > 0:  # found again by name by the next run (see _adopt_workers)
            options.update(lifetime="detached", namespace=NAMESPACE,
                           name=f"worker/{self.setup}/{kind}/{precision}/{uuid.uuid4().hex[:12]}/{generator}")
        device = "cuda" if kind == "gpu" else "cpu"
        return ray.remote(Worker).options(**options).remote(self.recipe, device, precision, self.runtime.budget,
                                                             self.threads, self.keep_workers)

    def _job(self, work: StepWork, items: list[ItemRun], submitted: float) -> Job:
        """The batch as a worker gets it; each input file put in the object store once
        per run, however many batches read it."""
        values, blobs = [], {}
        for item_run in items:
            params = item_run.params
            values.append({k: getattr(params, k) for k in type(params).model_fields})
            for value in values[-1].values():
                for artifact in value if isinstance(value, list) else [value]:
                    if isinstance(artifact, Artifact):
                        if artifact.sha256 not in self._blobs:
                            self._blobs[artifact.sha256] = import_ray().put(artifact.path.read_bytes())
                        blobs[artifact.sha256] = self._blobs[artifact.sha256]
        step = work.step
        return Job(step.id, step.uses, work.template.plugin, work.template.precision,
                   bool(step.compile and work.template.generator.uses_device),
                   [i.item for i in items], values, blobs, submitted)

    def _receive(self, ray: Any, ref: Any, flight: Flight, queue: deque[Batch]) -> int:
        """Record a finished job; the number of batches it leaves queued (2 when it ran
        out of memory and was split, 1 when it is sent again, else 0)."""
        run = flight.work.run(flight.items)
        try:
            done: Done = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.RayActorError):
                self.pools.drop(flight.slot)  # never send it another batch
                if "ray.kill" in str(exc) and flight.batch.resent < RETRIES:
                    # the worker retired (idle too long) just as the batch was sent
                    queue.appendleft(replace(flight.batch, resent=flight.batch.resent + 1))
                    return 1
            # the worker died more often than Ray retries
            result = BatchResult(flight.items, error=ClusterError(
                f"the Ray worker running it died {RETRIES + 1} times ({clip(str(exc).splitlines()[0], 200)})"))
            self._record_batch(run, result)
            return 0
        if done.identity["versions"] != self.expected:
            raise ClusterError(_version_message(done.identity, self.expected))
        if done.out_of_memory is not None:
            if len(flight.items) == 1:  # alone and still too big: a failure, as locally
                error = RuntimeError(done.out_of_memory)
                self._record_batch(run, BatchResult(flight.items, error=error))
                return 0
            half = len(flight.items) // 2
            self._batch_shrunk(flight.work.step.id, len(flight.items), half, done.out_of_memory)
            queue.appendleft(Batch(flight.work, flight.items[half:]))
            queue.appendleft(Batch(flight.work, flight.items[:half]))
            return 2
        for part in done.parts:
            items = [flight.items[i] for i in part.indexes]
            for item_run, notes in zip(items, part.notes):
                item_run.ctx.notes.update(notes)
                self.results[item_run.item.name].worker = {
                    "node": done.identity["node"], "worker": done.identity["worker"], "pid": done.identity["pid"],
                    "queue_s": round(done.started - flight.submitted, 4),
                    "run_s": round(done.ended - done.started, 4)}
            self._record_batch(replace(run, items=items),
                               BatchResult(items, outputs=part.outputs, error=part.error, seconds=part.seconds))
        return 0


def _setup_id(expected: dict[str, Any], recipe: dict[str, Any], threads: int, budget: ModelBudget) -> str:
    """What a worker was made with, as a short hash in its name: a later run reuses only
    workers made the same way (same versions, plugins, thread count and memory budget)."""
    extra = [[name, getattr(obj, "__name__", None) or f"{type(obj).__module__}.{type(obj).__qualname__}"]
             for name, obj in recipe.get("extra", ())]
    described = {"versions": expected, "entry_points": recipe.get("entry_points_group"), "extra": extra,
                 "env": recipe.get("env", {}), "threads": threads, "budget": [budget.cpu, budget.gpu]}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _version_message(identity: dict[str, Any], expected: dict[str, Any]) -> str:
    got = identity["versions"]
    differences = []
    if got["studio"] != expected["studio"]:
        differences.append(f"studio {got['studio']} (the driver has {expected['studio']})")
    for name in sorted(set(got["plugins"]) | set(expected["plugins"])):
        theirs, ours = got["plugins"].get(name, "missing"), expected["plugins"].get(name, "missing")
        if theirs != ours:
            differences.append(f"plugin {name} {theirs} (the driver has {ours})")
    return (f"Ray node {identity['node'][:12]} runs other versions than the driver: {'; '.join(differences)}. "
            "Install the same Studio and plugins on every node (see docs/scale-out.md)")
