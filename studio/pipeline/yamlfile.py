"""Safe YAML loading that remembers where every value came from (for error messages)
and refuses alias bombs before building anything."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from studio.errors import Issue

MAX_BYTES = 2_000_000
MAX_NODES = 100_000  # after expanding aliases; a real pipeline has a few hundred
# as written (before aliases expand): what the pure-Python composer may build, about a
# second's work; counted first by the C parser, which streams past a million in 0.1 s
MAX_WRITTEN_VALUES = 30_000
MAX_DEPTH = 64  # nesting of lists and mappings; a pipeline needs five or six

# What YAML 1.1 allows in a stream (PyYAML's Reader rejects the rest with a traceback of
# its own): tab, newline, carriage return, printable ASCII, NEL and printable Unicode.
_NOT_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_CHAR_NAMES = {0: "NUL", 7: "BEL", 8: "backspace", 0x1B: "ESC", 0x7F: "DEL", 0xFEFF: "byte order mark"}

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


# Scalars as YAML 1.2 reads them, not YAML 1.1's surprises: `no`, `on` and `y` stay
# words (not booleans), `040` is not octal 32 and `1:00` is not 60 (sexagesimal): they
# stay strings, which a parameter that wants a number then refuses in words.
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
# (at most 1,000 digits: Python refuses to read more than 4,300, and no parameter wants
# more than 20; a longer one stays text, which the parameter then refuses with its line)
_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]{0,999})|0x[0-9a-fA-F][0-9a-fA-F_]{0,999})$")
_FLOAT = re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


def _yaml12_resolvers() -> dict:
    table = {first: [(tag, rx) for tag, rx in entries
                     if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
             for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for tag, rx, firsts in (("tag:yaml.org,2002:bool", _BOOL, "tTfF"),
                            ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
                            ("tag:yaml.org,2002:float", _FLOAT, "-+.0123456789")):
        for first in firsts:
            table.setdefault(first, []).append((tag, rx))
    return table


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's plain scalars, whose aliases remember where they were
    used: an aliased step is reported at the alias's line, not only at its anchor's."""

    yaml_implicit_resolvers = _yaml12_resolvers()

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            used_here = copy.copy(node)  # shares the children: expansion is still counted
            used_here.start_mark = mark
            return used_here
        return super().compose_node(parent, index)


def unprintable_character(text: str) -> tuple[int, int, str] | None:
    """(line, column, description) of the first character YAML does not allow."""
    m = _NOT_PRINTABLE.search(text)
    if m is None:
        return None
    code = ord(m.group())
    line = text.count("\n", 0, m.start()) + 1
    column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    name = _CHAR_NAMES.get(code, "a control character")
    return line, column, f"U+{code:04X} ({name})"


def load_yaml(text: str, file: str | None, *, what: str = "file") -> tuple[Any, Locations, list[Issue]]:
    """Parse one YAML document with yaml's SafeLoader. Returns data, locations and any
    issues (syntax errors, alias bombs, nesting, duplicate and complex keys)."""
    locs = Locations(file)
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "replace")) > MAX_BYTES:
        return None, locs, [Issue(f"{what} is larger than {MAX_BYTES // 1_000_000} MB; a pipeline is a small text "
                                  "file", file)]
    text = text.removeprefix("\ufeff")  # a byte order mark at the start is harmless
    bad = unprintable_character(text)
    if bad:
        line, column, name = bad
        return None, locs, [Issue(f"{name} at column {column}: YAML allows no control characters. Remove it "
                                  "(inside a double-quoted string, write it as an escape such as \\t or "
                                  "\\x1b)", file, line)]
    deep = _too_deep(text)
    if deep:
        return None, locs, [Issue(f"lists and mappings are nested more than {MAX_DEPTH} levels deep; "
                                  "a pipeline needs a handful", file, deep)]
    many = _too_many_values(text)
    if many:
        return None, locs, [Issue(f"the {what} holds more than {MAX_WRITTEN_VALUES:,} values (lists, mappings and "
                                  "scalars); a pipeline holds a few hundred to a few thousand. Split the work into "
                                  "several pipelines, or let a sweep make the items", file, many)]
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, locs, []
        bomb = _count_nodes(node)
        if bomb:
            return None, locs, [Issue(bomb[0], file, bomb[1])]
        issues: list[Issue] = []
        # Before construction: it flattens merge keys (<<) into the mappings.
        _record_lines(node, (), locs, issues)
        if any(i.message.startswith("a mapping key") for i in issues):
            return None, locs, issues  # construction would fail on an unhashable key
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        return None, locs, [Issue(f"YAML tag not allowed: {exc.problem}. Pipelines are plain YAML "
                                  "(mappings, lists, strings, numbers); remove the '!!' tag", file, line)]
    except yaml.MarkedYAMLError as exc:
        return None, locs, [_syntax_issue(exc, text, file)]
    except yaml.YAMLError as exc:
        return None, locs, [Issue(f"YAML error: {exc}", file)]
    except (ValueError, OverflowError) as exc:  # a scalar the constructor cannot read
        return None, locs, [Issue(f"a value cannot be read: {str(exc)[:200]}", file)]
    except RecursionError:
        return None, locs, [Issue(f"lists and mappings are nested too deeply; a pipeline needs a handful", file)]
    finally:
        loader.dispose()
    return data, locs, issues


