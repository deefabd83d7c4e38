"""`studio run --executor ray`: the same outputs, cache, manifest and exit codes as a
local run, with generators called on a Ray cluster (one shared local cluster)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio import api
from studio.testing import ClusterFakes, FakePlugin, make_host

PIPELINES = sorted((Path(__file__).resolve().parent.parent / "pipelines").glob("*.yaml"))


def artifact_hashes(run_dir: Path) -> dict[str, str]:
    """Every file a run made except its records (which name the run and the executor)."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "gallery.html", "journal.jsonl", "errors.log",
                                              "ray.log")}


def fake_host():
    return make_host([("fake", FakePlugin()), ("cluster", ClusterFakes())])


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_an_example_pipeline_makes_the_same_bytes_on_ray_as_locally(path, tmp_path, ray_cluster, example_run):
    local = example_run(path)  # the run test_pipelines checks, made once
    remote = api.run(path, out=tmp_path / "ray", host=make_host(), executor="ray")
    assert local.status == remote.status == "done", [r.error for r in remote.failed]
    assert artifact_hashes(remote.run_dir) == artifact_hashes(local.run_dir)
    manifest = json.loads(remote.manifest_path.read_text())
    assert manifest["executor"]["name"] == "ray" and manifest["executor"]["resources"]["CPU"] == 2
    made = [i for s in manifest["steps"].values() for i in s["items"] if i["status"] == "done"]
    assert made and all({"node", "worker", "pid", "queue_s", "run_s"} <= set(i["worker"]) for i in made)
    assert json.loads(local.manifest_path.read_text())["executor"] == {"name": "local"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


SLEEPS = """
name: sleeps
steps:
  - id: a
    uses: fake.sleep
    with: {seconds: 0}
    sweep: {seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}
  - id: b
    uses: fake.text
    with: {prompt: "after ${steps.a.outputs.text}"}
"""


def test_cached_items_are_not_dispatched(tmp_path, ray_cluster):
    host = fake_host()
    first = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=host, executor="ray")
    assert first.status == "done" and len(first.items) == 24
    again = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=host, executor="ray")
    assert {r.status for r in again.items.values()} == {"cached"}
    items = [i for s in json.loads(again.manifest_path.read_text())["steps"].values() for i in s["items"]]
    assert not any("worker" in i for i in items)  # nothing went to the cluster


def test_a_batch_is_one_call_and_models_load_once_per_worker(tmp_path, ray_cluster):
    host = fake_host()
    result = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=host, executor="ray")
    made = [r for r in result.step("a")]
    workers = {r.worker["worker"] for r in made}
    assert 1 <= len(workers) <= 2  # the cluster has 2 CPUs
    # 12 items in batches of 8 at most: at least 2 calls, and one model load per worker
    assert {r.notes["loaded_in"] for r in made} == {r.worker["pid"] for r in made}


def test_a_worker_killed_mid_batch_is_restarted_and_the_run_finishes(tmp_path, ray_cluster):
    marker = tmp_path / "crashed-once"
    pipeline = write(tmp_path, f"""
name: crash
steps:
  - id: c
    uses: fake.crash_once
    with: {{marker: "{marker}"}}
""")
    result = api.run(pipeline, out=tmp_path / "runs", host=fake_host(), executor="ray")
    assert marker.exists()  # the first attempt died
    assert result.status == "done", [r.error for r in result.failed]
    (item,) = result.step("c")
    assert item.artifacts["text"].read_text() == str(item.seed)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert [i["status"] for i in manifest["steps"]["c"]["items"]] == ["done"]  # made once, recorded once
    assert sorted(p.name for p in (result.run_dir / item.dir).iterdir()) == ["text.txt"]


def test_a_node_with_other_versions_is_refused(tmp_path, ray_cluster, monkeypatch):
    import studio.execute.cluster

    real = studio.execute.cluster.versions

    def newer_driver(registry):
        found = real(registry)
        return {**found, "plugins": {**found["plugins"], "fake": "9.9"}}

    monkeypatch.setattr(studio.execute.cluster.scheduler, "versions", newer_driver)
    result = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=fake_host(), executor="ray")
    assert result.status == "failed"
    assert "runs other versions than the driver" in result.error
    assert "plugin fake None (the driver has 9.9)" in result.error
    assert "Install the same Studio and plugins on every node" in result.error


def test_the_pipeline_can_ask_for_ray_and_a_wrong_executor_is_located(tmp_path, ray_cluster):
    from studio.errors import PipelineError

    asks = write(tmp_path, "name: r\nexecutor: ray\nsteps:\n  - {id: t, uses: fake.text, with: {prompt: hi}}\n")
    result = api.run(asks, out=tmp_path / "runs", host=fake_host())
    assert json.loads(result.manifest_path.read_text())["executor"]["name"] == "ray"
    wrong = write(tmp_path, "name: r\nexecutor: rocket\nsteps:\n  - {id: t, uses: fake.text, with: {prompt: hi}}\n")
    with pytest.raises(PipelineError, match=r"p.yaml:2: executor: got 'rocket'; allowed: local \| ray"):
        api.load(wrong, host=fake_host())


