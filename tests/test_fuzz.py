"""Property-based fuzzing of `studio validate` and `studio plan --set`.

The example pipelines are mutated (keys deleted or renamed, values replaced by random
YAML, steps duplicated, references injected, types changed, bytes and characters
inserted into the text) and `--set` values are drawn at random. Whatever comes in:

- no traceback: in process, an exception other than SystemExit is what a user would
  see as a traceback;
- the exit code is 0 (valid) or 2 (the user's mistake), never 1 or anything else;
- the answer comes within the validate budget.

Deterministic (`derandomize=True`, no example database) with a fixed number of examples,
so CI sees the same inputs on every run.
"""

from __future__ import annotations

import copy
import shutil
import signal
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hypothesis import HealthCheck, Phase, event, given, settings  # the `test` extra
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))
TEXTS = {p.name: p.read_text(encoding="utf-8") for p in PIPELINES}
DATA = {name: yaml.safe_load(text) for name, text in TEXTS.items()}

BUDGET_S = 2.0
SLACK_S = 3.0
HANG_S = 20  # an example still running after this is stopped and reported as a hang
EXAMPLES = 300

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # timed below, per example, against the validate budget
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported at once, as drawn
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x10\x20\x30" * 8 for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The example pipelines' neighbours (assets/), plus a few inputs to point at."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "pipelines" / "assets", root / "assets")
    (root / "in.png").write_bytes(_png())
    (root / "notes.txt").write_text("hello\n")
    (root / "empty.png").write_bytes(b"")
    (root / "folder").mkdir()
    return root


@pytest.fixture(scope="module")
def host():
    from studio.api import default_host

    return default_host()


def _keys(host) -> list[str]:
    keys = {"name", "description", "seed", "device", "precision", "compile", "steps", "id", "uses", "with",
            "sweep", "zip"}
    for gen in host.registry.generators.values():
        keys.update(gen.Params.model_fields)
    return sorted(keys)


def _ports(host) -> list[str]:
    return sorted({port for gen in host.registry.generators.values() for port in gen.outputs})


HOSTILE_STRINGS = [
    "", " ", "\t", "~", "null", "yes", "0x10", "1e400", ".nan", "-.inf", "${}", "${steps..outputs.x}",
    "${steps.a.outputs.text", "${${steps.subject.outputs.text}}", "$${steps.x.outputs.y}", "${ steps.tune.outputs.midi }",
    "${steps.nope.outputs.image}", "${steps.digits.outputs.image}", "${steps.subject.outputs.text}",
    "${steps.tune.outputs.midi}", "${steps.played.outputs.audio}", "x ${steps.speaker.outputs.text} y",
    "../../../../etc/passwd", "/etc/passwd", "/", "folder", "assets/ode-to-joy.mid", "in.png", "empty.png",
    "notes.txt", "nope.png", "./nope", "models/nope", "default", "cuda:99999999999", "cuda:abc", "cuda:0", "cpu",
    "auto", "fp8", "bf16", "{name}", "{x.__class__}", "{", "}}", "notacolour", "#12345", "#ffffff", "seed",
    "\u202eevil", "\U0001F3A8", "\u0430", "a\u200bb", "é" * 50, "x" * 3000, "image.title", "text.template",
    "audio.render", "image.diffusion", "text.gpt", "sample", "variation", "interpolate", "AtoB",
]


ALIAS_BOMB = "[&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&{c} [" + ", ".join([f"*{p}"] * 10) + "]" for p, c in zip("abcdefgh", "bcdefghi")) + "]"


def scalars(host) -> st.SearchStrategy:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, 1, -1, 2, 7, 8, 16, 64, 256, 4096, 10**6, 2**63 - 1, 2**63, 2**64]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e-300, 1e300]),
        st.text(max_size=30),
        st.sampled_from(HOSTILE_STRINGS + _keys(host)),
    )


def values(host) -> st.SearchStrategy:
    keys = st.one_of(st.sampled_from(_keys(host)), st.text(max_size=8), st.integers(-3, 3), st.none(), st.booleans())
    return st.recursive(
        scalars(host),
        lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=4)),
        max_leaves=12,
    )


# --- tree mutations -------------------------------------------------------------------


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _step_ids(data: Any) -> list[str]:
    steps = data.get("steps") if isinstance(data, dict) else None
    return [s["id"] for s in steps if isinstance(s, dict) and isinstance(s.get("id"), str)] if isinstance(steps, list) else []


