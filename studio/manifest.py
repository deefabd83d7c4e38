"""The run directory's manifest.json: what ran, with what, how it went, and every
artifact with its hash. Written when the run starts and after every item, atomically,
so even an interrupted run leaves a truthful record."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio import __version__
from studio.artifacts import write_json_atomic
from studio.errors import UserError

if TYPE_CHECKING:
    from studio.executor import ItemResult
    from studio.plan import Plan
    from studio.plugins import Host
    from studio.runtime import Runtime

MANIFEST = "manifest.json"


def versions(host: Host) -> dict[str, Any]:
    out: dict[str, Any] = {"studio": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    out["plugins"] = {n: p.version for n, p in host.plugins.items() if p.ok and n != "studio"}
    return out


class Manifest:
    def __init__(self, run_dir: Path, plan: Plan, host: Host, runtime: Runtime, results: dict[str, ItemResult]):
        self.path = run_dir / MANIFEST
        self.run_dir = run_dir
        self.plan = plan
        self.host = host
        self.runtime = runtime
        self.results = results
        self.started = time.time()
        self._written = 0.0

    def write(self, status: str, *, at_most_every_s: float = 0.0) -> None:
        """Write the manifest now, or (with at_most_every_s) only if the last write is
        that old: a 1,000-item sweep should not rewrite a growing file 1,000 times."""
        now = time.monotonic()
        if at_most_every_s and now - self._written < at_most_every_s:
            return
        self._written = now
        spec = self.plan.spec
        steps = {}
        for step in self.plan.steps:
            steps[step.id] = {
                "uses": step.uses,
                "plugin": self.host.plugin_of(step.uses),
                "status": _step_status([self.results[i.name].status for i in step.items]),
                "items": [self._item(self.results[i.name]) for i in step.items],
            }
        write_json_atomic(self.path, {
            "pipeline": spec.name,
            "source": str(spec.source) if spec.source else None,
            "run_dir": str(self.run_dir),
            "status": status,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "seconds": round(time.time() - self.started, 3),
            "seed": spec.seed,
            "runtime": self.runtime.describe(),
            "versions": versions(self.host),
            "resolved_pipeline": spec.data,
            "steps": steps,
        })

    def _item(self, r: ItemResult) -> dict[str, Any]:
        return {
            "name": r.name, "dir": r.dir, "status": r.status, "labels": r.labels, "seed": r.seed,
            "params": r.params, "seconds": None if r.seconds is None else round(r.seconds, 4),
            "error": r.error, "cache_key": r.cache_key, "notes": r.notes,
            "artifacts": {
                port: {"path": str(a.path.relative_to(self.run_dir)), "media_type": a.media_type,
                       "sha256": a.sha256, "size": a.size}
                for port, a in r.artifacts.items()
            },
        }


def _step_status(statuses: list[str]) -> str:
    for status in ("failed", "interrupted", "skipped", "pending"):
        if status in statuses:
            return status
    return "cached" if statuses and all(s == "cached" for s in statuses) else "done"


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise UserError(f"{run_dir}: no {MANIFEST} here; give a run directory, e.g. runs/<pipeline>/<run-id>")
    try:
        return json.loads(path.read_text("utf-8"))
    except ValueError as exc:
        raise UserError(f"{path}: not a valid manifest ({exc})")
