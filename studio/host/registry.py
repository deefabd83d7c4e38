"""What the plugins registered: generators, artifact writers and trainers, each kept with
the plugin that registered it, so that dropping a broken plugin drops everything it
brought. Validation, planning and the executor look things up here; they never need
the plugin manager itself (studio.host.plugins fills a Registry and owns the hooks)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from studio.errors import PluginError, UserError, did_you_mean, echo
from studio.execute.artifacts import Writer
from studio.generator import GENERATOR_NAME, Generator, Params

HOST_PLUGIN = "studio"  # the host's own plugin (studio.host.builtin): the default writers
PORT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")


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


class Registry:
    """Plugins by name, and what each registered. Names are unique: a generator two
    plugins register is a conflict (neither is used) and a second trainer for one
    generator is refused; a plugin's writer replaces an earlier one for the same media
    type (the host's own come first)."""

    def __init__(self) -> None:
        self.plugins: dict[str, PluginInfo] = {}
        self.generators: dict[str, type[Generator]] = {}
        self.trainers: dict[str, type] = {}
        self.conflicts: dict[str, list[str]] = {}  # generator name -> the plugins that both registered it
        self._generator_owner: dict[str, str] = {}
        self._trainer_owner: dict[str, str] = {}
        self._writers: list[Writer] = []  # in registration order; the latest for a media type wins

    # -- registering (studio.host.plugins calls these while a plugin's hook runs) --------

    def add_plugin(self, info: PluginInfo) -> None:
        if info.name in self.plugins:  # two distributions use one entry-point name
            self.plugins[info.name].errors.append(f"a second plugin named {info.name!r} ({info.module}) was ignored")
        else:
            self.plugins[info.name] = info

    def add_generator(self, gen_cls: Any, plugin: str) -> None:
        check_generator_class(gen_cls)
        name = gen_cls.name
        if name in self._generator_owner or name in self.conflicts:
            owners = self.conflicts.setdefault(name, [self._generator_owner.pop(name, None)])
            owners.append(plugin)
            self.generators.pop(name, None)
            both = " and ".join(repr(o) for o in owners if o)
            for owner in owners:
                if owner:
                    self.plugins[owner].errors.append(
                        f"generator {name!r} is registered by both {both}; "
                        "uninstall one, or choose with STUDIO_LOAD_PLUGINS")
            return
        self.generators[name] = gen_cls
        self._generator_owner[name] = plugin
        self.plugins[plugin].generators.append(name)

    def add_writer(self, writer: Any, plugin: str) -> None:
        if not isinstance(writer, Writer):
            raise TypeError(f"register() takes a studio.Writer, got {writer!r}")
        extension = writer.extension.lstrip(".")
        if not EXTENSION.fullmatch(extension):  # it ends file names in the run directory
            raise ValueError(f"writer for {writer.media_type!r}: extension {writer.extension!r} "
                             f"must match {EXTENSION.pattern}")
        self._writers.append(Writer(writer.media_type, extension, writer.write, plugin))

    def add_trainer(self, trainer_cls: type, plugin: str) -> None:
        name = trainer_cls.generator
        if name in self.trainers:
            raise ValueError(f"a trainer for {name!r} is registered by both "
                             f"{self._trainer_owner[name]!r} and {plugin!r}")
        self.trainers[name] = trainer_cls
        self._trainer_owner[name] = plugin

    def drop(self, plugin: str, error: str) -> None:
        """Mark a plugin broken and forget everything it registered."""
        self.plugins[plugin].errors.append(error)
        for name, owner in list(self._generator_owner.items()):
            if owner == plugin:
                del self._generator_owner[name]
                self.generators.pop(name, None)
        for name, owner in list(self._trainer_owner.items()):
            if owner == plugin:
                del self._trainer_owner[name]
                self.trainers.pop(name, None)
        self._writers = [w for w in self._writers if w.plugin != plugin]

    # -- lookups ------------------------------------------------------------------

    @property
    def writers(self) -> dict[str, Writer]:
        return {w.media_type: w for w in self._writers}

    def generator(self, name: str) -> type[Generator]:
        if name in self.conflicts:
            owners = " and ".join(repr(o) for o in self.conflicts[name] if o)
            raise UserError(f"generator {name!r} is registered by both {owners}")
        if name not in self.generators:
            broken = {plugin: info.errors for plugin, info in self.plugins.items() if info.errors}
            raise UserError(unknown_generator_message(name, self.generators, broken))
        return self.generators[name]

    def writer(self, media_type: str) -> Writer:
        writers = self.writers
        if media_type not in writers:
            raise PluginError(f"no artifact writer for media type {media_type!r}; "
                              f"known: {', '.join(sorted(writers))}")
        return writers[media_type]

    def trainer(self, generator_name: str) -> type:
        if generator_name not in self.trainers:
            known = sorted(self.trainers)
            raise UserError(f"no trainer for {generator_name!r}." + did_you_mean(generator_name, known)
                            + f" Trainable generators: {', '.join(known) or 'none'}")
        return self.trainers[generator_name]

    def plugin_of(self, generator_name: str) -> str:
        return self._generator_owner.get(generator_name, "?")

    def plugin_version(self, plugin: str) -> str | None:
        info = self.plugins.get(plugin)
        return info.version if info else None


def unknown_generator_message(name: str, known: Iterable[str], broken: dict[str, list[str]] | None = None) -> str:
    known = sorted(known)
    msg = f"unknown generator {echo(name)}." + did_you_mean(name, known)
    msg += f" Registered: {', '.join(known) or 'none'} (see `studio plugins list`)."
    if broken:  # the generator may be one of theirs
        shown = "; ".join(f"{echo(plugin)} ({echo(errors[0][:200])})" for plugin, errors in sorted(broken.items())[:3])
        msg += (f" Plugins that failed to load, whose generators are missing: {shown}"
                + (f" and {len(broken) - 3} more" if len(broken) > 3 else "") + ".")
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