def mutate_tree(draw, data: Any, host) -> Any:
    data = copy.deepcopy(data)
    ids = _step_ids(data) or ["a"]
    ports = _ports(host)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["delete", "replace", "replace", "duplicate_step", "reference", "retype",
                                     "rename_key", "sweep", "reorder", "alias_like"]))
        target = _get(data, path)
        if kind == "delete" and path:
            parent = _get(data, path[:-1])
            del parent[path[-1]]
        elif kind == "replace":
            data = _set(data, path, draw(values(host)))
        elif kind == "duplicate_step" and isinstance(data, dict) and isinstance(data.get("steps"), list) and data["steps"]:
            step = draw(st.sampled_from(data["steps"]))
            data["steps"].insert(draw(st.integers(0, len(data["steps"]))), copy.deepcopy(step))
        elif kind == "reference":
            step = draw(st.one_of(st.sampled_from(ids), st.sampled_from(["nope", "", "A", "a.b", "${x}"])))
            port = draw(st.one_of(st.sampled_from(ports), st.text(max_size=5)))
            ref = draw(st.sampled_from(["${steps.%s.outputs.%s}", "pre ${steps.%s.outputs.%s} post",
                                        "${steps.%s.outputs.%s", "$${steps.%s.outputs.%s}",
                                        "${steps.%s.outputs.%s}${steps.%s.outputs.%s}"]))
            text = ref.replace("%s", step, 1).replace("%s", port, 1).replace("%s", step, 1).replace("%s", port, 1)
            shape = draw(st.sampled_from(["plain", "list", "dict"]))
            value = text if shape == "plain" else [text] if shape == "list" else {"x": text}
            data = _set(data, path, value)
        elif kind == "retype":
            how = draw(st.sampled_from(["list", "dict", "str", "first", "int"]))
            if how == "list":
                new = [target]
            elif how == "dict":
                new = {draw(st.sampled_from(_keys(host))): target}
            elif how == "str":
                new = str(target)[:200]
            elif how == "first" and isinstance(target, (list, dict)) and target:
                new = target[0] if isinstance(target, list) else next(iter(target.values()))
            else:
                new = draw(st.integers(-5, 10**6))
            data = _set(data, path, new)
        elif kind == "rename_key" and isinstance(target, dict) and target:
            old = draw(st.sampled_from(list(target)))
            new = draw(st.one_of(st.sampled_from(_keys(host)), st.text(max_size=10)))
            target[new] = target.pop(old)
        elif kind == "sweep" and isinstance(data, dict) and isinstance(data.get("steps"), list) and data["steps"]:
            step = draw(st.sampled_from(data["steps"]))
            if isinstance(step, dict):
                section = draw(st.sampled_from(["sweep", "zip", "with"]))
                key = draw(st.sampled_from(_keys(host)))
                items = draw(st.lists(scalars(host), min_size=0, max_size=6))
                step.setdefault(section, {}) if isinstance(step.get(section), dict) else step.__setitem__(section, {})
                step[section][key] = items
        elif kind == "reorder" and isinstance(target, list) and len(target) > 1:
            order = draw(st.permutations(range(len(target))))
            data = _set(data, path, [target[i] for i in order])
        elif kind == "alias_like" and isinstance(target, (list, dict)):
            data = _set(data, path, [target, target])  # dumped as an anchor and an alias
    return data


def dump(data: Any) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=120)
    except yaml.YAMLError:
        return yaml.safe_dump(str(data), allow_unicode=True)


# --- text mutations -------------------------------------------------------------------

TOKENS = ["&a ", "*a", "<<: ", "---\n", "? ", ": ", "- ", "[", "]", "{", "}", "\t", "\r\n", "\ufeff", "!!python/name:os.system ",
          "!!binary ", "%YAML 1.1\n", "# ", "\x00", "\x1b", "\x7f", "\u2028", "\ud7ff", '"', "'", "|\n", ">-\n", "${"]


def mutate_text(draw, text: str) -> bytes:
    data = text.encode("utf-8")
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["token", "chars", "bytes", "delete", "dup_line", "indent"]))
        if kind == "token":
            data = data[:pos] + draw(st.sampled_from(TOKENS)).encode("utf-8", "surrogatepass") + data[pos:]
        elif kind == "chars":
            data = data[:pos] + draw(st.text(min_size=1, max_size=8)).encode("utf-8", "surrogatepass") + data[pos:]
        elif kind == "bytes":
            data = data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
        elif kind == "delete":
            data = data[:pos] + data[pos + draw(st.integers(1, 40)):]
        elif kind == "dup_line":
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = b"\n".join(lines)
        else:
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = draw(st.sampled_from([b" ", b"\t", b"    ", b""])) + lines[i]
            data = b"\n".join(lines)
    return data


