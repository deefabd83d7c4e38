"""The plugin host: discovers plugins through the "studio" entry-point group, keeps a
broken plugin from taking the CLI down, and fills the registry (studio.host.registry) with
what each plugin registers.

Environment:
  STUDIO_LOAD_PLUGINS=a,b   load only these plugins (entry-point names); empty: none
  STUDIO_TRACE_PLUGINS=1    print every hook call to stderr
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib.metadata import entry_points
from typing import Any, Iterable

import pluggy

from studio import hookspecs
from studio.errors import did_you_mean
from studio.host.registry import HOST_PLUGIN, PluginInfo, Registry

ENTRY_POINT_GROUP = "studio"


class PluginWarning(UserWarning):
    """A plugin failed to load or register; the rest of Studio carries on."""


class Host:
    """The plugin manager and the registry its plugins filled. Build one with
    `Host.load()`; what runs a pipeline needs only `host.registry` and `host.hooks`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("studio")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self._objects: dict[str, Any] = {}
        self._current = HOST_PLUGIN  # plugin whose hook is running, for register()
        self.recipe: dict[str, Any] = {}  # Host.load's arguments (see load)

    @property
    def hooks(self) -> Any:
        """The hooks the executor calls (`run_step`, `artifact_saved`)."""
        return self.pm.hook

    # -- loading ------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        *,
        entry_points_group: str | None = ENTRY_POINT_GROUP,
        extra: Iterable[tuple[str, Any]] = (),
        env: dict[str, str] | None = None,
    ) -> Host:
        """Discover and register plugins. `extra` adds (name, module-or-object) pairs,
        registered exactly as if they came from an entry point (tests use this)."""
        env = os.environ if env is None else env
        extra = list(extra)
        host = cls()
        # how to load the same plugins again in another process (a cluster's workers)
        host.recipe = {"entry_points_group": entry_points_group, "extra": extra,
                       "env": {k: env[k] for k in ("STUDIO_LOAD_PLUGINS",) if k in env}}
        if env.get("STUDIO_TRACE_PLUGINS", "") not in ("", "0"):
            host.pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            host.pm.enable_tracing()
            host.pm.add_hookcall_monitoring(_trace_before, _trace_after)

        from studio.host import builtin

        host._add(HOST_PLUGIN, "studio.host.builtin", builtin)
        only = env.get("STUDIO_LOAD_PLUGINS")
        allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        if entry_points_group:
            for ep in entry_points(group=entry_points_group):
                if allowed is not None and ep.name not in allowed:
                    continue
                info = PluginInfo(
                    ep.name,
                    ep.value,
                    ep.dist.name if ep.dist else None,
                    ep.dist.version if ep.dist else None,
                )
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken plugin is reported, never fatal
                    info.errors.append(f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}")
                    host.registry.add_plugin(info)
                    continue
                host._add(ep.name, ep.value, obj, info)
        for name, obj in extra:
            if host._objects.get(name) is obj:  # a plugin's own tests naming it while it is installed
                continue
            if allowed is None or name in allowed:
                host._add(name, getattr(obj, "__name__", repr(obj)), obj)
        host._reject_unknown_hooks()
        host.pm.check_pending()
        host._collect_writers()
        host._collect_generators()
        host._collect_trainers()
        for info in host.registry.plugins.values():
            for error in info.errors:
                warnings.warn(f"plugin {info.name!r}: {error}", PluginWarning, stacklevel=2)
        return host

    def _add(self, name: str, module: str, obj: Any, info: PluginInfo | None = None) -> None:
        info = info or PluginInfo(name, module)
        if name in self.registry.plugins:
            self.registry.add_plugin(info)
            return
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:
            info.errors.append(f"failed to register: {exc}")
            self.registry.add_plugin(info)
            return
        self._objects[name] = obj
        self.registry.add_plugin(info)

    def _reject_unknown_hooks(self) -> None:
        known = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "studio_spec"))
        for hook_name in dir(self.pm.hook):
            caller = getattr(self.pm.hook, hook_name)
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                self._fail(impl.plugin_name, f"implements unknown hook {hook_name!r}."
                           + did_you_mean(hook_name, known) + f" Known hooks: {', '.join(known)}")

    def _fail(self, plugin_name: str, error: str) -> None:
        """Mark a plugin broken: out of the hook calls, and everything it registered
        out of the registry."""
        self.registry.drop(plugin_name, error)
        obj = self._objects.pop(plugin_name, None)
        if obj is not None:
            self.pm.unregister(obj)

    def call_each(self, hook_name: str, **kwargs: Any) -> None:
        """Call a hook plugin by plugin, so one that raises is reported and dropped
        instead of failing the others."""
        for name in list(self._objects):
            others = [o for n, o in self._objects.items() if n != name]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            try:
                self._current = name
                caller(**kwargs)
            except Exception as exc:
                self._fail(name, f"hook {hook_name} raised {type(exc).__name__}: {exc}")

    def _collect_writers(self) -> None:
        self.call_each("register_artifact_writers",
                       register=lambda writer: self.registry.add_writer(writer, self._current))

    def _collect_generators(self) -> None:
        self.call_each("register_generators",
                       register=lambda gen_cls: self.registry.add_generator(gen_cls, self._current))

    def _collect_trainers(self) -> None:
        from studio.training import Trainer

        def register(trainer_cls: type[Trainer]) -> None:
            if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)):
                raise TypeError(f"register() takes a studio.Trainer subclass, got {trainer_cls!r}")
            self.registry.add_trainer(trainer_cls, self._current)

        self.call_each("register_trainers", register=register)


_default: Host | None = None


def default_host() -> Host:
    """The process-wide plugin host, loaded on first use (the CLI and the Python API
    share it)."""
    global _default
    if _default is None:
        _default = Host.load()
    return _default


def _trace_before(hook_name: str, implementations: list, kwargs: dict) -> None:
    """STUDIO_TRACE_PLUGINS: which plugins a hook call reaches, in the order they run."""
    names = ", ".join(impl.plugin_name for impl in reversed(implementations)) or "no plugin"
    print(f"studio: hook {hook_name} -> {names}", file=sys.stderr)


def _trace_after(outcome, hook_name: str, implementations: list, kwargs: dict) -> None:
    if outcome.exception is not None:
        print(f"studio: hook {hook_name} raised {type(outcome.exception).__name__}: {outcome.exception}",
              file=sys.stderr)
