import os
import subprocess
import sys
import textwrap
import types

import pytest

from studio.hookspecs import hookimpl
from studio.host.plugins import PluginWarning
from studio.testing import FakePlugin, FakeText, make_host


def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def test_builtin_plugins_come_through_the_entry_point_group():
    host = make_host()
    utils = host.registry.plugins["utils"]
    assert utils.module == "studio_utils" and utils.distribution == "studio-media" and utils.ok
    assert set(utils.generators) == {"text.template", "image.grid", "image.resize", "image.title"}
    assert host.registry.plugin_of("image.grid") == "utils"


def test_a_plugins_own_tests_may_name_it_while_it_is_installed():
    """studio_run(..., plugins=[("utils", studio_utils)]) in the plugin's tests, after
    `pip install -e .`: the same module is the same plugin, not a second one."""
    import warnings

    import studio_utils

    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        host = make_host([("utils", studio_utils)])
    assert host.registry.plugins["utils"].ok and "image.grid" in host.registry.generators
    with pytest.warns(PluginWarning, match="a second plugin named 'utils'"):
        make_host([("utils", FakePlugin())])  # another plugin under a taken name is still reported


def test_a_plugin_whose_hook_raises_is_reported_not_fatal():
    @hookimpl
    def register_generators(register):
        raise RuntimeError("weights missing")

    with pytest.warns(PluginWarning, match="plugin 'broken': hook register_generators raised RuntimeError: weights missing"):
        host = make_host([("broken", module("broken", register_generators=register_generators)),
                          ("fake", FakePlugin())])
    assert not host.registry.plugins["broken"].ok
    assert "fake.text" in host.registry.generators and "image.grid" in host.registry.generators


def test_misspelled_hook_is_caught():
    @hookimpl
    def register_generator(register):  # missing the s
        pass

    with pytest.warns(PluginWarning):
        host = make_host([("typo", module("typo", register_generator=register_generator))])
    assert host.registry.plugins["typo"].errors == [
        "implements unknown hook 'register_generator'. Did you mean 'register_generators'? Known hooks: "
        "artifact_saved, identify_model, register_artifact_writers, register_commands, register_generators, "
        "register_trainers, run_step"
    ]
    host.pm.check_pending()  # the broken plugin is out; nothing pending remains


def test_duplicate_generator_names_name_both_plugins():
    class Again(FakeText):
        pass

    @hookimpl
    def register_generators(register):
        register(Again)

    with pytest.warns(PluginWarning):
        host = make_host([("fake", FakePlugin()), ("copycat", module("copycat", register_generators=register_generators))])
    message = ("generator 'fake.text' is registered by both 'fake' and 'copycat'; uninstall one, "
               "or choose with STUDIO_LOAD_PLUGINS")
    assert message in host.registry.plugins["fake"].errors and message in host.registry.plugins["copycat"].errors
    from studio.errors import UserError

    with pytest.raises(UserError, match="generator 'fake.text' is registered by both 'fake' and 'copycat'"):
        host.registry.generator("fake.text")


def test_bad_generator_class_is_reported():
    class Nameless(FakeText):
        name = "NoModality"

    @hookimpl
    def register_generators(register):
        register(Nameless)

    with pytest.warns(PluginWarning, match="must look like '<modality>.<name>'"):
        make_host([("bad", module("bad", register_generators=register_generators))], entry_points=False)


def test_load_plugins_filter():
    host = make_host([("fake", FakePlugin())], env={"STUDIO_LOAD_PLUGINS": "fake"})
    assert set(host.registry.plugins) == {"studio", "fake"}
    host = make_host([("fake", FakePlugin())], env={"STUDIO_LOAD_PLUGINS": ""})
    assert set(host.registry.plugins) == {"studio"} and host.registry.generators == {}