# --- running the command line in process ----------------------------------------------


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"still running after {HANG_S} s")


def invoke(args: list[str]):
    from click.testing import CliRunner

    from studio.cli import cli

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    start = time.monotonic()
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return result, time.monotonic() - start


def check(result, seconds: float, what: str) -> None:
    output = result.output
    shown = output if len(output) < 2000 else output[:1000] + "\n[...]\n" + output[-800:]
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"{what}\nuncaught {type(exc).__name__}: {str(exc)[:500]} (a traceback for the user)\n{shown}")
    assert "Traceback" not in output, f"{what}\ntraceback in the output\n{shown}"
    assert result.exit_code in (0, 2), f"{what}\nexit {result.exit_code}, expected 0 or 2\n{shown}"
    assert seconds <= BUDGET_S + SLACK_S, f"{what}\ntook {seconds:.1f} s\n{shown}"
    event(f"exit {result.exit_code}")  # `pytest --hypothesis-show-statistics` shows the mix


# --- the properties -------------------------------------------------------------------


@FUZZ_SETTINGS
@given(data=st.data())
def test_validate_survives_mutated_pipelines(data, workdir, host):
    name = data.draw(st.sampled_from(sorted(DATA)), label="pipeline")
    how = data.draw(st.sampled_from(["tree", "tree", "text", "tree+text"]), label="how")
    if how == "text":
        content = mutate_text(data.draw, TEXTS[name])
    else:
        text = dump(mutate_tree(data.draw, DATA[name], host))
        content = mutate_text(data.draw, text) if how == "tree+text" else text.encode("utf-8")
    path = workdir / "fuzz.yaml"
    path.write_bytes(content)
    result, seconds = invoke(["validate", str(path)])
    check(result, seconds, f"validate {name} mutated ({how}):\n{content[:1500]!r}")


@FUZZ_SETTINGS
@given(data=st.data())
def test_plan_survives_random_set_values(data, workdir, host):
    name = data.draw(st.sampled_from(sorted(DATA)), label="pipeline")
    path = workdir / name
    if not path.exists():
        path.write_text(TEXTS[name], encoding="utf-8")
    ids = _step_ids(DATA[name])
    uses = {s["id"]: s["uses"] for s in DATA[name]["steps"]}
    overrides = []
    for _ in range(data.draw(st.integers(1, 3), label="how many")):
        if data.draw(st.booleans(), label="a real step and parameter"):
            step = data.draw(st.sampled_from(ids))
            params = host.registry.generators[uses[step]].Params
            param = data.draw(st.sampled_from(sorted(params.model_fields)))
            field = params.model_fields[param]
            if not field.is_required() and data.draw(st.booleans(), label="its default"):
                default = field.get_default(call_default_factory=True)
                if not isinstance(default, (list, dict)) or default:
                    overrides.append(f"{step}.{param}=" + dump(default).strip().removesuffix("...").strip())
                    continue
        else:
            step = data.draw(st.one_of(st.sampled_from(ids), st.sampled_from(["nope", "", "A", "a.b"]), st.text(max_size=6)))
            param = data.draw(st.one_of(st.sampled_from(_keys(host)), st.text(max_size=8)))
        value = data.draw(st.one_of(
            st.builds(lambda v: dump(v).strip().removesuffix("...").strip(), scalars(host)),
            st.builds(lambda v: dump(v).strip().removesuffix("...").strip(), values(host)),
            st.text(max_size=40).filter(lambda s: "\x00" not in s),
            st.sampled_from(HOSTILE_STRINGS + ["[" * 3000, "{a: " * 3000, "&a [x, *a]", ALIAS_BOMB, "!!python/object:os.system x",
                                               "- a\n- b", "a: b", "*x", "|\n  text", "[1, 2", "${steps.x.outputs"]),
        ))
        form = data.draw(st.sampled_from(["{s}.{p}={v}"] * 6 + ["{s}{p}={v}", "{s}.{p}", "={v}", "{s}.{p}=={v}"]))
        overrides.append(form.format(s=step, p=param, v=value))
    args = ["plan", str(path)]
    for o in overrides:
        args += ["--set", o]
    result, seconds = invoke(args)
    check(result, seconds, f"plan {name} --set {overrides!r}"[:3000])
