"""Walks a plan: per item, cache lookup -> runtime -> generator -> writers.

Failure policy: an item that fails marks the items that need it as skipped; the rest
of the pipeline still runs, and every finished artifact is kept. Each failure has a
kind: "user" (the user's input is wrong: a UserError, parameters that do not
validate), "environment" (the machine: out of memory even alone, a full disk) or
"generator" (it crashed on valid input). A full or read-only disk stops the run, since
every later write would fail too. Ctrl-C stops at once, records what finished, and
leaves no partial file behind; after `kill -9` the run's journal still holds every
item that finished (see studio.manifest)."""

from __future__ import annotations

import os
import secrets
import shutil
import time
import traceback
from dataclasses import dataclass, replace
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from studio import params as P
from studio.artifacts import (atomic_write, fsync_dir, is_storage_problem, os_error_text,
                              sha256_file, write_json_atomic)
from studio.batch import BatchOutOfMemory, BatchResult, run_batch
from studio.cache import DamagedEntry, StepCache, cache_key, canonical
from studio.codehash import code_fingerprint
from studio.errors import MachineError, StorageError, StudioError, UserError, clip, echo
from studio.events import GuardedSink, Sink
from studio.generator import Artifact, Generator, Params, StepContext
from studio.history import link_latest
from studio.manifest import MANIFEST, Manifest
from studio.plan import Binding, FileInput, Plan, PlanItem, PlanStep
from studio.records import ItemResult, ItemRun, RunResult, RunStats, StepRun
from studio.refs import interpolate, whole_ref
from studio.registry import Registry
from studio.reopen import KEY as PIPELINE_KEY
from studio.reopen import encode as encode_pipeline
from studio.report import write_gallery, write_pipeline
from studio.runtime import Runtime, check_finite, free_memory, is_out_of_memory
from studio.version import __version__


class RunWarning(UserWarning):
    """Something the user should know that does not fail the run (the step cache is
    read-only ...). Also in the manifest's `warnings` and as a `warning` event."""