def _too_many_values(text: str) -> int | None:
    """The line where the values written in `text` pass MAX_WRITTEN_VALUES, counted from
    the parser's event stream before anything is built; None below it, and for a syntax
    error (the full parse that follows reports it in words)."""
    parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when PyYAML has libyaml
    counted = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)
    seen = 0
    try:
        for event in yaml.parse(text, Loader=parser):
            if isinstance(event, counted):
                seen += 1
                if seen > MAX_WRITTEN_VALUES:
                    return event.start_mark.line + 1
    except yaml.YAMLError:
        return None
    return None


def _too_deep(text: str) -> int | None:
    """The line where flow brackets ([ and {) nest past MAX_DEPTH, found by counting
    before the recursive parser sees them. (Block nesting is bounded by MAX_DEPTH in
    _record_lines; its indentation cannot recurse out of control.)"""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    quote = None
    line = 1
    for ch in text:
        if ch == "\n":
            line += 1
        if quote:  # brackets inside quoted strings do not nest (an apostrophe in plain text
            # may hide some: then the parser's own recursion limit is the backstop)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
    return None


def _count_nodes(root: yaml.Node) -> tuple[str, int] | None:
    """Walk the node graph as construction would expand it; stop past MAX_NODES, or at
    an alias inside the very list or mapping it names (which would expand forever)."""
    stack: list[tuple[yaml.Node, bool]] = [(root, True)]
    on_path: set[int] = set()  # the collections being walked, by identity of their contents
    seen = 0
    while stack:
        node, entering = stack.pop()
        if not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            seen += 1
        elif not entering:
            on_path.discard(id(node.value))
            continue
        else:
            if id(node.value) in on_path:
                return ("an alias refers to the list or mapping that contains it, which would never end; "
                        "remove the alias", node.start_mark.line + 1)
            on_path.add(id(node.value))
            seen += 1
            stack.append((node, False))
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            stack.extend((child, True) for child in children)
        if seen > MAX_NODES:
            return (f"YAML expands to more than {MAX_NODES:,} values through anchors and aliases (an alias "
                    "bomb?); a pipeline needs far fewer. Remove the aliases.", root.start_mark.line + 1)
    return None


def _record_lines(node: yaml.Node, path: Path_, locs: Locations, issues: list[Issue]) -> None:
    locs.lines.setdefault(path, node.start_mark.line + 1)
    if len(path) > MAX_DEPTH:
        issues.append(Issue(f"nested more than {MAX_DEPTH} levels deep; a pipeline needs a handful",
                            locs.file, node.start_mark.line + 1))
        return
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merged values are reported at the mapping's line
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                issues.append(Issue(f"a mapping key must be a plain name, got a {kind} (a YAML complex key "
                                    "`? ...`); write `name: value`", locs.file, line, format_path(path) or None))
                continue
            if key_node.tag == "tag:yaml.org,2002:null":
                issues.append(Issue("a mapping key is empty (null: `~`, `null` or a bare `?`); write "
                                    "`name: value`", locs.file, line, format_path(path) or None))
                continue
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
        # the line around the column, never the whole of a 100 KB line
        line, column = lines[mark.line], mark.column
        start = max(0, column - 60)
        shown = line[start:start + 120]
        prefix = "..." if start else ""
        suffix = "..." if start + 120 < len(line) else ""
        snippet = f"\n      {prefix}{shown}{suffix}\n      {' ' * (len(prefix) + column - start)}^"
    return Issue(f"YAML syntax error: {problem}{snippet}", file, mark.line + 1)
