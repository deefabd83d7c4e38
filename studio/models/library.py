"""The models in the folders a user names, indexed by kind and name.

Folders come from `--models DIR` (in the order given), then STUDIO_MODELS (os.pathsep
between them). A name is a model's path below its kind folder without the suffix
(`sdxl/juggernaut`), or just its last part (`juggernaut`) when that is unique. When two
folders hold the same name, the first folder given wins, and a warning says which was
taken and why. Each kind is scanned when first asked for, once per library."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import clip, did_you_mean, printable
from studio.models.layout import KINDS, KindFolder, kind_folders
from studio.models.scan import MODEL_SUFFIXES, ModelFile, scan_folder

ENV = "STUDIO_MODELS"


def _too_wide(real: str) -> bool:
    """A folder no model folder is: the root, a top-level system folder (/usr, /home) or
    the home folder (an extra_model_paths.yaml saying `checkpoints: /` would walk the disk)."""
    parts = Path(real).parts
    return len(parts) <= 2 or real == os.path.realpath(os.path.expanduser("~"))


class ModelNotFound(LookupError):
    """A name the library does not have; the message says what it has."""


@dataclass
class ModelLibrary:
    roots: tuple[tuple[Path, str], ...] = ()  # (folder, how it was given: "--models" or "STUDIO_MODELS")
    notes: list[str] = field(default_factory=list)  # warnings, each printed once
    # (kind, name) -> the models of that name the first folder's hides, said when the name is used
    hidden: dict[tuple[str, str], list[ModelFile]] = field(default_factory=dict)
    _folders: list[KindFolder] | None = None
    _models: dict[str, list[ModelFile]] = field(default_factory=dict)
    _shown: int = 0

    @classmethod
    def from_dirs(cls, model_dirs: Iterable[str | Path] = (), environ: dict | None = None) -> ModelLibrary:
        """The library of `--models` folders, then STUDIO_MODELS'; a folder named twice counts once."""
        env = (os.environ if environ is None else environ).get(ENV, "")
        given = [(Path(d).expanduser(), "--models") for d in model_dirs]
        given += [(Path(d).expanduser(), ENV) for d in env.split(os.pathsep) if d.strip()]
        seen, roots = set(), []
        for path, how in given:
            key = os.path.normcase(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                roots.append((Path(os.path.abspath(path)), how))
        return cls(tuple(roots))

    def folders(self) -> list[KindFolder]:
        """Every kind folder of every root, in the order the roots were given."""
        if self._folders is None:
            self._folders, seen = [], set()
            for root, how in self.roots:
                if not root.is_dir():
                    self.notes.append(f"{how} {root}: not a folder; left out")
                    continue
                for folder in kind_folders(root, self.notes):
                    real = (folder.kind, os.path.realpath(folder.path))
                    if _too_wide(real[1]):
                        self.notes.append(f"{folder.source}: names {real[1]} as a {folder.kind} folder; a system or "
                                          "home folder is never walked, left out")
                    elif real not in seen:  # one folder reached twice (a ComfyUI yaml naming A1111's) counts once
                        seen.add(real)
                        self._folders.append(folder)
            self.warn()
        return self._folders

    def models(self, kind: str) -> list[ModelFile]:
        """The models of one kind, one per name (the first folder's), sorted by name."""
        if kind not in self._models:
            chosen: dict[str, ModelFile] = {}
            for folder in (f for f in self.folders() if f.kind == kind):
                for model in scan_folder(folder, self.notes):
                    first = chosen.setdefault(model.name, model)
                    if first is not model:
                        self.hidden.setdefault((kind, model.name), []).append(model)
            self._models[kind] = sorted(chosen.values(), key=lambda m: m.name)
            self.warn()
        return self._models[kind]

    def all(self, kinds: Iterable[str] = KINDS) -> list[ModelFile]:
        return [model for kind in kinds for model in self.models(kind)]

    def find(self, name: str, kind: str) -> ModelFile:
        """The model of `kind` called `name` (its path below the kind folder, or its last
        part when unique; a model suffix may be given), else ModelNotFound saying what
        there is."""
        wanted = name.replace("\\", "/").strip("/")
        stem, suffix = os.path.splitext(wanted)
        if suffix.lower() in MODEL_SUFFIXES:
            wanted = stem
        models = self.models(kind)
        exact = [m for m in models if m.name == wanted]
        if exact:
            self.say_hidden(exact[0])
            return exact[0]
        short = [m for m in models if m.short == wanted]
        if len({self._root_of(m) for m in short}) > 1:  # in several folders: the first given wins
            first = min(self._root_of(m) for m in short)
            taken = [m for m in short if self._root_of(m) == first]
            if len(taken) == 1:
                others = ", ".join(str(m.path) for m in short if m is not taken[0])
                self.notes.append(f"{kind} {wanted!r}: took {taken[0].path} ({self._given(taken[0])}), not {others}; "
                                  f"the first folder given wins (--models in order, then {ENV})")
                self.warn()
            short = taken
        if len(short) > 1:
            raise ModelNotFound(f"{len(short)} {kind} models are called {wanted!r}: "
                                f"{', '.join(repr(m.name) for m in short[:5])}; give one of these names")
        if short:
            self.say_hidden(short[0])
            return short[0]
        raise ModelNotFound(self.not_found(wanted, kind, models))

    def not_found(self, name: str, kind: str, models: list[ModelFile]) -> str:
        if not self.roots:
            return (f"no {kind} is called {name!r}: no model folders are given (name them with --models DIR or "
                    f"{ENV})")
        names = sorted({m.name for m in models} | {m.short for m in models})
        where = ", ".join(str(root) for root, _ in self.roots)
        if not names:
            return f"no {kind} is called {name!r}: the model folders ({clip(where, 300)}) hold no {kind} models"
        shown = ", ".join(m.name for m in models[:10]) + (f" and {len(models) - 10} more" if len(models) > 10 else "")
        return (f"no {kind} is called {name!r} in the model folders ({clip(where, 300)}).{did_you_mean(name, names)} "
                f"There: {shown} (`studio models list --kind {kind}`)")

    def say_hidden(self, taken: ModelFile) -> None:
        """A warning, once, when another folder also has the name just used: which was
        taken, and why."""
        for model in self.hidden.pop((taken.kind, taken.name), []):
            self.notes.append(
                f"{taken.kind} {taken.name!r} is in two folders: took {taken.path} ({self._given(taken)}), not "
                f"{model.path} ({self._given(model)}); the first folder given wins (--models in order, then {ENV})")
        self.warn()

    def _root_of(self, model: ModelFile) -> int:
        """The position of the root a model was found under (the roots' order decides)."""
        source = Path(model.folder.source)
        for n, (root, _) in enumerate(self.roots):
            if source == root or root in source.parents:
                return n
        return len(self.roots)

    def _given(self, model: ModelFile) -> str:
        n = self._root_of(model)
        if n < len(self.roots):
            root, how = self.roots[n]
            return f"from {how} {root}, folder {n + 1} of {len(self.roots)}"
        return f"from {model.folder.source}"

    def warn(self) -> None:
        """Each note not printed yet, as a warning on stderr."""
        for note in self.notes[self._shown:]:
            print(printable(f"warning: models: {note}"), file=sys.stderr)
        self._shown = len(self.notes)
