"""The shape of the code, as docs/architecture.md draws it: the host's modules import
one way (no cycle, type-only and function-level imports included), and plugins use only
the public API that `studio` exports and docs/plugins.md documents."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import studio

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "studio"
PLUGINS = ROOT / "plugins"


def host_imports() -> dict[str, set[str]]:
    """module -> the studio modules it imports anywhere in its text (top level,
    functions, `if TYPE_CHECKING:`), read from the source: nothing is imported."""
    modules = {p.stem for p in HOST.glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        tree = ast.parse((HOST / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from . import x / from .x import y
                    targets = [node.module] if node.module else [a.name for a in node.names]
                elif node.module == "studio":  # from studio import x: a submodule, or the package
                    targets = [a.name if a.name in modules else "__init__" for a in node.names]
                elif node.module and node.module.startswith("studio."):
                    targets = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("studio.")]
            graph[module].update(t.split(".")[0] for t in targets if t and t.split(".")[0] in modules)
        graph[module].discard(module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_host_modules_import_one_way():
    cycle = find_cycle(host_imports())
    assert cycle is None, "import cycle in studio/: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_reader_sees_type_only_and_function_level_imports():
    graph = host_imports()
    assert "records" in graph["hookspecs"]  # `if TYPE_CHECKING:` only
    assert "sniff" in graph["generator"]  # inside a method


def test_leaf_modules_import_nothing_above_them():
    """The bottom of the graph: a newcomer can read these without the rest."""
    graph = host_imports()
    for leaf, allowed in {"errors": set(), "media": set(), "refs": set(), "version": set(), "events": set(),
                          "interrupts": set(), "yamlfile": {"errors"}}.items():
        assert graph[leaf] <= allowed, f"{leaf} imports {sorted(graph[leaf] - allowed)}"


def test_the_host_names_no_model_family():
    """diffusers and transformers live in the plugins (studio_diffusers, studio_lm), never
    in the host: not imported, not named."""
    for path in HOST.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("diffusers", "transformers"), f"{path.name} imports {name}"


# --- the public plugin API --------------------------------------------------------------


def public_names() -> dict[str, set[str]]:
    """What plugins may import: `from studio import X` for X in studio.__all__, and
    `from studio.M import X` for each public module M and X in M.__all__."""
    allowed = {"studio": set(studio.__all__)}
    for name in studio.PUBLIC_MODULES:
        module = importlib.import_module(f"studio.{name}")
        allowed[f"studio.{name}"] = set(module.__all__)
    return allowed


def plugin_imports_from_studio() -> list[tuple[str, int, str, str]]:
    """(file, line, module, name) for every name a plugin file imports from studio."""
    found = []
    for path in sorted(PLUGINS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                    node.module == "studio" or node.module.startswith("studio.")):
                found += [(str(path.relative_to(ROOT)), node.lineno, node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), node.lineno, a.name, "*") for a in node.names
                          if a.name == "studio" or a.name.startswith("studio.")]
    return found


def test_plugins_import_only_the_public_api():
    allowed = public_names()
    used = plugin_imports_from_studio()
    assert len(used) > 30  # the reader sees the built-ins' imports
    private = [f"{file}:{line}: {module}.{name}" for file, line, module, name in used
               if name not in allowed.get(module, set())]
    assert not private, "plugins import what studio does not export:\n" + "\n".join(private)


def test_every_public_name_exists_and_is_documented():
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for module, names in public_names().items():
        imported = importlib.import_module(module)
        for name in sorted(names):
            assert getattr(imported, name, None) is not None, f"{module}.{name} is exported but missing"
            assert f"`{name}" in docs or f".{name}`" in docs or f"{name}(" in docs, (
                f"{module}.{name} is public but docs/plugins.md does not document it")


def test_the_readmes_pipeline_error_exists():
    from studio.errors import PipelineError

    assert studio.PipelineError is PipelineError and issubclass(studio.PipelineError, studio.UserError)


def test_importing_studio_and_the_plugins_keeps_heavy_libraries_out():
    """What `studio --help` and `studio validate` pay: no torch, diffusers, transformers
    or ray when the package and every plugin are imported."""
    code = ("import sys, studio, studio.cli\n"
            "from studio.testing import make_host\n"
            "make_host()\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'ray') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in PLUGINS.rglob("*.py")))
def test_no_plugin_reaches_into_another_plugins_private_names(path):
    """Plugins share code only through the support packages (studio_lm, studio_diffusers)
    and their own modules, never through another plugin's underscored names."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    own = Path(path).parts[1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top.startswith("studio_") and top != own:
                assert not any(a.name.startswith("_") for a in node.names), (
                    f"{path}:{node.lineno} imports a private name from {node.module}")


def generator_plugins() -> set[str]:
    """The packages pyproject.toml registers under [project.entry-points.studio]: the
    plugins. Packages under plugins/ without an entry point are support packages."""
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        entry_points = tomllib.load(f)["project"]["entry-points"]["studio"]
    return {target.split(":")[0].split(".")[0] for target in entry_points.values()}


def test_no_generator_plugin_imports_another():
    """Plugins share code the way a third-party plugin would: through support packages
    (studio_lm, studio_midi, studio_imagedata, ...) or Studio's public API, never by
    importing another plugin (function-level imports included)."""
    plugins = generator_plugins()
    assert {"studio_image", "studio_audio", "studio_eval"} <= plugins
    assert all((PLUGINS / name).is_dir() for name in plugins)
    crossing = []
    for own in sorted(plugins):
        for path in sorted((PLUGINS / own).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                crossing += [f"{path.relative_to(ROOT)}:{node.lineno} imports {name}" for name in names
                             if name.split(".")[0] in plugins - {own}]
    assert not crossing, "a plugin imports another plugin:\n" + "\n".join(crossing)
