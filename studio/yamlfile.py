"""Safe YAML loading that remembers where every value came from (for error messages)
and refuses alias bombs before building anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from studio.errors import Issue

MAX_BYTES = 2_000_000
MAX_NODES = 100_000  # after expanding aliases; a real pipeline has a few hundred

Path_ = tuple  # ("steps", 1, "with", "prompt")


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Locations:
    """Maps a YAML path to (file, line). Values set by --set get their own origin."""

    file: str | None = None
    lines: dict[Path_, int] = field(default_factory=dict)
    origins: dict[Path_, str] = field(default_factory=dict)

    def issue(self, path: Path_, message: str, step: str | None = None) -> Issue:
        for i in range(len(path), -1, -1):
            prefix = tuple(path[:i])
            if prefix in self.origins:
                return Issue(message, self.origins[prefix], None, format_path(path), step)
            if prefix in self.lines:
                return Issue(message, self.file, self.lines[prefix], format_path(path), step)
        return Issue(message, self.file, None, format_path(path) or None, step)


def load_yaml(text: str, file: str | None) -> tuple[Any, Locations, list[Issue]]:
    """Parse one YAML document with yaml's SafeLoader. Returns data, locations and any
    issues (syntax errors, alias bombs, duplicate keys)."""
    locs = Locations(file)
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        return None, locs, [Issue(f"file is larger than {MAX_BYTES // 1_000_000} MB; a pipeline is a small text file", file)]
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, locs, []
        bomb = _count_nodes(node)
        if bomb:
            return None, locs, [Issue(bomb, file, node.start_mark.line + 1)]
        issues: list[Issue] = []
        # Before construction: it flattens merge keys (<<) into the mappings.
        _record_lines(node, (), locs, issues)
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        return None, locs, [Issue(f"YAML tag not allowed: {exc.problem}. Pipelines are plain YAML "
                                  "(mappings, lists, strings, numbers); remove the '!!' tag", file, line)]
    except yaml.MarkedYAMLError as exc:
        return None, locs, [_syntax_issue(exc, text, file)]
    except yaml.YAMLError as exc:
        return None, locs, [Issue(f"YAML error: {exc}", file)]
    except RecursionError:
        return None, locs, [Issue("YAML is nested too deeply", file)]
    finally:
        loader.dispose()
    return data, locs, issues


def _count_nodes(root: yaml.Node) -> str | None:
    """Walk the node graph as construction would expand it; stop past MAX_NODES."""
    stack, seen = [root], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            return (
                f"YAML expands to more than {MAX_NODES:,} values through anchors and "
                "aliases (an alias bomb?); a pipeline needs far fewer. Remove the aliases."
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.append(k)
                stack.append(v)
    return None


def _record_lines(node: yaml.Node, path: Path_, locs: Locations, issues: list[Issue]) -> None:
    locs.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merged values are reported at the mapping's line
            line = key_node.start_mark.line + 1
            if key in first_line:
                issues.append(
                    Issue(f"duplicate key {key!r} (first at line {first_line[key]})",
                          locs.file, line, format_path(path + (key,)))
                )
                continue
            first_line[key] = line
            locs.lines[path + (key,)] = line
            _record_lines(value_node, path + (key,), locs, issues)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, path + (i,), locs, issues)


def _syntax_issue(exc: yaml.MarkedYAMLError, text: str, file: str | None) -> Issue:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem:
        problem = f"{problem} ({exc.context}"
        if exc.context_mark and mark and exc.context_mark.line != mark.line:
            problem += f" at line {exc.context_mark.line + 1}"
        problem += ")"
    if mark is None:
        return Issue(f"YAML syntax error: {problem}", file)
    lines = text.splitlines()
    snippet = ""
    if 0 <= mark.line < len(lines):
        snippet = f"\n      {lines[mark.line]}\n      {' ' * mark.column}^"
    return Issue(f"YAML syntax error: {problem}{snippet}", file, mark.line + 1)
