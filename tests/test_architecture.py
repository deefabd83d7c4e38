"""The shape of the code, as docs/architecture.md draws it: the host's folders and modules
are the ones the map lists, they import in the order it lists them (no cycle; type-only
and function-level imports included), the host imports no model library, and plugins use
only the public API that `studio` exports and docs/plugins.md documents."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import studio

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "studio"
PLUGINS = ROOT / "plugins"
MAP = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    """studio/pipeline/spec.py -> "pipeline.spec"; a package is its folder ("sniff")."""
    parts = list(path.relative_to(HOST).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def host_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(HOST.rglob("*.py"))}


def host_imports() -> dict[str, set[str]]:
    """module -> the host modules it imports anywhere in its text (top level, functions,
    `if TYPE_CHECKING:`), read from the source: nothing is imported. A name is the
    longest module path it starts with: `from studio.pipeline.spec import X` is
    "pipeline.spec", `from studio.runs import history` is "runs.history"."""
    modules = host_modules()

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}:{node.lineno}: the host imports absolutely (studio.x), for grep"
                if node.module == "studio":
                    found |= {resolve(a.name) or "__init__" for a in node.names}
                elif node.module and node.module.startswith("studio."):
                    base = node.module.removeprefix("studio.")
                    found |= {resolve(f"{base}.{a.name}") or resolve(base) for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {resolve(a.name.removeprefix("studio.")) for a in node.names if a.name.startswith("studio.")}
        graph[module] = {m for m in found if m and m != module}
    return graph


def mapped_order() -> list[str]:
    """The host's modules as docs/architecture.md lists them, bottom up: the first
    backticked `.py` path (or `folder/`) of each row of its module tables."""
    text = MAP.read_text(encoding="utf-8")
    section = text.split("## The host's modules", 1)[1].split("\n## ", 1)[0]
    order = []
    for row in re.findall(r"^\| `([^`]+)` \|", section, re.M):
        path = row.removesuffix("/").removesuffix(".py")
        order.append(module_name(HOST / (path + ("/__init__.py" if (HOST / path).is_dir() else ".py"))))
    return order


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
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


def test_the_import_reader_sees_type_only_function_level_and_package_imports():
    graph = host_imports()
    assert "execute.records" in graph["hookspecs"]  # `if TYPE_CHECKING:` only
    assert "sniff" in graph["generator"]  # inside a method
    assert "version" in graph["__init__"]


def test_the_map_lists_every_host_module_once():
    listed, actual = mapped_order(), set(host_modules())
    assert len(listed) == len(set(listed)), "listed twice: " + ", ".join(
        sorted({m for m in listed if listed.count(m) > 1}))
    assert not actual - set(listed), "docs/architecture.md does not list " + ", ".join(sorted(actual - set(listed)))
    assert not set(listed) - actual, "docs/architecture.md lists what is gone: " + ", ".join(
        sorted(set(listed) - actual))


def test_each_module_imports_only_modules_the_map_lists_before_it():
    """The map's "bottom up" promise, checked edge by edge: a newcomer reading the table
    from the top meets every module before anything that uses it."""
    order = mapped_order()
    position = {m: i for i, m in enumerate(order)}
    late = [f"{m} imports {d} (listed after it)" for m, deps in host_imports().items() for d in sorted(deps)
            if d in position and m in position and position[d] > position[m]]
    assert not late, "\n".join(late)


def test_the_map_draws_the_folders_there_are():
    """The layout block names each sub-package of studio/ with its job, and nothing else."""
    text = MAP.read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("```", 2)[1]
    drawn = set(re.findall(r"^\s{2}(\w+)/", layout, re.M))
    folders = {p.parent.relative_to(HOST).parts[0] for p in HOST.rglob("__init__.py") if p.parent != HOST}
    assert drawn == folders, f"drawn {sorted(drawn)}, on disk {sorted(folders)}"


def test_the_bottom_of_the_map_imports_nothing_above_it():
    """The first rows a newcomer reads stand alone."""
    graph = host_imports()
    for leaf, allowed in {"errors": set(), "media": set(), "pipeline.refs": set(), "version": set(),
                          "execute.events": set(), "execute.interrupts": set(),
                          "pipeline.yamlfile": {"errors"}}.items():
        assert graph[leaf] <= allowed, f"{leaf} imports {sorted(graph[leaf] - allowed)}"


def test_the_host_imports_no_model_library():
    """diffusers and transformers live in the plugins (studio_diffusers, studio_lm), never
    in the host: no module of studio/ imports them, at any level."""
    for path in HOST.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in ("diffusers", "transformers"), f"{path.name} imports {name}"


def test_the_public_module_paths_keep_working():
    """What docs/plugins.md tells plugin authors to import stays where it says."""
    for name in studio.PUBLIC_MODULES:
        module = importlib.import_module(f"studio.{name}")
        assert module.__all__, name
    for name in studio.__all__:
        assert getattr(studio, name) is not None, name


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
    """No file under plugins/ imports an underscored name from another package there
    (plugin or support package): what packages share is their public names. Which
    packages may import which is test_no_generator_plugin_imports_another's question."""
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


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 60
WHOLE = "# kept whole:"  # a comment on the line before a def (or atop a module) that says why


@pytest.mark.parametrize("top", ["studio", "plugins"])
def test_modules_and_functions_stay_small(top):
    """No module over 500 lines and no function over 60 in studio/ and plugins/, unless
    a `# kept whole: why` comment says why that one reads better in one piece."""
    too_big = []
    for path in sorted((ROOT / top).rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(line.startswith(WHOLE) for line in lines[:30]):
            too_big.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if length > MAX_FUNCTION_LINES and WHOLE not in lines[first - 2]:
                    too_big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_big, "over the size rule (split it, or say why with a '# kept whole:' comment):\n" + \
        "\n".join(too_big)
