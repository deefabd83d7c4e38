"""Walks a plan: per item, inputs -> step cache -> generator -> writers.

The executor owns the run: the run folder, the items' inputs (studio.execute.item_inputs), the
step cache and the output files (studio.execute.item_outputs), the journal and the manifest. A
scheduler (studio.execute.scheduling) decides what runs next and where a batch runs: in this
process (`LocalScheduler`, the default) or on a Ray cluster (studio.execute.cluster); it sees the
executor through the public methods of `studio.execute.scheduling.Driver` only.

Failure policy: an item that fails marks the items that need it as skipped; the rest
of the pipeline still runs, and every finished artifact is kept. Each failure has a
kind (see studio.execute.failures): "user", "environment" or "generator". A full or read-only
disk stops the run, since every later write would fail too. Ctrl-C stops at once,
records what finished, and leaves no partial file behind; after `kill -9` the run's
journal still holds every item that finished (see studio.execute.manifest)."""

from __future__ import annotations

import os
import secrets
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from studio.errors import MachineError, StorageError, UserError
from studio.execute.artifacts import fsync_dir, is_storage_problem, os_error_text, write_json_atomic
from studio.execute.batch import BatchResult
from studio.execute.cache import StepCache, cache_key
from studio.execute.codehash import code_fingerprint
from studio.execute.events import GuardedSink, Sink
from studio.execute.failures import generator_failure, output_failure, parameter_failure
from studio.execute.item_inputs import ItemInputs, jsonable
from studio.execute.item_outputs import ItemOutputs
from studio.execute.manifest import MANIFEST, Manifest
from studio.execute.records import ItemResult, ItemRun, RunResult, RunStats, StepRun
from studio.execute.runtime import Runtime
from studio.execute.scheduling import LocalScheduler, Scheduler, StepWork
from studio.generator import Generator, StepContext
from studio.host.registry import Registry
from studio.pipeline.imageformat import PNG, ImageFormat
from studio.pipeline.plan import Plan, PlanItem, PlanStep
from studio.runs.history import link_latest
from studio.runs.reopen import KEY as PIPELINE_KEY
from studio.runs.reopen import encode as encode_pipeline
from studio.runs.report import write_gallery, write_pipeline
from studio.version import __version__

__all__ = ["Executor", "RunResult", "RunWarning", "StepWork", "new_run_id"]


