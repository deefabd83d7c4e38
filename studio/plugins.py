"""The plugin host: discovers plugins through the "studio" entry-point group, keeps a
broken plugin from taking the CLI down, and owns the generator and writer registries.

Environment:
  STUDIO_LOAD_PLUGINS=a,b   load only these plugins (entry-point names); empty: none
  STUDIO_TRACE_PLUGINS=1    print every hook call to stderr
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Iterable

import pluggy

from studio import hookspecs
from studio.artifacts import Writer
from studio.errors import PluginError, UserError
from studio.generator import GENERATOR_NAME, Generator, Params

ENTRY_POINT_GROUP = "studio"
PORT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")
HOST_PLUGIN = "studio"


class PluginWarning(UserWarning):
    """A plugin failed to load or register; the rest of Studio carries on."""


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    generators: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class Host:
    """Plugin manager plus registries. Build one with `Host.load()`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("studio")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.generators: dict[str, type[Generator]] = {}
        self.generator_plugin: dict[str, str] = {}
        self.conflicts: dict[str, list[str]] = {}
        self.writers: dict[str, Writer] = {}
        self.trainers: dict[str, type] = {}
        self.trainer_plugin: dict[str, str] = {}
        self._objects: dict[str, Any] = {}
        self._current = HOST_PLUGIN  # plugin whose hook is running, for register()

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
        host = cls()
        if env.get("STUDIO_TRACE_PLUGINS", "") not in ("", "0"):
            host.pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            host.pm.enable_tracing()

        from studio import builtin

        host._add(HOST_PLUGIN, "studio.builtin", builtin)
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
                    host._record(info)
                    continue
                host._add(ep.name, ep.value, obj, info)
        for name, obj in extra:
            if allowed is None or name in allowed:
                host._add(name, getattr(obj, "__name__", repr(obj)), obj)
        host._reject_unknown_hooks()
        host.pm.check_pending()
        host._collect_writers()
        host._collect_generators()
        host._collect_trainers()
        for info in host.plugins.values():
            for error in info.errors:
                warnings.warn(f"plugin {info.name!r}: {error}", PluginWarning, stacklevel=2)
        return host

    def _record(self, info: PluginInfo) -> None:
        if info.name in self.plugins:  # two distributions use one entry-point name
            self.plugins[info.name].errors.append(
                f"a second plugin named {info.name!r} ({info.module}) was ignored"
            )
        else:
            self.plugins[info.name] = info

    def _add(self, name: str, module: str, obj: Any, info: PluginInfo | None = None) -> None:
        info = info or PluginInfo(name, module)
        if name in self.plugins:
            self._record(info)
            return
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:
            info.errors.append(f"failed to register: {exc}")
            self._record(info)
            return
        self._objects[name] = obj
        self._record(info)

    def _reject_unknown_hooks(self) -> None:
        known = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "studio_spec"))
        for hook_name in dir(self.pm.hook):
            caller = getattr(self.pm.hook, hook_name)
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                hint = difflib.get_close_matches(hook_name, known, n=1)
                self._fail(
                    impl.plugin_name,
                    f"implements unknown hook {hook_name!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; known hooks: {', '.join(known)}",
                )

    def _fail(self, plugin_name: str, error: str) -> None:
        """Mark a plugin broken and take it out of the hook calls."""
        self.plugins[plugin_name].errors.append(error)
        obj = self._objects.pop(plugin_name, None)
        if obj is not None:
            self.pm.unregister(obj)
        for gen_name, owner in list(self.generator_plugin.items()):
            if owner == plugin_name:
                del self.generator_plugin[gen_name]
                self.generators.pop(gen_name, None)

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
        def register(writer: Writer) -> None:
            if not isinstance(writer, Writer):
                raise TypeError(f"register() takes a studio.artifacts.Writer, got {writer!r}")
            plugin = self._current
            extension = writer.extension.lstrip(".")
            if not EXTENSION.fullmatch(extension):  # it ends file names in the run directory
                raise ValueError(f"writer for {writer.media_type!r}: extension {writer.extension!r} "
                                 f"must match {EXTENSION.pattern}")
            self.writers[writer.media_type] = Writer(writer.media_type, extension, writer.write, plugin)

        self.call_each("register_artifact_writers", register=register)

    def _collect_generators(self) -> None:
        def register(gen_cls: type[Generator]) -> None:
            plugin = self._current
            check_generator_class(gen_cls)
            name = gen_cls.name
            if name in self.generator_plugin or name in self.conflicts:
                owners = self.conflicts.setdefault(name, [self.generator_plugin.pop(name, None)])
                owners.append(plugin)
                self.generators.pop(name, None)
                both = " and ".join(repr(o) for o in owners if o)
                for owner in owners:
                    if owner:
                        self.plugins[owner].errors.append(
                            f"generator {name!r} is registered by both {both}; "
                            "uninstall one, or choose with STUDIO_LOAD_PLUGINS"
                        )
                return
            self.generators[name] = gen_cls
            self.generator_plugin[name] = plugin
            self.plugins[plugin].generators.append(name)

        self.call_each("register_generators", register=register)

    def _collect_trainers(self) -> None:
        from studio.training import Trainer

        def register(trainer_cls: type[Trainer]) -> None:
            plugin = self._current
            if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)):
                raise TypeError(f"register() takes a studio.training.Trainer subclass, got {trainer_cls!r}")
            name = trainer_cls.generator
            if name in self.trainers:
                raise ValueError(f"a trainer for {name!r} is registered by both "
                                 f"{self.trainer_plugin[name]!r} and {plugin!r}")
            self.trainers[name] = trainer_cls
            self.trainer_plugin[name] = plugin

        self.call_each("register_trainers", register=register)

    # -- lookups ------------------------------------------------------------------

    def trainer(self, generator_name: str) -> type:
        if generator_name not in self.trainers:
            known = sorted(self.trainers)
            hint = difflib.get_close_matches(generator_name, known, n=1)
            raise UserError(f"no trainer for {generator_name!r}."
                            + (f" Did you mean {hint[0]!r}?" if hint else "")
                            + f" Trainable generators: {', '.join(known) or 'none'}")
        return self.trainers[generator_name]

    def generator(self, name: str) -> type[Generator]:
        if name in self.conflicts:
            owners = " and ".join(repr(o) for o in self.conflicts[name] if o)
            raise UserError(f"generator {name!r} is registered by both {owners}")
        if name not in self.generators:
            raise UserError(unknown_generator_message(name, self.generators))
        return self.generators[name]

    def writer(self, media_type: str) -> Writer:
        if media_type not in self.writers:
            raise PluginError(
                f"no artifact writer for media type {media_type!r}; "
                f"known: {', '.join(sorted(self.writers))}"
            )
        return self.writers[media_type]

    def plugin_of(self, generator_name: str) -> str:
        return self.generator_plugin.get(generator_name, "?")


