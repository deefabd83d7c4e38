"""Ctrl-C during `studio train`: the finished steps are checkpointed, the command says
how to go on, exits 130, and `--resume` carries on from there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def test_ctrl_c_checkpoints_says_how_to_resume_and_exits_130(tmp_path):
    out = tmp_path / "gan"
    command = [sys.executable, "-m", "studio", "train", "image.gan", "--data", "sklearn:digits", "--out", str(out),
               "--steps", "100000", "--batch-size", "8", "--checkpoint-every", "100000", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = out / "training" / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 1):  # a few dozen steps in
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "checkpoint saved in" in stderr and "continue with the same command plus --resume" in stderr
    step = int(stderr.split("interrupted at step ")[1].split(" ")[0])
    assert step >= 25
    assert (out / "training" / "checkpoint.safetensors").is_file()

    resumed = subprocess.run([*command[:command.index("--steps") + 1], str(step + 5),
                              *command[command.index("--steps") + 2:], "--resume"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained image.gan for {step + 5} steps" in resumed.stdout
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["steps"] == step + 5