def test_without_ray_installed_the_error_says_what_to_install(tmp_path):
    pipeline = write(tmp_path, "name: r\nsteps:\n  - {id: t, uses: text.template, with: {template: hi}}\n")
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` now fails as if not installed
            "from studio.cli import main\n"
            f"sys.argv = ['studio', 'run', {str(pipeline)!r}, '--executor', 'ray', '--out', {str(tmp_path / 'runs')!r}]\n"
            "main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pip install 'studio-media[ray]'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_the_cli_runs_on_the_cluster_this_process_joined(tmp_path, ray_cluster, monkeypatch, capfd):
    """Ray's messages for the driver during the run ("(raylet) Task Worker.keep failed ...
    killed by `ray.kill`" when a worker retires as a batch is sent) go to RUN/ray.log,
    never to the terminal, where they were once read as the run folder; the run folder
    is read from the run_done event, which nothing else can look like."""
    import ray

    import studio.execute.cluster
    import studio.host.plugins
    from click.testing import CliRunner

    from studio.cli import cli

    monkeypatch.setattr(studio.host.plugins, "_default", fake_host())
    monkeypatch.chdir(tmp_path)
    write(tmp_path, SLEEPS)
    steps = studio.execute.cluster.RayScheduler.run_steps
    said = "a message from the cluster, as Ray prints it for the driver"

    def run_steps_while_the_cluster_speaks(self, driver):
        worker = ray._private.worker.global_worker
        ray._private.utils.push_error_to_driver(worker, "studio_test", said, job_id=worker.current_job_id)
        assert wait_until(lambda: any(said in line for line in studio.execute.cluster.OUTPUT.lines), 30)
        steps(self, driver)

    monkeypatch.setattr(studio.execute.cluster.RayScheduler, "run_steps", run_steps_while_the_cluster_speaks)
    result = CliRunner().invoke(cli, ["run", "p.yaml", "--json-events", "--executor", "ray"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]  # every line an event, nothing else
    (done,) = [e for e in events if e["event"] == "run_done"]
    run_dir = Path(done["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["executor"]["name"] == "ray"
    assert said in (run_dir / "ray.log").read_text()
    assert said not in result.output and said not in "".join(capfd.readouterr())


def test_an_address_where_nothing_answers_is_refused_at_once(tmp_path):
    pipeline = write(tmp_path, "name: r\nsteps:\n  - {id: t, uses: text.template, with: {template: hi}}\n")
    out = subprocess.run([sys.executable, "-m", "studio", "run", str(pipeline), "--executor", "ray",
                          "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in out.stderr and "ray start --head" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()


def named_workers() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "studio"}


def test_the_next_run_finds_the_workers_warm_with_their_models_loaded(tmp_path, ray_cluster):
    host = fake_host()
    # one generator: on this 2-CPU cluster a second one would take the workers' places
    pipeline = write(tmp_path, SLEEPS.split("  - id: b")[0])
    first = api.run(pipeline, out=tmp_path / "runs", host=host, executor="ray", use_cache=False)
    second = api.run(pipeline, out=tmp_path / "runs", host=host, executor="ray", use_cache=False)
    assert first.status == second.status == "done"
    loads = {(r.worker["worker"], r.notes["loaded_at"]) for r in first.step("a")}
    assert {(r.worker["worker"], r.notes["loaded_at"]) for r in second.step("a")} <= loads  # no new load
    assert {r.worker["worker"] for r in first.step("a")} <= worker_ids()  # still up, by name


def worker_ids() -> set[str]:
    import ray

    return {ray.get_actor(n, namespace="studio")._actor_id.hex() for n in named_workers()}


def test_keep_workers_0_stops_them_at_the_end_and_an_idle_worker_retires(tmp_path, ray_cluster):
    import ray

    for name in named_workers():  # so that this run starts its own (it would take idle ones)
        ray.kill(ray.get_actor(name, namespace="studio"))
    assert wait_until(lambda: not named_workers())
    result = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=fake_host(), executor="ray",
                     use_cache=False, keep_workers=0)
    assert result.status == "done"
    assert wait_until(lambda: not any(alive(r.worker["pid"]) for r in result.step("a")))
    before = named_workers()
    result = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=fake_host(), executor="ray",
                     use_cache=False, keep_workers=1)
    assert result.status == "done"
    made = named_workers() - before
    assert made and wait_until(lambda: not named_workers() & made)  # each stopped itself after a second idle


def alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition, seconds: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_batch_sent_to_a_worker_that_just_retired_goes_to_a_new_one(tmp_path, ray_cluster, monkeypatch):
    import ray

    import studio.execute.cluster

    host = fake_host()
    assert api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=host, executor="ray").status == "done"
    adopt = studio.execute.cluster.pools.WorkerPools.adopt
    adopted = []

    def adopt_then_retire(self, ray_module):
        adopt(self, ray_module)
        for slot in self.all():  # as if each timer had fired just now
            adopted.append(slot.actor)
            ray.kill(slot.actor, no_restart=True)

    monkeypatch.setattr(studio.execute.cluster.pools.WorkerPools, "adopt", adopt_then_retire)
    result = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=host, executor="ray", use_cache=False)
    assert adopted and result.status == "done", [r.error for r in result.failed]
    assert sorted(int(r.artifacts["text"].read_text()) for r in result.step("a")) == sorted(
        r.seed for r in result.step("a"))


def test_idle_workers_of_another_setup_are_stopped_to_make_room(tmp_path, ray_cluster, monkeypatch):
    import studio.execute.cluster

    real = studio.execute.cluster.pools.setup_id
    monkeypatch.setattr(studio.execute.cluster.pools, "setup_id", lambda *a: "othersetup000000")
    assert api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=fake_host(), executor="ray",
                   use_cache=False).status == "done"
    assert any(n.startswith("worker/othersetup000000/") for n in named_workers())
    monkeypatch.setattr(studio.execute.cluster.pools, "setup_id", real)
    result = api.run(write(tmp_path, SLEEPS), out=tmp_path / "runs", host=fake_host(), executor="ray",
                     use_cache=False)
    assert result.status == "done"
    assert not any(n.startswith("worker/othersetup000000/") for n in named_workers())
