"""The model library: A1111 and ComfyUI folder trees built here with tiny safetensors
files, `studio models list | show`, the hash cache, names resolved in pipelines
(`model:` and image.diffusion's `loras: [{name}]`), did-you-mean, duplicates, bounds."""

import json
import os
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import Field

import studio.host.plugins
from studio import Generator, Params, media, model_input
from studio.cli import cli
from studio.hookspecs import hookimpl
from studio.models import hashes, scan
from studio.models.library import ModelLibrary, ModelNotFound
from studio.testing import FakePlugin, make_host, run_yaml

EMBEDDED = Path(__file__).resolve().parent.parent / "plugins" / "studio_image" / "weights"


def safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    """A valid .safetensors file of zero-filled tensors {name: (dtype, shape)}."""
    header, data = {}, b""
    for name, (dtype, shape) in tensors.items():
        size = {"F16": 2, "F32": 4}[dtype] * (shape[0] * (shape[1] if len(shape) > 1 else 1))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += b"\0" * size
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.fixture
def trees(tmp_path, monkeypatch):
    """An A1111 folder and a ComfyUI folder, both holding 'dreamshaper_8'."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("STUDIO_MODELS", raising=False)
    a1111, comfy = tmp_path / "webui", tmp_path / "ComfyUI"
    safetensors(a1111 / "models/Stable-diffusion/dreamshaper_8.safetensors", {"w": ("F16", [2, 2])})
    safetensors(a1111 / "models/Stable-diffusion/sdxl/juggernaut.safetensors", {"w": ("F16", [4])})
    kohya = {"ss_base_model_version": "sd_v1", "ss_network_dim": "4",
             "ss_tag_frequency": json.dumps({"set": {"cat": 5, " dog": 3}, "more": {"cat": 1}})}
    safetensors(a1111 / "models/Lora/detail_tweaker.safetensors",
                {"lora_unet_x.lora_down.weight": ("F16", [4, 8]), "lora_unet_x.lora_up.weight": ("F32", [8, 4])}, kohya)
    safetensors(a1111 / "embeddings/bad_hands.safetensors", {"emb_params": ("F32", [2, 8])})
    safetensors(comfy / "models/checkpoints/dreamshaper_8.safetensors", {"w": ("F32", [2])})
    safetensors(comfy / "models/loras/comfy_only.safetensors", {"w": ("F32", [2])})
    safetensors(comfy / "models/upscale_models/4x.pth", {"w": ("F32", [1])})  # any bytes: listed, not read
    with open(comfy / "models/checkpoints/huge.ckpt", "wb") as f:  # a sparse 64 MB file
        f.truncate(64 * 2**20)
    return a1111, comfy


@pytest.fixture
def invoke(monkeypatch):
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("fake", FakePlugin())], entry_points=False))
    return lambda *args: CliRunner().invoke(cli, [str(a) for a in args])


def test_list_reads_a1111_and_comfyui_layouts(trees, invoke):
    a1111, comfy = trees
    result = invoke("models", "list", "--models", a1111, "--models", comfy / "models", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    found = {(r["kind"], r["name"]) for r in rows}
    assert found == {("checkpoint", "dreamshaper_8"), ("checkpoint", "sdxl/juggernaut"), ("checkpoint", "huge"),
                     ("lora", "detail_tweaker"), ("lora", "comfy_only"), ("embedding", "bad_hands"),
                     ("upscaler", "4x")}
    dream = next(r for r in rows if r["name"] == "dreamshaper_8")
    assert dream["path"] == str(a1111 / "models/Stable-diffusion/dreamshaper_8.safetensors")  # the first folder
    assert dream["hash"] == dream["sha256"][:10] and dream["family"] is None
    assert next(r for r in rows if r["name"] == "huge")["size"] == 64 * 2**20
    assert "took" in result.stderr and "first folder given wins" in result.stderr
    text = invoke("models", "list", "--kind", "lora", "--models", a1111)
    assert "detail_tweaker" in text.output and "dreamshaper" not in text.output and " ? " in text.output


def test_a_kind_folder_and_comfyuis_extra_model_paths(trees, invoke, tmp_path):
    a1111, comfy = trees
    (comfy / "extra_model_paths.yaml").write_text(
        f"a111:\n  base_path: {a1111}\n  checkpoints: models/Stable-diffusion\n  loras: |\n    models/Lora\n"
        "    models/LyCORIS\n  configs: models/Stable-diffusion\n")
    library = ModelLibrary.from_dirs([comfy])
    assert {m.name for m in library.models("lora")} == {"comfy_only", "detail_tweaker"}
    alone = ModelLibrary.from_dirs([a1111 / "models" / "Lora"])
    assert [m.name for m in alone.all()] == ["detail_tweaker"]
    both = ModelLibrary.from_dirs([a1111, comfy])  # A1111's Lora folder reached twice counts once
    assert both.find("detail_tweaker", "lora") and not any("two folders" in note for note in both.notes)
    (comfy / "extra_model_paths.yaml").write_text("[unclosed")
    broken = ModelLibrary.from_dirs([comfy])
    assert [m.name for m in broken.models("lora")] == ["comfy_only"]
    assert any("cannot be read as YAML" in note for note in broken.notes)


def test_show_says_what_the_file_says(trees, invoke):
    a1111, _ = trees
    result = invoke("models", "show", "detail_tweaker", "--models", a1111, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["kind"] == "lora" and facts["tensors"] == 2 and facts["dtypes"] == {"F16": 1, "F32": 1}
    assert facts["metadata"]["ss_network_dim"] == "4"
    assert facts["metadata"]["ss_tag_frequency"] == "cat (6), dog (3) (2 tags in all)"
    text = invoke("models", "show", "detail_tweaker", "--models", a1111).output
    assert "ss_base_model_version: sd_v1" in text and "hash: " + facts["hash"] in text
    missing = invoke("models", "show", "detail_tweeker", "--models", a1111)
    assert missing.exit_code == 2 and "Did you mean 'detail_tweaker'?" in missing.output


def test_the_family_comes_from_a_plugin(trees, monkeypatch):
    class Families:
        @hookimpl
        def identify_model(self, path, header):
            return {"family": "SD1"} if "lora_unet_x.lora_down.weight" in header else None

    monkeypatch.setattr(studio.host.plugins, "_default",
                        make_host([("fake", FakePlugin()), ("families", Families())], entry_points=False))
    rows = json.loads(CliRunner().invoke(cli, ["models", "list", "--json", "--models", str(trees[0])]).stdout)
    assert {r["name"]: r["family"] for r in rows}["detail_tweaker"] == "SD1"
    assert {r["name"]: r["family"] for r in rows}["dreamshaper_8"] is None


def test_hashes_are_remembered_by_path_size_and_time(trees, monkeypatch):
    a1111, _ = trees
    computed = []
    real = hashes._hash_file
    monkeypatch.setattr(hashes, "_hash_file", lambda path: computed.append(path) or real(path))
    models = ModelLibrary.from_dirs([a1111]).all()
    first = hashes.HashCache()
    digests = [first.sha256(m) for m in models]
    first.save()
    assert first.computed == len(models) == len(computed)
    again = hashes.HashCache()
    assert [again.sha256(m) for m in models] == digests and again.hits == len(models) and again.computed == 0
    cache_file = again.path
    cache_file.write_text("{not json")  # damaged: ignored and rebuilt
    rebuilt = hashes.HashCache()
    assert [rebuilt.sha256(m) for m in models] == digests and rebuilt.computed == len(models)
    rebuilt.save()
    lying = json.loads(cache_file.read_text())
    key = os.path.realpath(models[0].path)
    lying["files"][key][2] = "0" * 64  # a lie for another mtime is not believed
    lying["files"][key][1] += 1
    cache_file.write_text(json.dumps(lying))
    assert hashes.HashCache().sha256(models[0]) == digests[0]


def test_names_sub_folders_suffixes_and_did_you_mean(trees):
    a1111, comfy = trees
    library = ModelLibrary.from_dirs([a1111, comfy])
    assert library.find("sdxl/juggernaut", "checkpoint").name == "sdxl/juggernaut"
    assert library.find("juggernaut", "checkpoint").name == "sdxl/juggernaut"
    assert library.find("dreamshaper_8.safetensors", "checkpoint").path.parent.name == "Stable-diffusion"
    with pytest.raises(ModelNotFound, match="Did you mean 'dreamshaper_8'"):
        library.find("dreamshaper8", "checkpoint")
    safetensors(a1111 / "models/Stable-diffusion/sd15/juggernaut.safetensors", {"w": ("F16", [4])})
    with pytest.raises(ModelNotFound, match="give one of these names"):
        ModelLibrary.from_dirs([a1111]).find("juggernaut", "checkpoint")


def test_studio_models_comes_after_the_models_option(trees, monkeypatch):
    a1111, comfy = trees
    monkeypatch.setenv("STUDIO_MODELS", os.pathsep.join([str(comfy), str(a1111)]))
    from_env = ModelLibrary.from_dirs()
    assert from_env.find("dreamshaper_8", "checkpoint").path.is_relative_to(comfy)
    both = ModelLibrary.from_dirs([a1111])
    assert both.find("dreamshaper_8", "checkpoint").path.is_relative_to(a1111)
    assert [how for _, how in both.roots] == ["--models", "STUDIO_MODELS"]  # a1111 once
    assert any("from --models" in note and "folder 1 of 2" in note for note in both.notes)


def test_a_symlink_loop_and_a_huge_folder_are_cut_with_a_note(tmp_path, monkeypatch):
    loras = tmp_path / "models" / "Lora"
    safetensors(loras / "a" / "one.safetensors", {"w": ("F16", [1])})
    (loras / "a" / "back").symlink_to(loras, target_is_directory=True)
    (loras / "self").symlink_to(loras / "self")
    library = ModelLibrary.from_dirs([tmp_path])
    assert [m.name for m in library.models("lora")] == ["a/one"]
    assert any("symbolic link loop" in note for note in library.notes)
    crowd = tmp_path / "crowd" / "models" / "Lora"
    crowd.mkdir(parents=True)
    for n in range(60):
        (crowd / f"x{n}.txt").touch()
    monkeypatch.setattr(scan, "MAX_SCAN_ENTRIES", 50)
    cut = ModelLibrary.from_dirs([tmp_path / "crowd"])
    assert cut.models("lora") == [] and any("more than Studio looks through" in n for n in cut.notes)


class Checkpointed(Generator):
    name = "fake.checkpointed"
    description = "Echoes its model's path (for tests)."
    outputs = {"text": media.TEXT}

    class Params(Params):
        model: str = model_input("default", suffixes=(".safetensors",), kind="checkpoint")
        vae: str = model_input("default", suffixes=(".safetensors",), description="a VAE")  # kind: its name
        note: str = Field("", max_length=10)

    def generate(self, params, ctx):
        return {"text": params.model}


class CheckpointPlugin:
    @hookimpl
    def register_generators(self, register):
        register(Checkpointed)


def test_a_name_resolves_to_the_path_the_manifest_records(trees, tmp_path, monkeypatch):
    a1111, comfy = trees
    monkeypatch.setenv("STUDIO_MODELS", f"{a1111}{os.pathsep}{comfy}")
    result = run_yaml("name: n\nsteps:\n  - {id: a, uses: fake.checkpointed, with: {model: juggernaut}}\n",
                      tmp_path / "p", plugins=[("ckpt", CheckpointPlugin())])
    path = str(a1111 / "models/Stable-diffusion/sdxl/juggernaut.safetensors")
    assert result.artifacts()[0].read_text() == path
    manifest = json.loads(result.manifest_path.read_text())
    assert json.dumps(manifest).count(path) >= 1 and "\"juggernaut\"" not in json.dumps(manifest["steps"])


def test_a_missing_name_is_located_with_a_did_you_mean(trees, tmp_path):
    from studio import api
    from studio.errors import PipelineError
    from studio.pipeline.options import PipelineOptions

    a1111, _ = trees
    path = tmp_path / "p.yaml"
    path.write_text("name: n\nsteps:\n  - id: a\n    uses: fake.checkpointed\n    with:\n      model: dreamshapr_8\n"
                    "      vae: dreamshaper_8\n")
    host = make_host([("ckpt", CheckpointPlugin())], entry_points=False)
    with pytest.raises(PipelineError) as caught:
        api.load_with(path, PipelineOptions(model_dirs=(a1111,)), host).plan()
    text = str(caught.value)
    assert "p.yaml:6: steps[0].with.model (step 'a')" in text and "Did you mean 'dreamshaper_8'?" in text
    assert "p.yaml:7: steps[0].with.vae (step 'a')" in text and "no vae is called 'dreamshaper_8'" in text
    with pytest.raises(ValueError, match="allowed checkpoint, lora"):
        model_input(kind="checkpoints")


def test_image_diffusion_takes_a_checkpoint_and_loras_by_name(tmp_path, monkeypatch):
    """The embedded model and LoRA, linked into an A1111 tree, named in a pipeline."""
    from studio import api
    from studio.pipeline.options import PipelineOptions

    monkeypatch.delenv("STUDIO_MODELS", raising=False)
    webui = tmp_path / "webui" / "models"
    (webui / "Stable-diffusion").mkdir(parents=True)
    (webui / "Lora").mkdir()
    (webui / "Stable-diffusion" / "emoji").symlink_to(EMBEDDED / "diffusion", target_is_directory=True)
    (webui / "Lora" / "outline.safetensors").symlink_to(EMBEDDED / "lora-outline" / "pytorch_lora_weights.safetensors")
    path = tmp_path / "p.yaml"
    path.write_text("name: n\nsteps:\n  - id: a\n    uses: image.diffusion\n    with: {model: emoji, prompt: cat, "
                    "steps: 2, loras: [{name: outline}]}\n")
    plan = api.load_with(path, PipelineOptions(model_dirs=(tmp_path / "webui",))).plan()
    assert plan.items[0].params["model"] == str((EMBEDDED / "diffusion").resolve())
    from studio_image.diffusion_lora import Lora

    library = ModelLibrary.from_dirs([tmp_path / "webui"])
    lora = Lora.model_validate({"name": "outline", "scale": 0.5}, context={"models": library})
    assert lora.path == str((EMBEDDED / "lora-outline" / "pytorch_lora_weights.safetensors").resolve())
    with pytest.raises(ValueError, match="Did you mean 'outline'"):
        Lora.model_validate({"name": "outlines"}, context={"models": library})
    with pytest.raises(ValueError, match="not both"):
        Lora.model_validate({"name": "outline", "path": "x.safetensors"}, context={"models": library})


def test_the_models_option_of_validate_plan_and_run(trees, tmp_path, monkeypatch):
    a1111, _ = trees
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("ckpt", CheckpointPlugin())], entry_points=False))
    (tmp_path / "p.yaml").write_text("name: n\nsteps:\n  - {id: a, uses: fake.checkpointed, with: {model: dreamshaper_8}}\n")
    invoke = lambda *args: CliRunner().invoke(cli, [str(a) for a in args])  # noqa: E731
    assert invoke("validate", "p.yaml", "--models", a1111).exit_code == 0
    refused = invoke("validate", "p.yaml")
    assert refused.exit_code == 2 and "--models DIR" in refused.output
    assert invoke("plan", "p.yaml", "--json", "--models", a1111).exit_code == 0
    ran = invoke("run", "p.yaml", "-q", "--models", a1111)
    assert ran.exit_code == 0, ran.output
    written = (tmp_path / ran.stdout.strip() / "a" / "text.txt").read_text()
    assert written == str(a1111 / "models/Stable-diffusion/dreamshaper_8.safetensors")


def test_invokeai_and_fooocus_layouts(tmp_path):
    invoke_root, fooocus = tmp_path / "invokeai", tmp_path / "Fooocus"
    safetensors(invoke_root / "models/sd-1/main/photon.safetensors", {"w": ("F16", [1])})
    safetensors(invoke_root / "models/sdxl/lora/pixel.safetensors", {"w": ("F16", [1])})
    safetensors(invoke_root / "models/sdxl/vae/sdxl_vae/diffusion_pytorch_model.safetensors", {"w": ("F16", [1])})
    (invoke_root / "models/sdxl/vae/sdxl_vae/config.json").write_text("{}")  # a diffusers folder is one model
    safetensors(fooocus / "models/checkpoints/juggernautXL.safetensors", {"w": ("F16", [1])})
    library = ModelLibrary.from_dirs([invoke_root, fooocus])
    assert {(m.kind, m.name) for m in library.all()} == {
        ("checkpoint", "photon"), ("checkpoint", "juggernautXL"), ("lora", "pixel"), ("vae", "sdxl_vae")}


def test_the_second_listing_hashes_nothing(trees, invoke, monkeypatch):
    computed = []
    real = hashes._hash_file
    monkeypatch.setattr(hashes, "_hash_file", lambda path: computed.append(path) or real(path))
    first = invoke("models", "list", "--json", "--models", trees[0])
    hashed = len(computed)
    second = invoke("models", "list", "--json", "--models", trees[0])
    assert hashed == len(json.loads(first.stdout)) and len(computed) == hashed
    assert json.loads(second.stdout) == json.loads(first.stdout)


@pytest.mark.parametrize("text", [
    "a: {base_path: 5, loras: [1, 2]}", "- 1\n- 2", "a: {base_path: \"x\\0y\", loras: models/Lora}",
    "a: &x {loras: \"\\0\"}\nb: *x", "a: {checkpoints: '" + "../" * 2000 + "'}", "x" * 70_000,
    "a: {base_path: /, checkpoints: /, loras: usr}", "a: {base_path: '~', loras: .}"])
def test_a_hostile_extra_model_paths_is_left_out_or_read_safely(tmp_path, text):
    comfy = tmp_path / "ComfyUI"
    safetensors(comfy / "models/loras/mine.safetensors", {"w": ("F16", [1])})
    (comfy / "extra_model_paths.yaml").write_text(text)
    library = ModelLibrary.from_dirs([comfy])
    assert [m.name for m in library.all()] == ["mine"]
