"""`python -m studio ARGV` as a process of its own, without paying for the interpreter's
start each time.

The hostile corpus runs a few hundred commands; each fresh `python -m studio` spends
about 0.4 s starting Python and importing the CLI and the plugins before it reads its
first argument. Here one server process does those imports once, then forks a child per
command. The child is a real process: its own session (a timeout kills its whole group),
its own working directory, stdout and stderr into one file, stdin from /dev/null, its
own address-space limit, and its own exit code and peak RSS as the parent sees them from
wait4. It then runs `studio/__main__.py` as `-m` does (runpy, sys.path[0] the working
directory) and ends as any Python program ends: an uncaught exception prints a
traceback and exits 1, atexit handlers run, stdout is flushed.

What a forked command does not repeat is importing: a case whose failure would only
show while the CLI's modules load needs the real process (tests/test_hostile.py's
run_cli, which tests that the two give the same answers).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = r"""
import json, os, resource, runpy, sys

import studio.launch, studio.cli  # what every command imports before it reads its arguments
import studio.api, studio.pipeline.validate, PIL.Image, subprocess  # what validate, plan and run import
from studio.host.plugins import Host
Host.load()  # imports every plugin's modules; each command still builds its own host
assert "torch" not in sys.modules  # a command that needs torch imports it itself, as it would


def serve():
    for line in iter(sys.stdin.buffer.readline, b""):
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            return request
        print(json.dumps({"pid": pid}), flush=True)
        _, status, usage = os.wait4(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status), "rss_kb": usage.ru_maxrss}), flush=True)
    sys.exit(0)


request = serve()
os.setsid()
os.chdir(request["cwd"])
out = os.open(request["output"], os.O_WRONLY | os.O_APPEND)
os.dup2(out, 1)
os.dup2(out, 2)
os.close(out)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
sys.stdin = sys.__stdin__ = open(0, closefd=False)  # nothing the server read ahead
resource.setrlimit(resource.RLIMIT_AS, (request["as_limit"], request["as_limit"]))
sys.argv = ["studio", *request["argv"]]
sys.path[0] = os.getcwd()  # as `python -m` puts it
runpy.run_module("studio", run_name="__main__", alter_sys=True)
"""


def command_env() -> dict[str, str]:
    """The environment a command runs in: this one less STUDIO_* settings (and pytest's
    name for the test now running, which would start a new server for every test),
    wide lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_") and k != "PYTEST_CURRENT_TEST"}
    env["COLUMNS"] = "200"
    return env


class _Server:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, cwd="/")

    def reply(self, timeout: float | None) -> dict | None:
        """The server's next line, or None when `timeout` passed first."""
        if timeout is not None and not select.select([self.proc.stdout], [], [], max(0.0, timeout))[0]:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the forking CLI server ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_server: _Server | None = None


def _server_for(env: dict[str, str]) -> _Server | None:
    global _server
    if _server is not None and (_server.proc.poll() is not None or _server.env != env):
        _server.close()
        _server = None
    if _server is None:
        _server = _Server(env)
        atexit.register(_server.close)
    return _server


def run_forked(argv: list[str], cwd: Path, *, timeout: float, as_limit: int) -> tuple[int, str, float, int, bool]:
    """`studio ARGV` in a forked process in `cwd` under an address-space limit:
    (exit code, stdout and stderr together, seconds, peak RSS in KB, timed out)."""
    server = _server_for(command_env())
    handle, name = tempfile.mkstemp(suffix=".output")  # outside the case's folder, which is checked for writes
    os.close(handle)
    output = Path(name)
    try:
        start = time.monotonic()
        server.proc.stdin.write((json.dumps({"argv": argv, "cwd": str(cwd), "output": str(output),
                                             "as_limit": as_limit}) + "\n").encode())
        server.proc.stdin.flush()
        pid = server.reply(timeout=None)["pid"]
        done = server.reply(timeout=timeout)
        timed_out = done is None
        if timed_out:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended just now
                pass
            done = server.reply(timeout=None)
        seconds = time.monotonic() - start
        text = output.read_bytes().decode("utf-8", "replace")
    finally:
        output.unlink(missing_ok=True)
    return done["code"], text, seconds, done["rss_kb"], timed_out
