"""Hostile Ray addresses: `--ray-address`, RAY_ADDRESS and `ray_address=`.

Each case runs the real entry point (`studio.cli.main`) in this process with Ray replaced
by a stand-in that fails the test if a cluster is started or joined: an address Studio
refuses is refused before Ray is imported, and an address of a valid form where nothing
answers (an unused local port) is refused by the bounded reachability probe, never by
Ray's own minutes of retries. Every case checks the exit code (2), that there is no
traceback, that the message names `--ray-address` or `RAY_ADDRESS`, the time, and that
nothing was written. No Ray cluster is started here.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import studio.execute.cluster
import studio.host.plugins
from studio.errors import UserError
from studio.execute.cluster import PROBE_S, check_address
from studio.testing import FakePlugin, make_host
from test_hostile import cli_main

REFUSED_S = 3.0  # a refusal of the address's form: no Ray, no network
PROBED_S = PROBE_S + 3.0  # a probe of an address where nothing answers (bounded by PROBE_S)
PIPELINE = "name: r\nsteps:\n  - {id: t, uses: fake.text, with: {prompt: hi}}\n"
ASKS_FOR_RAY = "name: r\nexecutor: ray\nsteps:\n  - {id: t, uses: fake.text, with: {prompt: hi}}\n"
DIGITS = "9" * 10_000


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = unused_port()


class NoRay(types.ModuleType):
    """Stands for `ray`: not connected, and any start or join fails the test."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.started = []

    def is_initialized(self) -> bool:
        return False

    def init(self, *args, **kwargs):
        self.started.append((args, kwargs))
        raise AssertionError(f"Ray was started for {kwargs.get('address')!r}")


@dataclass
class Case:
    name: str
    flag: str | None = None  # --ray-address
    env: str | None = None  # RAY_ADDRESS
    named: str = "--ray-address"  # what the message must name
    expect: str = ""  # a phrase of the message
    executor: bool = True  # --executor ray given (else the pipeline asks for Ray)
    probed: bool = False  # a valid form: refused by the probe


