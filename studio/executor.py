"""Walks a plan: per item, cache lookup -> runtime -> generator -> writers.

Failure policy: an item that fails marks the items that need it as skipped; the rest
of the pipeline still runs, and every finished artifact is kept (exit code 1). Ctrl-C
stops at once, records what finished, and leaves no partial file behind."""

from __future__ import annotations

import secrets
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from studio import __version__
from studio import params as P
from studio.artifacts import atomic_write, media_type_of_file, sha256_file
from studio.cache import StepCache, cache_key, canonical
from studio.errors import StudioError, UserError
from studio.events import Sink
from studio.generator import Artifact, Generator, Params, StepContext
from studio.manifest import Manifest
from studio.plan import Binding, FileInput, Plan, PlanItem, PlanStep
from studio.refs import interpolate, whole_ref
from studio.report import write_gallery
from studio.runtime import Runtime, check_finite, free_memory, is_out_of_memory

if TYPE_CHECKING:
    from studio.plugins import Host


@dataclass
class ItemRun:
    """One item handed to a generator."""

    item: PlanItem
    params: Params
    ctx: StepContext
    dir: Path
    cache_key: str


@dataclass
class StepRun:
    """What the `run_step` hook receives: a step's generator and the items to make
    (one, or a batch of sweep items)."""

    step_id: str
    uses: str
    plugin: str
    generator: Generator
    runtime: Runtime
    precision: str
    items: list[ItemRun]


@dataclass
class ItemResult:
    name: str
    step_id: str
    dir: str
    labels: dict[str, Any]
    seed: int
    status: str = "pending"  # pending | done | cached | failed | skipped | interrupted
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None
    cache_key: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # what the generator recorded

    @property
    def ok(self) -> bool:
        return self.status in ("done", "cached")


@dataclass
class RunResult:
    """A finished (or failed, or interrupted) run, as the Python API returns it."""

    run_dir: Path
    status: str
    items: dict[str, ItemResult]
    manifest_path: Path

    def step(self, step_id: str) -> list[ItemResult]:
        return [r for r in self.items.values() if r.step_id == step_id]

    def artifacts(self, step_id: str | None = None) -> list[Artifact]:
        return [a for r in self.items.values() if step_id in (None, r.step_id) for a in r.artifacts.values()]

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.items.values() if r.status == "failed"]