@dataclass
class StepWork:
    """A started step: the items left to make (cache misses) and how to batch them."""

    step: PlanStep
    template: StepRun  # the step's generator, plugin, runtime and precision, no items
    todo: list[ItemRun]
    batch_size: int

    def run(self, items: list[ItemRun]) -> StepRun:
        return replace(self.template, items=items)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class Executor:
    """Runs a plan in this process: the driver that owns the run directory, the step
    cache and the manifest, and hands batches to `run_batch`.

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
    ):
        self.registry = registry
        self.hooks = hooks
        self.plan = plan
        self.spec = plan.spec
        # the resolved pipeline, compressed, as every output file carries it
        self._pipeline_source = encode_pipeline(self.spec.data)
        self.out_given = Path(out)  # as the user wrote it, for messages
        # absolute, links kept: a run folder that is a link to another disk stays one
        self.out = Path(out).absolute()
        self.cache = StepCache(self.out / ".cache" / "steps") if use_cache else None
        self._cache_writable = True
        self._manifest_warned = False
        given = events or Sink()
        self.events = given if isinstance(given, GuardedSink) else GuardedSink(given)
        self.runtime = runtime
        self.stats = RunStats()
        self.results: dict[str, ItemResult] = {}
        self._generators: dict[str, Generator] = {}
        self._files: dict[str, Artifact] = {}

    def run(self) -> RunResult:
        if self.runtime is None:
            self.runtime = Runtime(self.spec.device, self.spec.precision)
        self.runtime.check_device()  # an unavailable GPU fails before anything is written
        for item in self.plan.items:
            self.results[item.name] = ItemResult(item.name, item.step_id, item.dirname, item.labels, item.seed)
        run_dir = self._make_run_dir()
        link_latest(run_dir)  # runs/<pipeline>/latest: this run, from its first moment
        self.events.emit("run_start", pipeline=self.spec.name, run_dir=str(run_dir), items=len(self.results))
        status = "interrupted"
        try:
            self.manifest.start_journal()
            self._run_steps()
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

    def executor_info(self) -> dict[str, Any]:
        """What ran the generators, for the manifest."""
        return {"name": "local"}

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
                                     self.executor_info())
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

    # -- one step -----------------------------------------------------------------

    def _generator(self, name: str) -> Generator:
        if name not in self._generators:
            self._generators[name] = self.registry.generator(name)()
        return self._generators[name]

    def _run_steps(self) -> None:
        """Every step in plan order, each to its end before the next starts. (A
        distributed executor overrides this to run independent steps at once.)"""
        for step in self.plan.steps:
            self._run_step(step)

    def _run_step(self, step: PlanStep) -> None:
        work = self._start_step(step)
        size = work.batch_size
        start = 0
        while start < len(work.todo):
            batch = work.todo[start:start + size]
            began = time.perf_counter()
            try:
                self._run_batch(work.run(batch))
            except BatchOutOfMemory as exc:
                error = str(exc.__cause__)
            else:
                if step.compile and start == 0:  # compiling happens on the first call: say what it cost
                    self.stats.first_batch_s[step.id] = round(time.perf_counter() - began, 3)
                start += len(batch)
                continue
            # the device's memory is the budget: halve the batch for the rest of the step. (Out
            # of the except clause, so the failed batch's tensors, held by its traceback, are freed.)
            size = max(1, len(batch) // 2)
            free_memory()
            self._batch_shrunk(step.id, len(batch), size, error)
        self.events.emit("step_done", step=step.id)

    def _batch_shrunk(self, step_id: str, tried: int, now: int, error: str) -> None:
        self.events.emit("batch_shrunk", step=step_id, tried=tried, now=now, error=error)
        self.stats.batch_shrunk[step_id] = now

    def _start_step(self, step: PlanStep) -> StepWork:
        """What a step leaves to run: each item's inputs resolved and checked, its cache
        key computed and a cached item restored; the rest, the cache misses, to be made in
        batches. Items whose upstream failed are skipped here."""
        gen = self._generator(step.uses)
        plugin = self.registry.plugin_of(step.uses)
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
            except Exception as exc:
                kind, error = self._parameter_failure(step, exc)
                self._finish(result, "failed", error=f"parameters: {error}", kind=kind)
                continue
            result.params = _jsonable(params)
            key = cache_key({
                "generator": gen.name, "version": gen.version, "code": code_fingerprint(type(gen)),
                "weights": gen.weights_id(params),
                "params": params, "seed": item.seed, "precision": precision,
                "device": device_kind,
            })
            result.cache_key = key
            item_dir = self._item_dir(item)
            if self.cache and self._restore(result, item_dir, key, step, gen):
                continue
            ctx = StepContext(
                step_id=step.id, item_name=item.name, seed=item.seed, runtime=self.runtime,
                precision=precision, labels=item.labels, compile=step.compile and gen.uses_device,
                on_progress=lambda done, total, name=item.name: self.events.emit(
                    "item_progress", step=step.id, item=name, done=done, total=total),
            )
            todo.append(ItemRun(item, params, ctx, item_dir, key))
        return StepWork(step, StepRun(step.id, step.uses, plugin, gen, self.runtime, precision, []), todo,
                        gen.max_batch_size if gen.batchable else 1)

    def _run_batch(self, run: StepRun) -> None:
        """Make one batch and record each item: saved, or failed with its kind."""
        for result in run_batch(run, self.hooks.run_step):
            self._record_batch(replace(run, items=result.items), result)

    def _record_batch(self, run: StepRun, result: BatchResult) -> None:
        if result.error is not None:
            kind, error = self._generator_failure(run, result.error)
            for item_run in run.items:
                self._finish(self.results[item_run.item.name], "failed", error=error, kind=kind)
            return
        for item_run, out in zip(run.items, result.outputs):
            self._save(run, item_run, out, result.seconds)

    def _generator_failure(self, run: StepRun, exc: Exception) -> tuple[str, str]:
        """The kind of a failed item and its message."""
        if isinstance(exc, MachineError):  # a cluster worker that kept dying ...
            return "environment", f"{run.uses}: {exc}"
        if isinstance(exc, UserError):
            return "user", f"{run.uses}: {exc}"
        self._log_traceback(run, exc)
        if is_out_of_memory(exc):
            return "environment", ("out of memory with a batch of 1: lower the sizes in its parameters "
                                   "(image size, steps, audio length, batch) or free memory "
                                   f"({_short_error(exc)})")
        if is_storage_problem(exc):
            return "environment", f"{run.uses}: {os_error_text(exc, writing=False)}"
        return "generator", f"{run.uses} (plugin {run.plugin!r}) raised {_short_error(exc)}"

    def _parameter_failure(self, step: PlanStep, exc: Exception) -> tuple[str, str]:
        """Resolved values that the generator's parameters refuse are the user's input."""
        if isinstance(exc, (ValidationError, UserError)):
            return "user", _short_error(exc)
        if isinstance(exc, OSError):  # an input file that cannot be read
            return "user", os_error_text(exc, writing=False)
        run = StepRun(step.id, step.uses, self.registry.plugin_of(step.uses), self._generator(step.uses),
                      self.runtime, "", [])
        self._log_traceback(run, exc)
        return "generator", _short_error(exc)

    def _save(self, run: StepRun, item_run: ItemRun, outputs: Any, seconds: float) -> None:
        result = self.results[item_run.item.name]
        try:
            self._write_outputs(run, item_run, outputs)
        except StorageError as exc:  # a full or read-only disk: this item fails, and the run stops
            self._finish(result, "failed", error=str(exc), kind="environment")
            raise
        except Exception as exc:
            self._log_traceback(run, exc)
            self._finish(result, "failed", error=f"{run.uses} (plugin {run.plugin!r}): {_short_error(exc)}",
                         kind="generator")
            return
        result.notes = dict(item_run.ctx.notes)
        # the cache before the journal: an item the journal calls finished is one the next run reuses
        self._store(item_run.cache_key, result)
        for artifact in result.artifacts.values():
            self.hooks.artifact_saved(artifact=artifact, step=run)
        self._finish(result, "done", seconds=seconds)

    def _write_outputs(self, run: StepRun, item_run: ItemRun, outputs: Any) -> None:
        """Check and write an item's outputs; an item is whole or absent."""
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
                writer = self.registry.writer(media_type)
                path = item_run.dir / f"{port}.{writer.extension}"
                try:
                    atomic_write(path, lambda tmp: writer.write(value, tmp, provenance))
                except OSError as exc:
                    if is_storage_problem(exc):
                        raise StorageError(os_error_text(exc, path)) from exc
                    raise  # e.g. PIL's "cannot write mode RGBA as JPEG": the generator's
                written.append(path)
                result.artifacts[port] = Artifact(
                    path=path, media_type=media_type, sha256=sha256_file(path), size=path.stat().st_size,
                    producer=item.name, labels=item.labels)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            result.artifacts.clear()
            raise

    def _restore(self, result: ItemResult, item_dir: Path, key: str, step: PlanStep, gen: Generator) -> bool:
        """Copy a cached item into the run. False (make it again) when the entry is
        missing, damaged, or not the shape of this generator's outputs."""
        entry = self.cache.lookup(key)
        if entry is None or {f.port: f.media_type for f in entry.files} != gen.outputs:
            return False
        try:
            for f in entry.files:
                self.cache.verify(f)  # content, kind and size, before a byte is copied
        except DamagedEntry:
            return False
        target = item_dir
        try:
            for f in entry.files:
                target = item_dir / f.path.name
                atomic_write(target, lambda tmp, f=f: self.cache.copy_out(f, tmp))
                result.artifacts[f.port] = Artifact(
                    path=target, media_type=f.media_type, sha256=f.sha256, size=target.stat().st_size,
                    producer=result.name, labels=result.labels)
        except DamagedEntry:
            self._discard(result)
            return False
        except OSError as exc:
            self._discard(result)
            raise StorageError(os_error_text(exc, target)) from exc
        result.notes = entry.notes
        self.cache.touch(key)
        run = StepRun(step.id, step.uses, self.registry.plugin_of(step.uses), gen, self.runtime, "", [])
        for artifact in result.artifacts.values():
            self.hooks.artifact_saved(artifact=artifact, step=run)
        self._finish(result, "cached", seconds=0.0)
        return True

    @staticmethod
    def _discard(result: ItemResult) -> None:
        for artifact in result.artifacts.values():
            artifact.path.unlink(missing_ok=True)
        result.artifacts.clear()

    def _store(self, key: str, result: ItemResult) -> None:
        """Keep a finished item in the step cache. A cache that cannot be written (full,
        read-only) costs only reuse later: warn once and go on without it."""
        if not self.cache or not self._cache_writable:
            return
        try:
            self.cache.store(key, result.artifacts, result.notes)
        except OSError as exc:
            self._cache_writable = False
            self._warn(f"the step cache is not written ({os_error_text(exc, self.cache.root)}); "
                       "this run's items are kept, but a later run will make them again")

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
        self._check_models(gen, values)
        values["seed"] = item.seed
        # validators may weigh the work against the device (image size x steps on a CPU)
        device = self.runtime.device if gen.uses_device else "cpu"
        return gen.Params.model_validate(values, context={"device": device, "base_dir": self.spec.base_dir})

    def _check_models(self, gen: Generator, values: dict[str, Any]) -> None:
        """A model parameter's value as validation checks it (see studio.spec), now that
        references are resolved: `model: '${steps.a.outputs.text}'` gets the same check
        as a literal path."""
        from studio.generator import model_spec
        from studio.modelpath import check_model

        for key, value in values.items():
            if key not in gen.Params.model_fields or not isinstance(value, str):
                continue
            wanted = model_spec(gen.Params, key)
            if wanted is None:
                continue
            try:
                resolved, problem = check_model(value, wanted, self.spec.base_dir)
            except (RuntimeError, ValueError, OSError) as exc:  # `~nobody/x`: no such home ...
                resolved, problem = value, f"cannot be used ({clip(str(exc), 200)})"
            if problem:
                raise UserError(f"{key}: {echo(value, 200)} {problem}")
            values[key] = resolved

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
            from studio.sniff import sniff

            path = (self.spec.base_dir / relative).resolve()
            if not path.is_file():
                raise UserError(f"input file {relative!r} not found ({path})")
            found = sniff(path)  # checked again: the file may have changed since validation
            if not found.ok:
                raise UserError(f"input file {relative!r} {found.problem or 'is not a file type Studio reads'}")
            self._files[relative] = Artifact(
                path=path, media_type=found.media_type, sha256=sha256_file(path), size=path.stat().st_size)
        return self._files[relative]

    # -- bookkeeping --------------------------------------------------------------

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
            "params": _jsonable(item_run.params), "seed": item_run.item.seed,
            "precision": run.precision, "device": self.runtime.device if run.generator.uses_device else "cpu",
            # the whole pipeline, to run again from this file alone (studio run FILE); not the
            # folder it ran in, so the same run in another folder writes the same bytes
            PIPELINE_KEY: self._pipeline_source,
        }

    def _log_traceback(self, run: StepRun, exc: BaseException) -> None:
        try:
            with open(self.run_dir / "errors.log", "a", encoding="utf-8") as log:
                names = ", ".join(i.item.name for i in run.items)
                log.write(f"--- {time.strftime('%H:%M:%S')} step {run.step_id!r} ({run.uses}, "
                          f"plugin {run.plugin!r}) items: {names}\n")
                # an error from a cluster's worker carries its traceback as text
                log.write(getattr(exc, "remote_traceback", None)
                          or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        except OSError:
            pass  # the item's message says what failed; the traceback is a bonus


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        # "field: message (got ...)" for a field, the message alone for a rule between fields
        return "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + str(e["msg"]).removeprefix("Value error, ")
            + (_received(e.get("input")) if e["loc"] else "")
            for e in exc.errors(include_url=False))
    if isinstance(exc, StudioError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _received(value: Any) -> str:
    """What a parameter received at run time, as a message shows it (clipped)."""
    if isinstance(value, str) and len(value) > 60:
        return f" (got a text of {len(value):,} characters: {echo(value[:40] + '...')})"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f" (got {echo(value)})"
    return ""


def _jsonable(params: Params) -> dict[str, Any]:
    out = {}
    for key in type(params).model_fields:
        value = getattr(params, key)
        if isinstance(value, Artifact):
            value = _input_record(value)
        elif isinstance(value, list) and value and isinstance(value[0], Artifact):
            value = [_input_record(v) for v in value]
        out[key] = canonical(value) if not isinstance(value, (dict, list)) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    """Lists and mappings as JSON has them, with entries that are pydantic models (a
    generator's structured parameters) as their fields."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _input_record(artifact: Artifact) -> dict[str, Any]:
    """An input as provenance records it: by content, and which item (or file) made it."""
    source = {"from": artifact.producer} if artifact.producer else {"file": artifact.path.name}
    return {**source, "sha256": artifact.sha256}