CASES = [
    # the examples: digits past Python's int() limit, ports that are not plain numbers
    Case("10000-digit-port", flag=f"127.0.0.1:{DIGITS}", expect="10,010 characters long"),
    Case("10000-digit-port-env", env=f"127.0.0.1:{DIGITS}", named="RAY_ADDRESS", expect="10,010 characters"),
    Case("plus-sign-port", flag="127.0.0.1:+80", expect="not a number from 1 to 65535"),
    Case("hex-port", flag="127.0.0.1:0x50", expect="not a number from 1 to 65535"),
    Case("port-over-65535", flag="127.0.0.1:99999", expect="not a number from 1 to 65535"),
    Case("port-zero", flag="127.0.0.1:0", expect="not a number from 1 to 65535"),
    Case("negative-port", flag="127.0.0.1:-1", expect="not a number from 1 to 65535"),
    Case("arabic-indic-digits", flag="127.0.0.1:\u0668\u0660", expect="non-ASCII character"),
    Case("superscript-digit", flag="127.0.0.1:\u00b2", expect="non-ASCII character"),
    Case("fullwidth-host", flag="\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:6379", expect="non-ASCII"),
    Case("empty-port", flag="127.0.0.1:", expect="the port is empty"),
    Case("no-port", flag="127.0.0.1", expect="there is no port"),
    Case("no-host", flag=":6379", expect="there is no host"),
    Case("ipv6-without-brackets", flag="::1:6379", expect="needs brackets"),
    Case("ipv6-brackets-no-port", flag="[::1]", expect="needs a port after it"),
    Case("ipv6-brackets-not-ipv6", flag="[not-v6]:6379", expect="is not an IPv6 address"),
    Case("ipv6-port-not-a-number", flag="[::1]:+80", expect="not a number from 1 to 65535"),
    Case("empty", flag="", expect="it is empty"),
    Case("only-spaces", flag="   ", expect="only spaces"),
    Case("space-before-port", flag="127.0.0.1: 80", expect="a space"),
    Case("newline", flag="127.0.0.1:6379\n", expect="control character"),
    Case("terminal-escape", flag="\x1b]0;owned\x07127.0.0.1:6379", expect="control character"),
    Case("nul", flag="127.0.0.1\x00:6379", expect="control character"),
    Case("empty-host-label", flag="bad..host:6379", expect="not a host name"),
    Case("label-starts-with-dash", flag="-lead.example:6379", expect="not a host name"),
    Case("label-of-64", flag=f"{'a' * 64}.example:6379", expect="not a host name"),
    Case("301-characters", flag=f"{'a.' * 148}ab:6379", expect="more than the 300"),
    Case("module-scheme", flag="os://x:6379", expect="Ray would import a Python module named 'os'"),
    Case("upper-case-scheme", flag="RAY://127.0.0.1:6379", expect="only scheme"),
    Case("http-scheme", flag="http://127.0.0.1:8265", expect="web address"),
    Case("ray-client-no-port", flag="ray://127.0.0.1", expect="there is no port"),
    Case("ray-client-bad-port", flag="ray://127.0.0.1:65536", expect="not a number from 1 to 65535"),
    Case("with-executor-local", flag="127.0.0.1:+80", executor=False, expect="not a number"),
    # RAY_ADDRESS, read when no address (or "auto") is given
    Case("env-plus-sign-port", env="127.0.0.1:+80", named="RAY_ADDRESS", expect="not a number"),
    Case("env-arabic-indic-digits", env="127.0.0.1:\u0668\u0660", named="RAY_ADDRESS", expect="non-ASCII"),
    Case("env-module-scheme", env="subprocess://x:1", named="RAY_ADDRESS", expect="only scheme"),
    Case("env-terminal-escape", env="h\x1b[2J:1", named="RAY_ADDRESS", expect="control character"),
    Case("env-behind-auto", flag="auto", env="127.0.0.1:0x50", named="RAY_ADDRESS", expect="not a number"),
    Case("env-pipeline-asks-for-ray", env=f"127.0.0.1:{DIGITS}", named="RAY_ADDRESS", executor=False,
         expect="characters long"),
    # valid forms where nothing answers: the probe refuses them at once
    Case("probe-ipv4", flag=f"127.0.0.1:{PORT}", probed=True),
    Case("probe-leading-zero-port", flag=f"127.0.0.1:0{PORT}", probed=True),
    Case("probe-localhost", flag=f"localhost:{PORT}", probed=True),
    Case("probe-ipv6-brackets", flag=f"[::1]:{PORT}", probed=True),
    Case("probe-ray-client", flag=f"ray://127.0.0.1:{PORT}", probed=True),
    Case("probe-unknown-host", flag="no-such-host.invalid:6379", probed=True, expect="cannot look up"),
    Case("probe-env", env=f"127.0.0.1:{PORT}", named="RAY_ADDRESS", probed=True),
    Case("probe-env-behind-auto", flag="auto", env=f"127.0.0.1:{PORT}", named="RAY_ADDRESS", probed=True),
    Case("probe-env-pipeline-asks-for-ray", env=f"127.0.0.1:{PORT}", named="RAY_ADDRESS", executor=False,
         probed=True),
]


@pytest.fixture
def no_ray(monkeypatch):
    """Ray stood in for (nothing may start or join a cluster), plugins faked."""
    stand_in = NoRay()
    monkeypatch.setitem(sys.modules, "ray", stand_in)
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("fake", FakePlugin())]))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return stand_in