class BatchOutOfMemory(Exception):
    """A batch of several items ran out of device memory: run it again smaller."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class Executor:
    def __init__(
        self,
        host: Host,
        plan: Plan,
        *,
        out: Path,
        use_cache: bool = True,
        events: Sink | None = None,
        runtime: Runtime | None = None,
    ):
        self.host = host
        self.plan = plan
        self.spec = plan.spec
        self.out = Path(out).resolve()
        self.cache = StepCache(self.out / ".cache" / "steps") if use_cache else None
        self.events = events or Sink()
        self.runtime = runtime
        self.results: dict[str, ItemResult] = {}
        self._generators: dict[str, Generator] = {}
        self._files: dict[str, Artifact] = {}

    def run(self) -> RunResult:
        if self.runtime is None:
            self.runtime = Runtime(self.spec.device, self.spec.precision)
        self.runtime.check_device()  # an unavailable GPU fails before anything is written
        run_dir = self.out / self.spec.name / new_run_id()
        run_dir.mkdir(parents=True)
        self.run_dir = run_dir
        for item in self.plan.items:
            self.results[item.name] = ItemResult(item.name, item.step_id, item.dirname, item.labels, item.seed)
        self.manifest = Manifest(run_dir, self.plan, self.host, self.runtime, self.results)
        self.manifest.write("running")
        self.events.emit("run_start", pipeline=self.spec.name, run_dir=str(run_dir), items=len(self.results))
        status = "interrupted"
        try:
            for step in self.plan.steps:
                self._run_step(step)
            status = "failed" if any(r.status == "failed" for r in self.results.values()) else "done"
        finally:
            for r in self.results.values():
                if r.status == "pending":
                    r.status = "interrupted"
            self.manifest.write(status)
            steps = {s.id: [self.results[i.name] for i in s.items] for s in self.plan.steps}
            write_gallery(run_dir, self.spec.name, status, steps)
            self.events.emit("run_done", status=status, run_dir=str(run_dir))
        return RunResult(run_dir, status, self.results, self.manifest.path)

    # -- one step -----------------------------------------------------------------

    def _generator(self, name: str) -> Generator:
        if name not in self._generators:
            self._generators[name] = self.host.generator(name)()
        return self._generators[name]

    def _run_step(self, step: PlanStep) -> None:
        gen = self._generator(step.uses)
        plugin = self.host.plugin_of(step.uses)
        precision = self.runtime.precision_for(gen.precisions) if gen.uses_device else "fp32"
        device_kind = self.runtime.device.split(":")[0] if gen.uses_device else "any"
        self.events.emit("step_start", step=step.id, uses=step.uses, items=len(step.items), precision=precision)
        todo: list[ItemRun] = []
        for item in step.items:
            result = self.results[item.name]
            broken = [d for d in item.deps if not self.results[d].ok]
            if broken:
                self._finish(result, "skipped", error=f"upstream item {broken[0]!r} did not finish")
                continue
            try:
                params = self._resolve_params(item, gen)
            except (ValidationError, StudioError, OSError) as exc:
                self._finish(result, "failed", error=f"parameters: {_short_error(exc)}")
                continue
            result.params = _jsonable(params)
            key = cache_key({
                "generator": gen.name, "version": gen.version, "weights": gen.weights_id(params),
                "params": params, "seed": item.seed, "precision": precision,
                "device": device_kind,
            })
            result.cache_key = key
            item_dir = self._item_dir(item)
            if self.cache and self._restore(result, item_dir, key, step):
                continue
            ctx = StepContext(
                step_id=step.id, item_name=item.name, seed=item.seed, runtime=self.runtime,
                precision=precision, labels=item.labels, compile=step.compile and gen.uses_device,
                on_progress=lambda done, total, name=item.name: self.events.emit(
                    "item_progress", step=step.id, item=name, done=done, total=total),
            )
            todo.append(ItemRun(item, params, ctx, item_dir, key))
        size = gen.max_batch_size if gen.batchable else 1
        start = 0
        while start < len(todo):
            batch = todo[start:start + size]
            began = time.perf_counter()
            try:
                self._run_batch(StepRun(step.id, step.uses, plugin, gen, self.runtime, precision, batch))
            except BatchOutOfMemory as exc:
                error = str(exc.__cause__)
            else:
                if step.compile and start == 0:  # compiling happens on the first call: say what it cost
                    self.runtime.first_batch_s[step.id] = round(time.perf_counter() - began, 3)
                start += len(batch)
                continue
            # the device's memory is the budget: halve the batch for the rest of the step. (Out
            # of the except clause, so the failed batch's tensors, held by its traceback, are freed.)
            size = max(1, len(batch) // 2)
            free_memory()
            self.events.emit("batch_shrunk", step=step.id, tried=len(batch), now=size, error=error)
            self.runtime.batch_shrunk[step.id] = size
        self.events.emit("step_done", step=step.id)

    def _run_batch(self, run: StepRun) -> None:
        began = time.perf_counter()
        try:
            outputs = self.host.pm.hook.run_step(step=run)
            if outputs is None or len(outputs) != len(run.items):
                raise RuntimeError(f"run_step returned {0 if outputs is None else len(outputs)} results "
                                   f"for {len(run.items)} items")
        except Exception as exc:  # a generator's bug is reported, the run goes on
            if len(run.items) > 1 and is_out_of_memory(exc):
                raise BatchOutOfMemory() from exc
            self._log_traceback(run, exc)
            for item_run in run.items:
                self._finish(self.results[item_run.item.name], "failed",
                             error=f"{run.uses} (plugin {run.plugin!r}) raised {_short_error(exc)}")
            return
        seconds = (time.perf_counter() - began) / len(run.items)
        for item_run, out in zip(run.items, outputs):
            self._save(run, item_run, out, seconds)

    def _save(self, run: StepRun, item_run: ItemRun, outputs: Any, seconds: float) -> None:
        gen, item = run.generator, item_run.item
        result = self.results[item.name]
        written: list[Path] = []
        try:
            if not isinstance(outputs, dict) or set(outputs) != set(gen.outputs):
                got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
                raise RuntimeError(f"returned outputs {got}, but it declares {sorted(gen.outputs)}")
            provenance = self._provenance(run, item_run)
            for port, media_type in gen.outputs.items():
                value = outputs[port]
                check_finite(value, f"step {run.step_id!r} item {item.name!r} output {port!r}")
                writer = self.host.writer(media_type)
                path = item_run.dir / f"{port}.{writer.extension}"
                atomic_write(path, lambda tmp: writer.write(value, tmp, provenance))
                written.append(path)
                result.artifacts[port] = Artifact(
                    path=path, media_type=media_type, sha256=sha256_file(path), size=path.stat().st_size,
                    producer=item.name, labels=item.labels)
        except Exception as exc:
            for path in written:  # an item is whole or absent
                path.unlink(missing_ok=True)
            result.artifacts.clear()
            self._log_traceback(run, exc)
            self._finish(result, "failed", error=f"{run.uses} (plugin {run.plugin!r}): {_short_error(exc)}")
            return
        result.notes = dict(item_run.ctx.notes)
        if self.cache:
            self.cache.store(item_run.cache_key, result.artifacts, result.notes)
        for artifact in result.artifacts.values():
            self.host.pm.hook.artifact_saved(artifact=artifact, step=run)
        self._finish(result, "done", seconds=seconds)

    def _restore(self, result: ItemResult, item_dir: Path, key: str, step: PlanStep) -> bool:
        files = self.cache.lookup(key)
        if files is None:
            return False
        result.notes = self.cache.notes(key)
        for f in files:
            target = item_dir / f.path.name
            atomic_write(target, lambda tmp, src=f.path: tmp.write_bytes(src.read_bytes()))
            result.artifacts[f.port] = Artifact(
                path=target, media_type=f.media_type, sha256=f.sha256, size=target.stat().st_size,
                producer=result.name, labels=result.labels)
        run = StepRun(step.id, step.uses, self.host.plugin_of(step.uses), self._generator(step.uses),
                      self.runtime, "", [])
        for artifact in result.artifacts.values():
            self.host.pm.hook.artifact_saved(artifact=artifact, step=run)
        self._finish(result, "cached", seconds=0.0)
        return True

    def _finish(self, result: ItemResult, status: str, *, error: str | None = None, seconds: float | None = None) -> None:
        result.status, result.error, result.seconds = status, error, seconds
        self.manifest.write("running", at_most_every_s=1.0)  # the run's end always writes
        event = {"done": "item_done", "cached": "item_cached", "failed": "item_error", "skipped": "item_skipped"}[status]
        data: dict[str, Any] = {"step": result.step_id, "item": result.name}
        if status == "done":
            data["seconds"] = seconds
            data["artifacts"] = {p: str(a.path) for p, a in result.artifacts.items()}
        elif status == "cached":
            data["artifacts"] = {p: str(a.path) for p, a in result.artifacts.items()}
        elif status == "failed":
            data["error"] = error
        else:
            data["reason"] = error
        self.events.emit(event, **data)

    # -- inputs -------------------------------------------------------------------

    def _resolve_params(self, item: PlanItem, gen: Generator) -> Params:
        values: dict[str, Any] = {}
        for key, value in item.params.items():
            kind = P.field_kind(gen.Params, key)
            if isinstance(value, Binding):
                values[key] = self._bind(value, kind)
            elif isinstance(value, FileInput):
                values[key] = self._file(value.path)
            elif isinstance(value, list) and value and isinstance(value[0], FileInput):
                values[key] = [self._file(v.path) for v in value]
            else:
                values[key] = value
        values["seed"] = item.seed
        return gen.Params.model_validate(values)

    def _bind(self, binding: Binding, kind: str) -> Any:
        def artifacts(ref) -> list[Artifact]:
            return [self.results[name].artifacts[ref.port] for name in binding.items[ref]]

        if binding.mode == "list":
            out: list[Artifact] = []
            for entry in binding.template:
                ref = whole_ref(entry)
                out += artifacts(ref) if ref else [self._file(entry)]
            return out
        if binding.mode == "whole":
            art = artifacts(next(iter(binding.items)))[0]
            return art if kind == "media" else art.read_text()
        return interpolate(binding.template, {r: artifacts(r)[0].read_text() for r in binding.items})

    def _file(self, relative: str) -> Artifact:
        if relative not in self._files:
            path = (self.spec.base_dir / relative).resolve()
            if not path.is_file():
                raise UserError(f"input file {relative!r} not found ({path})")
            self._files[relative] = Artifact(
                path=path, media_type=media_type_of_file(path) or "application/octet-stream",
                sha256=sha256_file(path), size=path.stat().st_size)
        return self._files[relative]

    # -- bookkeeping --------------------------------------------------------------

    def _item_dir(self, item: PlanItem) -> Path:
        path = (self.run_dir / item.dirname).resolve()
        if path.parent != self.run_dir.resolve():  # names are validated; belt and braces
            raise UserError(f"item directory {item.dirname!r} would leave the run directory")
        return path

    def _provenance(self, run: StepRun, item_run: ItemRun) -> dict[str, Any]:
        info = self.host.plugins.get(run.plugin)
        return {
            "studio": __version__, "pipeline": self.spec.name, "step": run.step_id,
            "item": item_run.item.name, "generator": run.uses, "generator_version": run.generator.version,
            "plugin": run.plugin, "plugin_version": info.version if info else None,
            "params": _jsonable(item_run.params), "seed": item_run.item.seed,
            "precision": run.precision, "device": self.runtime.device if run.generator.uses_device else "cpu",
        }

    def _log_traceback(self, run: StepRun, exc: BaseException) -> None:
        with open(self.run_dir / "errors.log", "a", encoding="utf-8") as log:
            names = ", ".join(i.item.name for i in run.items)
            log.write(f"--- {time.strftime('%H:%M:%S')} step {run.step_id!r} ({run.uses}, plugin {run.plugin!r}) "
                      f"items: {names}\n")
            log.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
    if isinstance(exc, StudioError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _jsonable(params: Params) -> dict[str, Any]:
    out = {}
    for key in type(params).model_fields:
        value = getattr(params, key)
        if isinstance(value, Artifact):
            value = _input_record(value)
        elif isinstance(value, list) and value and isinstance(value[0], Artifact):
            value = [_input_record(v) for v in value]
        out[key] = canonical(value) if not isinstance(value, (dict, list)) else value
    return out


def _input_record(artifact: Artifact) -> dict[str, Any]:
    """An input as provenance records it: by content, and which item (or file) made it."""
    source = {"from": artifact.producer} if artifact.producer else {"file": artifact.path.name}
    return {**source, "sha256": artifact.sha256}
