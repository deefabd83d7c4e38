"""One test per hook, as a plugin author would use it."""

import click
from click.testing import CliRunner

from studio.execute.artifacts import Writer
from studio.hookspecs import hookimpl
from studio.testing import FakePlugin, FakeText, make_host, run_yaml


def test_hook_register_generators():
    host = make_host([("fake", FakePlugin())], entry_points=False)
    assert host.registry.generator("fake.text") is FakeText
    assert host.registry.plugins["fake"].generators == ["fake.image", "fake.text", "fake.fail", "fake.caption"]


def test_hook_register_artifact_writers(tmp_path):
    class Upper:
        @hookimpl
        def register_artifact_writers(self, register):
            register(Writer("text/plain", "md", lambda value, path, prov: path.write_text(value.upper())))

    result = run_yaml("name: w\nsteps:\n  - {id: a, uses: fake.text, with: {prompt: hi}}\n", tmp_path,
                      plugins=[("upper", Upper())])
    artifact = result.artifacts()[0]
    assert artifact.path.name == "text.md" and artifact.path.read_text() == "HI"


def test_hook_register_commands():
    class Hello:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    group = click.Group()
    host = make_host([("hello", Hello())], entry_points=False)
    host.call_each("register_commands", cli=group)
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"


def test_hook_run_step(tmp_path):
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def run_step(self, step):
            outputs = yield
            seen.append((step.step_id, [i.item.name for i in step.items]))
            return [{port: (v + "!" if isinstance(v, str) else v) for port, v in o.items()} for o in outputs]

    class Replace:
        @hookimpl
        def run_step(self, step):
            if step.uses == "fake.fail":
                return [{"text": "replaced"} for _ in step.items]
            return None

    result = run_yaml("""
        name: r
        steps:
          - {id: a, uses: fake.text, with: {prompt: hi}}
          - {id: b, uses: fake.fail}
    """, tmp_path, plugins=[("wrap", Wrapper()), ("replace", Replace())])
    assert result.items["a"].artifacts["text"].read_text() == "hi!"
    assert result.items["b"].artifacts["text"].read_text() == "replaced!"
    assert seen == [("a", ["a"]), ("b", ["b"])]


def test_hook_artifact_saved(tmp_path):
    saved = []

    class Watch:
        @hookimpl
        def artifact_saved(self, artifact, step):
            saved.append((step.step_id, artifact.path.name, artifact.media_type, len(artifact.sha256)))

    text = "name: s\nsteps:\n  - {id: a, uses: fake.image}\n  - {id: b, uses: fake.text, with: {prompt: x}}\n"
    run_yaml(text, tmp_path, plugins=[("watch", Watch())])
    assert saved == [("a", "image.png", "image/png", 64), ("b", "text.txt", "text/plain", 64)]
    run_yaml(text, tmp_path, plugins=[("watch", Watch())])  # restored from the cache: called again
    assert len(saved) == 4


def test_hook_register_trainers(tmp_path):
    from studio.training import TrainConfig, Trainer, train

    class Mean(Trainer):
        """Fits one number to the data's mean: the smallest real trainer."""

        generator = "fake.text"
        default_steps = 100
        default_lr = 0.2

        def setup(self):
            import torch

            self.data = torch.tensor([float(x) for x in self.config.data.split(",")])
            self.modules = {"m": torch.nn.Linear(1, 1, bias=False)}
            self.optimizers = {"m": torch.optim.SGD(self.modules["m"].parameters(), lr=self.lr)}

        def train_step(self, step):
            w = self.modules["m"].weight
            loss = ((w.squeeze() - self.data) ** 2).mean()
            self.optimizers["m"].zero_grad()
            loss.backward()
            self.optimizers["m"].step()
            return {"loss": loss.item()}

        def export(self, out):
            (out / "mean.txt").write_text(f"{self.modules['m'].weight.item():.3f}")

    class Plugin:
        @hookimpl
        def register_trainers(self, register):
            register(Mean)

    host = make_host([("fake", FakePlugin()), ("mean", Plugin())], entry_points=False)
    result = train(host.registry.trainer("fake.text"), TrainConfig(data="1,2,3", out=tmp_path / "w", log_every=10),
                   show_progress=False)
    assert abs(float((tmp_path / "w" / "mean.txt").read_text()) - 2.0) < 0.01
    assert result.steps == 100 and result.losses["loss"] < 0.7  # the variance of 1, 2, 3 is 0.67


def test_hook_identify_model(tmp_path, monkeypatch):
    import json
    import struct

    import studio.host.plugins
    from studio.cli import cli

    class Families:
        @hookimpl
        def identify_model(self, path, header):
            return {"family": "SDXL"} if "conditioner.embedders.1.model.ln_final.weight" in header else None

    header = json.dumps({"conditioner.embedders.1.model.ln_final.weight": {
        "dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "xl.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("families", Families())], entry_points=False))
    result = CliRunner().invoke(cli, ["models", "list", "--json", "--models", str(tmp_path / "checkpoints")])
    assert [row["family"] for row in json.loads(result.stdout)] == ["SDXL"]