def studio_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str, float]:
    return cli_main(argv, monkeypatch, capsys)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_hostile_ray_address_is_refused_in_bounded_time(case, no_ray, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(PIPELINE if case.executor else ASKS_FOR_RAY, encoding="utf-8")
    if case.env is not None:
        monkeypatch.setenv("RAY_ADDRESS", case.env.replace("\x00", ""))  # no NUL in the environment
    argv = ["run", "p.yaml", "--out", "runs"]
    argv += ["--executor", "ray"] if case.executor else (["--executor", "local"] if case.flag is not None else [])
    argv += ["--ray-address", case.flag] if case.flag is not None else []
    code, output, seconds = studio_main(argv, monkeypatch, capsys)
    context = f"{case.name}: exit {code}, {seconds:.2f} s\n{output[:2000]}"
    assert code == 2, context
    assert "Traceback" not in output, context
    assert f"{case.named}" in output, context
    assert case.expect in output, context
    if case.probed:
        assert "cannot reach the Ray cluster" in output and "ray start --head" in output, context
    assert seconds < (PROBED_S if case.probed else REFUSED_S), context
    assert len(output) < 1500, context  # the value is clipped, not repeated whole
    assert "\x1b" not in output and "\x00" not in output, context  # controls shown as escapes
    assert not no_ray.started, context
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"], context  # nothing written


def test_an_address_of_another_type_from_python_is_refused(no_ray, tmp_path):
    from studio import api

    (tmp_path / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    for address in (6379, b"127.0.0.1:6379", ["127.0.0.1:6379"]):
        with pytest.raises(UserError, match=r"--ray-address: got .* give the address as text"):
            api.run(tmp_path / "p.yaml", out=tmp_path / "runs", executor="ray", ray_address=address)
    assert not no_ray.started and not (tmp_path / "runs").exists()


def test_the_accepted_forms_are_written_as_ray_reads_them():
    assert check_address("127.0.0.1:6379", "--ray-address") == "127.0.0.1:6379"
    assert check_address("head.example.com.:06379", "--ray-address") == "head.example.com.:6379"
    assert check_address("[::1]:6379", "RAY_ADDRESS") == "[::1]:6379"
    assert check_address("ray://head_1:10001", "RAY_ADDRESS") == "ray://head_1:10001"
    assert check_address("auto", "RAY_ADDRESS") == "auto" and check_address("local", "x") == "local"


def test_the_real_command_refuses_10000_digits_in_ray_address_without_starting_ray(tmp_path):
    """The same through `python -m studio` with the real Ray installed: refused before
    Ray is imported (an import alone takes seconds)."""
    (tmp_path / "p.yaml").write_text(
        "name: r\nsteps:\n  - {id: t, uses: text.template, with: {template: hi}}\n", encoding="utf-8")
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{DIGITS}"}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "studio", "run", "p.yaml", "--executor", "ray"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - start
    message = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and any(line.startswith("Error: RAY_ADDRESS: got") for line in message)
    assert not any(line.rstrip().endswith("| ray") for line in out.stderr.splitlines())  # never imported
    assert seconds < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_rays_messages_for_the_driver_are_held_for_the_run_folder(monkeypatch, capfd, tmp_path):
    """What Ray's error listener and its "ray" logger would print goes to the run log,
    and both print as before once released (a process that started Ray itself)."""
    printed = []
    worker = types.ModuleType("ray._private.worker")
    worker.print_to_stdstream = lambda data, ignore_prefix: printed.append(data)
    monkeypatch.setitem(sys.modules, "ray._private.worker", worker)
    monkeypatch.setattr(studio.execute.cluster.output, "_held", None)
    monkeypatch.setattr(studio.execute.cluster.output, "_held_for_good", False)
    ray_logger = logging.getLogger("ray")
    monkeypatch.setattr(ray_logger, "handlers", list(ray_logger.handlers))
    before = list(ray_logger.handlers)
    studio.execute.cluster.OUTPUT.take()

    studio.execute.cluster.hold_ray_output(None)
    sys.modules["ray._private.worker"].print_to_stdstream(
        {"lines": ["Task Worker.keep failed ... killed by `ray.kill`.", "\x1b[2Jsecond"], "pid": "raylet",
         "is_err": False}, ignore_prefix=False)
    logging.getLogger("ray._private.worker").error("Unhandled error: x")
    lines = studio.execute.cluster.OUTPUT.take()
    studio.execute.cluster.release_ray_output()
    assert not printed
    out = capfd.readouterr()
    assert "raylet" not in out.out + out.err and "Unhandled" not in out.out + out.err
    assert any("(raylet) Task Worker.keep failed" in line for line in lines)
    assert any("\\x1b[2Jsecond" in line for line in lines)  # controls shown as escapes
    assert any("ERROR ray._private.worker: Unhandled error: x" in line for line in lines)
    assert worker.print_to_stdstream({"lines": []}, ignore_prefix=False) is None and printed  # put back
    assert ray_logger.handlers == before

    studio.execute.cluster.write_ray_log(tmp_path, lines)
    assert (tmp_path / "ray.log").read_text().count("\n") == len(lines)
    assert [p.name for p in tmp_path.iterdir()] == ["ray.log"]  # no partial file left


def test_the_cluster_ray_start_left_here_is_probed_too(no_ray, tmp_path, monkeypatch, capsys):
    """No address: Ray would join the cluster `ray start` recorded on this machine (in
    /tmp/ray/ray_current_cluster); one that stopped without `ray stop` is refused by the
    same probe instead of Ray's retries."""
    services = types.SimpleNamespace(get_ray_address_from_environment=lambda address, temp_dir: f"127.0.0.1:{PORT}")
    no_ray._private = types.SimpleNamespace(services=services)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    code, output, seconds = studio_main(["run", "p.yaml", "--executor", "ray"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in output, output
    assert f"cannot reach the Ray cluster at '127.0.0.1:{PORT}' (from the cluster `ray start` recorded" in output
    assert seconds < PROBED_S and not no_ray.started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]