class RunWarning(UserWarning):
    """Something the user should know that does not fail the run (the step cache is
    read-only ...). Also in the manifest's `warnings` and as a `warning` event."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class Executor:
    """Runs a plan: the driver that owns the run directory, the step cache and the
    manifest, and hands batches to its scheduler (in this process unless told).

    `registry` is what the plugins registered; `hooks` calls their hooks (`run_step`,
    `artifact_saved`): a Host gives both (`host.registry`, `host.hooks`)."""

    def __init__(
        self,
        registry: Registry,
        hooks: Any,
        plan: Plan,
        *,
        out: Path,
        use_cache: bool = True,
        events: Sink | None = None,
        runtime: Runtime | None = None,
        scheduler: Scheduler | None = None,
    ):
        self.registry = registry
        self.hooks = hooks
        self.plan = plan
        self.spec = plan.spec
        self.scheduler: Scheduler = scheduler or LocalScheduler()
        # the resolved pipeline, compressed, as every output file carries it
        self._pipeline_source = encode_pipeline(self.spec.data)
        self.out_given = Path(out)  # as the user wrote it, for messages
        # absolute, links kept: a run folder that is a link to another disk stays one
        self.out = Path(out).absolute()
        self.cache = StepCache(self.out / ".cache" / "steps") if use_cache else None
        self._manifest_warned = False
        given = events or Sink()
        self.events = given if isinstance(given, GuardedSink) else GuardedSink(given)
        self.runtime = runtime
        self.stats = RunStats()
        self.results: dict[str, ItemResult] = {}
        self._generators: dict[str, Generator] = {}
        self.inputs = ItemInputs(self.spec.base_dir, self.results, self.spec.models)
        self.outputs = ItemOutputs(registry, self.cache, self._warn)
        self._image_formats = {step.id: step.image_format for step in plan.steps}  # each step's `format:`

    def run(self) -> RunResult:
        """Run the plan into a new run folder. The scheduler joins what runs the batches
        before anything is written, and lets go of it however the run ends."""
        self.runtime = self.scheduler.start(self.runtime, self.spec)
        result = None
        try:
            result = self._run()
        finally:
            self.scheduler.finish(result.run_dir if result else None)
        return result

    def _run(self) -> RunResult:
        self.runtime.check_device()  # an unavailable GPU fails before anything is written
        for item in self.plan.items:
            self.results[item.name] = ItemResult(item.name, item.step_id, item.dirname, item.labels, item.seed)
        run_dir = self._make_run_dir()
        link_latest(run_dir)  # runs/<pipeline>/latest: this run, from its first moment
        self.events.emit("run_start", pipeline=self.spec.name, run_dir=str(run_dir), items=len(self.results))
        status = "interrupted"
        try:
            self.manifest.start_journal()
            self.scheduler.run_steps(self)
            status = "failed" if any(r.status == "failed" for r in self.results.values()) else "done"
        except MachineError as exc:  # a full disk, a broken cluster: stop, keep what finished
            self.manifest.error, status = str(exc), "failed"
        except OSError as exc:  # a file problem no step put in words
            where = exc.filename or (f"a file in {run_dir}" if is_storage_problem(exc) else None)
            self.manifest.error, status = os_error_text(exc, where, writing=False), "failed"
        finally:
            self._end_run(status)
        return RunResult(run_dir, status, self.results, self.manifest.path, self.manifest.error,
                         list(self.manifest.warnings))

    def _make_run_dir(self) -> Path:
        """OUT/<pipeline>/<run-id>, made under a hidden name with its first manifest and
        renamed into place: a run folder always has a manifest that says what it is."""
        if self.out.exists() and not self.out.is_dir():
            raise StorageError(f"cannot write to {self.out_given}: it is a file, not a folder; "
                               "give --out a folder")
        parent = self.out / self.spec.name
        for _ in range(5):
            run_dir = parent / new_run_id()
            building = parent / f".{run_dir.name}.partial-{os.getpid()}"
            self.manifest = Manifest(run_dir, self.plan, self.registry, self.runtime, self.stats, self.results,
                                     self.scheduler.describe())
            try:
                building.mkdir(parents=True)
            except OSError as exc:
                raise self._out_error(exc) from None
            try:
                write_json_atomic(building / MANIFEST, self.manifest.as_dict("running"))
                if run_dir.exists():
                    continue  # another run took this id in the same second
                os.rename(building, run_dir)
            except OSError as exc:
                raise self._out_error(exc) from None
            finally:
                shutil.rmtree(building, ignore_errors=True)  # gone once renamed
            fsync_dir(parent)
            self.run_dir = run_dir
            return run_dir
        raise StorageError(f"cannot make a run folder in {parent}: every name tried is taken")

    def _out_error(self, exc: OSError) -> StorageError:
        """Why the run folder cannot be made, naming the path in the way and what to do."""
        if is_storage_problem(exc):  # a full or read-only disk is --out's
            return StorageError(os_error_text(exc, self.out_given))
        parent = self.out / self.spec.name
        for blocker in [parent, *parent.parents]:
            if os.path.islink(blocker) and not blocker.exists():
                return StorageError(f"cannot make the run folder: {blocker} is a symbolic link to "
                                    f"{os.readlink(blocker)}, which does not exist; create that folder or "
                                    "remove the link")
            if blocker.exists() and not blocker.is_dir():
                return StorageError(f"cannot make the run folder: {blocker} is a file, not a folder; move it "
                                    "away or give --out another folder")
        return StorageError(f"cannot make the run folder in {parent}: {exc.strerror or exc}. Give --out a "
                            "folder you can write to, e.g. --out runs")

    def _end_run(self, status: str) -> None:
        """Record how the run ended. Never raises for a file problem: a full disk must
        not hide the run's outcome, and the journal already holds every finished item."""
        stopped = "not made: the run stopped early" if self.manifest.error else None
        for r in self.results.values():
            if r.status == "pending":
                r.status, r.error = "interrupted", stopped
        try:
            self.manifest.write(status)
        except OSError as exc:
            self.manifest.error = self.manifest.error or (
                f"{os_error_text(exc, self.manifest.path)} (journal.jsonl records every finished item)")
            try:
                self.manifest.record_end(status)
            except OSError:
                pass  # the journal's item lines still tell what finished
            self.manifest.journal.close()
        else:
            self.manifest.journal.remove()  # the manifest now says all the journal did
        steps = {s.id: [self.results[i.name] for i in s.items] for s in self.plan.steps}
        try:
            write_pipeline(self.run_dir, self.spec.data, str(self.spec.source))
            write_gallery(self.run_dir, self.spec.name, status, steps, self.spec.description)
        except OSError as exc:
            self._warn(f"gallery.html is not written ({os_error_text(exc, self.run_dir / 'gallery.html')})")
        self.events.emit("run_done", status=status, run_dir=str(self.run_dir))

    # -- what a scheduler calls (studio.execute.scheduling.Driver) ----------------------------

    def start_step(self, step: PlanStep) -> StepWork:
        """What a step leaves to run: each item's inputs resolved and checked, its cache
        key computed and a cached item restored; the rest, the cache misses, to be made in
        batches. Items whose upstream failed are skipped here."""
        gen = self._generator(step.uses)
        plugin = self.registry.plugin_of(step.uses)
        precision = self.runtime.precision_for(gen.precisions) if gen.uses_device else "fp32"
        self.events.emit("step_start", step=step.id, uses=step.uses, items=len(step.items), precision=precision)
        bare = StepRun(step.id, step.uses, plugin, gen, self.runtime, "", [])  # names the step, no items
        todo: list[ItemRun] = []
        for item in step.items:
            result = self.results[item.name]
            broken = [d for d in item.deps if not self.results[d].ok]
            if broken:
                self._finish(result, "skipped", error=f"upstream item {broken[0]!r} did not finish")
                continue
            try:
                params = self.inputs.resolve(item, gen, self.runtime.device if gen.uses_device else "cpu")
            except Exception as exc:
                kind, error = parameter_failure(bare, exc, self.run_dir)
                self._finish(result, "failed", error=f"parameters: {error}", kind=kind)
                continue
            result.params = jsonable(params)
            result.cache_key = self._cache_key(gen, params, item, precision, step.image_format)
            item_dir = self._item_dir(item)
            if self.outputs.restore(result, item_dir, result.cache_key, gen, step.image_format):
                for artifact in result.artifacts.values():
                    self.hooks.artifact_saved(artifact=artifact, step=bare)
                self._finish(result, "cached", seconds=0.0)
                continue
            todo.append(ItemRun(item, params, self._context(step, item, gen, precision), item_dir,
                                result.cache_key))
        return StepWork(step, StepRun(step.id, step.uses, plugin, gen, self.runtime, precision, []), todo,
                        gen.max_batch_size if gen.batchable else 1)

    def record(self, run: StepRun, result: BatchResult) -> None:
        """Record the items of `run` with what their batch gave: each saved, or all
        failed with the failure's kind."""
        if result.error is not None:
            kind, error = generator_failure(run, result.error, self.run_dir)
            for item_run in run.items:
                self._finish(self.results[item_run.item.name], "failed", error=error, kind=kind)
            return
        for item_run, out in zip(run.items, result.outputs):
            self._save(run, item_run, out, result.seconds)

    def batch_shrunk(self, step_id: str, tried: int, now: int, error: str) -> None:
        self.events.emit("batch_shrunk", step=step_id, tried=tried, now=now, error=error)
        self.stats.batch_shrunk[step_id] = now

    def step_done(self, step_id: str) -> None:
        self.events.emit("step_done", step=step_id)

    # -- one item -------------------------------------------------------------------

    def _generator(self, name: str) -> Generator:
        if name not in self._generators:
            self._generators[name] = self.registry.generator(name)()
        return self._generators[name]

    def _cache_key(self, gen: Generator, params: Any, item: PlanItem, precision: str,
                   image_format: ImageFormat) -> str:
        parts = {
            "generator": gen.name, "version": gen.version, "code": code_fingerprint(type(gen)),
            "weights": gen.weights_id(params),
            "params": params, "seed": item.seed, "precision": precision,
            "device": self.runtime.device.split(":")[0] if gen.uses_device else "any",
        }
        if image_format.cache_part() is not None:  # JPEG or WebP: other files; a PNG's key is as it was
            parts["image_format"] = image_format.cache_part()
        return cache_key(parts)

    def _context(self, step: PlanStep, item: PlanItem, gen: Generator, precision: str) -> StepContext:
        return StepContext(
            step_id=step.id, item_name=item.name, seed=item.seed, runtime=self.runtime,
            precision=precision, labels=item.labels, compile=step.compile and gen.uses_device,
            on_progress=lambda done, total, name=item.name: self.events.emit(
                "item_progress", step=step.id, item=name, done=done, total=total),
        )

    def _save(self, run: StepRun, item_run: ItemRun, outputs: Any, seconds: float) -> None:
        result = self.results[item_run.item.name]
        try:
            self.outputs.write(run, item_run, outputs, result, self._provenance(run, item_run),
                               self._image_formats.get(run.step_id, PNG))
        except StorageError as exc:  # a full or read-only disk: this item fails, and the run stops
            self._finish(result, "failed", error=str(exc), kind="environment")
            raise
        except Exception as exc:
            self._finish(result, "failed", error=output_failure(run, exc, self.run_dir), kind="generator")
            return
        result.notes = dict(item_run.ctx.notes)
        # the cache before the journal: an item the journal calls finished is one the next run reuses
        self.outputs.store(item_run.cache_key, result)
        for artifact in result.artifacts.values():
            self.hooks.artifact_saved(artifact=artifact, step=run)
        self._finish(result, "done", seconds=seconds)

    def _finish(self, result: ItemResult, status: str, *, error: str | None = None, kind: str | None = None,
                seconds: float | None = None) -> None:
        result.status, result.error, result.error_kind, result.seconds = status, error, kind, seconds
        try:
            self.manifest.record(result)
        except OSError as exc:  # the journal is the run's record: without it, stop
            raise StorageError(os_error_text(exc, self.manifest.journal.path)) from exc
        self._update_manifest()
        event = {"done": "item_done", "cached": "item_cached", "failed": "item_error", "skipped": "item_skipped"}[status]
        data: dict[str, Any] = {"step": result.step_id, "item": result.name}
        if status == "done":
            data["seconds"] = seconds
            data["artifacts"] = {p: str(a.path) for p, a in result.artifacts.items()}
        elif status == "cached":
            data["artifacts"] = {p: str(a.path) for p, a in result.artifacts.items()}
        elif status == "failed":
            data["error"] = error
            data["kind"] = kind
        else:
            data["reason"] = error
        self.events.emit(event, **data)

    def _update_manifest(self) -> None:
        """manifest.json at most once a second while running (the run's end always
        writes it). Failing is no loss: the journal has every finished item."""
        try:
            self.manifest.write("running", at_most_every_s=1.0)
        except OSError as exc:
            if not self._manifest_warned:
                self._manifest_warned = True
                self._warn(f"manifest.json is not updated ({os_error_text(exc, self.manifest.path)}); "
                           "journal.jsonl records every finished item")

    def _warn(self, message: str) -> None:
        self.manifest.warnings.append(message)
        self.events.emit("warning", message=message)
        warnings.warn(message, RunWarning, stacklevel=2)

    def _item_dir(self, item: PlanItem) -> Path:
        # Names are validated; belt and braces: one plain name directly below the run
        # folder, compared without resolving links (the run folder may be a link to
        # another disk, and artifact paths are recorded relative to it).
        name = item.dirname
        path = self.run_dir / name
        if name in ("", ".", "..") or "\0" in name or path.parent != self.run_dir or path.name != name:
            raise UserError(f"item directory {name!r} would leave the run directory")
        return path

    def _provenance(self, run: StepRun, item_run: ItemRun) -> dict[str, Any]:
        return {
            "studio": __version__, "pipeline": self.spec.name, "step": run.step_id,
            "item": item_run.item.name, "generator": run.uses, "generator_version": run.generator.version,
            "plugin": run.plugin, "plugin_version": self.registry.plugin_version(run.plugin),
            "params": jsonable(item_run.params), "seed": item_run.item.seed,
            "precision": run.precision, "device": self.runtime.device if run.generator.uses_device else "cpu",
            # the whole pipeline, to run again from this file alone (studio run FILE); not the
            # folder it ran in, so the same run in another folder writes the same bytes
            PIPELINE_KEY: self._pipeline_source,
        }