def unknown_generator_message(name: str, known: Iterable[str]) -> str:
    from studio.errors import echo

    known = sorted(known)
    hint = difflib.get_close_matches(str(name)[:200], known, n=1, cutoff=0.6)
    msg = f"unknown generator {echo(name)}."
    if hint:
        msg += f" Did you mean {hint[0]!r}?"
    msg += f" Registered: {', '.join(known) or 'none'} (see `studio plugins list`)."
    only = os.environ.get("STUDIO_LOAD_PLUGINS")
    if only is not None:  # a filter the user may have forgotten is set
        msg += f" Only the plugins named in STUDIO_LOAD_PLUGINS={echo(only)} are loaded; unset it to load all."
    return msg


def check_generator_class(gen_cls: Any) -> None:
    """What register() insists on; a violation is reported against the plugin."""
    if not (isinstance(gen_cls, type) and issubclass(gen_cls, Generator)):
        raise TypeError(f"register() takes a Generator subclass, got {gen_cls!r}")
    if not GENERATOR_NAME.fullmatch(gen_cls.name or ""):
        raise ValueError(
            f"{gen_cls.__name__}.name is {gen_cls.name!r}; it must look like "
            "'<modality>.<name>' in lower case, e.g. 'image.diffusion'"
        )
    if not gen_cls.outputs:
        raise ValueError(f"{gen_cls.__name__} declares no output ports")
    for port in gen_cls.outputs:
        if not PORT_NAME.fullmatch(port):  # ports name files in the run directory
            raise ValueError(f"{gen_cls.__name__}: output port {port!r} must match {PORT_NAME.pattern}")
    if not (isinstance(gen_cls.Params, type) and issubclass(gen_cls.Params, Params)):
        raise TypeError(f"{gen_cls.__name__}.Params must subclass studio.Params")
    bad = set(gen_cls.precisions) - {"fp32", "bf16", "fp16"}
    if bad or not gen_cls.precisions:
        raise ValueError(f"{gen_cls.__name__}.precisions {gen_cls.precisions!r} must name fp32, bf16, fp16")