@pytest.fixture
def third_party(tmp_path):
    """A real installed distribution: a module plus a .dist-info with entry points,
    on a directory that goes on PYTHONPATH, as pip would lay it out."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_studio.py").write_text(textwrap.dedent('''
        from pydantic import Field
        from studio import Generator, Params, hookimpl, media

        class Shout(Generator):
            name = "text.shout"
            description = "Upper-cases its prompt."
            outputs = {"text": media.TEXT}

            class Params(Params):
                prompt: str = Field(..., max_length=100, description="What to shout.")

            def generate(self, params, ctx):
                return {"text": params.prompt.upper() + "!"}

        @hookimpl
        def register_generators(register):
            register(Shout)
    '''))
    (site / "acme_broken.py").write_text("raise ImportError('needs libfoo')\n")
    dist = site / "acme_studio-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-studio\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[studio]\nacme = acme_studio\nbroken = acme_broken\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("STUDIO_LOAD_PLUGINS", None)
    return env


def studio(args, env, cwd=None):
    return subprocess.run([sys.executable, "-m", "studio", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_third_party_plugin_installed_as_a_package(third_party, tmp_path):
    listing = studio(["plugins", "list", "--json"], third_party)
    assert listing.returncode == 0, listing.stderr
    import json

    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert plugins["acme"]["distribution"] == "acme-studio" and plugins["acme"]["version"] == "1.2.3"
    assert plugins["acme"]["generators"] == ["text.shout"]
    assert plugins["broken"]["errors"] == ["failed to import 'acme_broken': ImportError: needs libfoo"]
    assert "warning: plugin 'broken': failed to import 'acme_broken': ImportError: needs libfoo" in listing.stderr

    (tmp_path / "p.yaml").write_text("name: loud\nsteps:\n  - {id: a, uses: text.shout, with: {prompt: hey}}\n")
    ran = studio(["run", "p.yaml", "--quiet"], third_party, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    run_dir = tmp_path / ran.stdout.strip()
    assert (run_dir / "a" / "text.txt").read_text() == "HEY!"

    # the same again is served from the cache; after an edit of the plugin's code it is made again
    import json as json_module

    def statuses(stdout):
        manifest = json_module.loads((tmp_path / stdout.strip() / "manifest.json").read_text())
        return [i["status"] for i in manifest["steps"]["a"]["items"]]

    again = studio(["run", "p.yaml", "--quiet"], third_party, cwd=tmp_path)
    assert statuses(again.stdout) == ["cached"]
    source = tmp_path / "site" / "acme_studio.py"
    source.write_text(source.read_text().replace('"!"', '"!!"'))
    edited = studio(["run", "p.yaml", "--quiet"], third_party, cwd=tmp_path)
    assert statuses(edited.stdout) == ["done"]
    assert (tmp_path / edited.stdout.strip() / "a" / "text.txt").read_text() == "HEY!!"

    # a generator of the plugin that failed: the message says which plugin broke and why
    (tmp_path / "q.yaml").write_text("name: q\nsteps:\n  - {id: a, uses: text.libfoo, with: {}}\n")
    checked = studio(["validate", "q.yaml"], third_party, cwd=tmp_path)
    assert checked.returncode == 2
    assert ("Plugins that failed to load, whose generators are missing: 'broken' (\"failed to import 'acme_broken': "
            "ImportError: needs libfoo\")") in checked.stdout + checked.stderr


def test_trace_prints_hook_calls(third_party):
    env = {**third_party, "STUDIO_TRACE_PLUGINS": "1", "STUDIO_LOAD_PLUGINS": "acme,utils"}
    out = studio(["plugins", "list"], env)
    assert out.returncode == 0
    assert "register_generators [hook]" in out.stderr
    # each call names the plugins it reaches
    lines = out.stderr.splitlines()
    assert "studio: hook register_generators -> acme" in lines and "studio: hook register_generators -> utils" in lines
    assert "broken" not in out.stdout  # filtered out


def test_cli_validation_and_torch_free_runs_never_import_heavy_libraries(tmp_path):
    (tmp_path / "p.yaml").write_text("name: x\nsteps:\n  - {id: a, uses: image.title, with: {text: hi}}\n")
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from studio.cli import cli
        runner = CliRunner()
        for args in (["--help"], ["validate", r"{tmp_path / 'p.yaml'}"], ["plan", r"{tmp_path / 'p.yaml'}"],
                     ["plugins", "list"], ["plugins", "show", "image.grid"],
                     ["run", "-q", "--out", r"{tmp_path / 'runs'}", r"{tmp_path / 'p.yaml'}"]):
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)
        heavy = sorted(m for m in ("torch", "diffusers", "transformers", "torchaudio") if m in sys.modules)
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_writer_cannot_name_files_outside_the_run_directory():
    from studio.execute.artifacts import Writer

    @hookimpl
    def register_artifact_writers(register):
        register(Writer("image/png", "../../evil", lambda v, p, prov: None))

    with pytest.warns(PluginWarning, match=r"extension '../../evil' must match"):
        host = make_host([("evil", module("evil", register_artifact_writers=register_artifact_writers))])
    assert host.registry.writer("image/png").plugin == "studio"
