"""An item's output files: written by the media type's writer, restored from the step
cache, kept in it. An item is whole or absent: a write that fails removes what the item
had written, a restore that fails removes what it had copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from studio.errors import StorageError
from studio.execute.artifacts import atomic_write, image_writer, is_storage_problem, os_error_text, sha256_file
from studio.execute.cache import DamagedEntry, StepCache
from studio.execute.records import ItemResult, ItemRun, StepRun
from studio.execute.runtime import check_finite
from studio.generator import Artifact, Generator
from studio.host.registry import Registry
from studio.pipeline.imageformat import PNG, ImageFormat


class ItemOutputs:
    """Writes items' outputs into the run folder; `cache` is the step cache (None with
    --no-cache); `warn` tells the user something that does not fail the run."""

    def __init__(self, registry: Registry, cache: StepCache | None, warn: Callable[[str], None]):
        self.registry = registry
        self.cache = cache
        self.warn = warn
        self._cache_writable = True

    def write(self, run: StepRun, item_run: ItemRun, outputs: Any, result: ItemResult,
              provenance: dict[str, Any], image_format: ImageFormat = PNG) -> None:
        """Check and write an item's outputs into `result.artifacts`, its image outputs
        in `image_format` (the step's `format:`). Raises StorageError for a full or
        read-only disk, else what the checks or the writer raised (the generator's fault)."""
        gen, item = run.generator, item_run.item
        written: list[Path] = []
        try:
            if not isinstance(outputs, dict) or set(outputs) != set(gen.outputs):
                got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
                raise RuntimeError(f"returned outputs {got}, but it declares {sorted(gen.outputs)}")
            for port, declared in gen.outputs.items():
                value = outputs[port]
                check_finite(value, f"step {run.step_id!r} item {item.name!r} output {port!r}")
                media_type = image_format.output(declared)
                # PNG through the registry as ever (a plugin may replace it); JPEG and WebP at the step's quality
                writer = self.registry.writer(media_type) if media_type == declared else image_writer(image_format)
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

    def restore(self, result: ItemResult, item_dir: Path, key: str, gen: Generator,
                image_format: ImageFormat = PNG) -> bool:
        """Copy a cached item into the run. False (make it again) when there is no
        cache, or the entry is missing, damaged, or not the shape of this generator's
        outputs as `image_format` writes them."""
        if not self.cache:
            return False
        entry = self.cache.lookup(key)
        expected = {port: image_format.output(declared) for port, declared in gen.outputs.items()}
        if entry is None or {f.port: f.media_type for f in entry.files} != expected:
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
            _discard(result)
            return False
        except OSError as exc:
            _discard(result)
            raise StorageError(os_error_text(exc, target)) from exc
        result.notes = entry.notes
        self.cache.touch(key)
        return True

    def store(self, key: str, result: ItemResult) -> None:
        """Keep a finished item in the step cache. A cache that cannot be written (full,
        read-only) costs only reuse later: warn once and go on without it."""
        if not self.cache or not self._cache_writable:
            return
        try:
            self.cache.store(key, result.artifacts, result.notes)
        except OSError as exc:
            self._cache_writable = False
            self.warn(f"the step cache is not written ({os_error_text(exc, self.cache.root)}); "
                      "this run's items are kept, but a later run will make them again")


def _discard(result: ItemResult) -> None:
    for artifact in result.artifacts.values():
        artifact.path.unlink(missing_ok=True)
    result.artifacts.clear()
