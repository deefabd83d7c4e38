import json
import pytest
import torch

from studio.errors import NonFiniteOutput, UserError
from studio.execute.runtime import ModelCache, Runtime, check_finite, choose_precision, module_nbytes
from studio.generator import Generator, Params
from studio.hookspecs import hookimpl
from studio.testing import make_context, run_yaml
from studio_diffusers.prepare import prepare_autoencoder


def test_precision_auto_is_fp32_on_cpu_and_narrows_to_what_a_generator_supports():
    assert choose_precision("auto", "cpu", ("bf16", "fp16", "fp32")) == "fp32"
    assert choose_precision("bf16", "cpu", ("bf16", "fp32")) == "bf16"  # asked for explicitly
    assert choose_precision("fp16", "cpu", ("bf16", "fp32")) == "fp32"  # not supported: fp32
    assert choose_precision("fp16", "cpu", ("bf16",)) == "bf16"


def test_precision_auto_on_cuda_takes_the_generators_first_choice_the_gpu_runs():
    assert choose_precision("auto", "cuda", ("bf16", "fp16", "fp32"), bf16_ok=True) == "bf16"
    assert choose_precision("auto", "cuda", ("fp16", "bf16", "fp32"), bf16_ok=True) == "fp16"
    assert choose_precision("auto", "cuda", ("bf16", "fp16", "fp32"), bf16_ok=False) == "fp16"
    assert choose_precision("auto", "cuda:1", ("fp32",), bf16_ok=True) == "fp32"


def test_missing_cuda_is_a_clear_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"device 'cuda' was asked for, but CUDA is not available here"):
        Runtime("cuda").check_device()
    assert Runtime("auto").device == "cpu"


def test_model_cache_evicts_least_recently_used_within_budget():
    one_mb = 256 * 1024  # float32 values
    cache = ModelCache(max_bytes=int(2.5 * 4 * one_mb))

    def make():
        return torch.nn.Linear(one_mb, 1, bias=False)

    assert module_nbytes(make()) == 4 * one_mb
    cache.get("a", make)
    cache.get("b", make)
    cache.get("a", make)  # a is now the most recent
    cache.get("c", make)  # over budget: b goes
    assert cache.keys() == ["a", "c"] and cache.loads == 3 and cache.hits == 1
    assert cache.used == 2 * 4 * one_mb


def test_nan_guard_on_tensors():
    check_finite(torch.ones(3), "x")
    with pytest.raises(NonFiniteOutput, match="x contains NaN or Inf"):
        check_finite(torch.tensor([1.0, float("inf")]), "x")


class Counting(Generator):
    name = "test.counting"
    description = "A tiny torch model, loaded through the model cache."
    outputs = {"text": "text/plain"}
    loads = 0

    class Params(Params):
        model: str = "default"

    def load(self, params, ctx):
        Counting.loads += 1
        torch.manual_seed(0)
        return torch.nn.Linear(2, 1)

    def generate(self, params, ctx):
        model = ctx.model(self, params)
        assert next(model.parameters()).device.type == ctx.device and not model.training
        noise = torch.randn(1, 2, generator=ctx.torch_generator())
        return {"text": f"{model(noise).item():.6f}"}


class CountingPlugin:
    @hookimpl
    def register_generators(self, register):
        register(Counting)


def test_a_model_used_by_several_steps_loads_once_and_seeds_are_reproducible(tmp_path):
    Counting.loads = 0
    text = "name: m\nsteps:\n  - {id: a, uses: test.counting, sweep: {seed: [1, 2]}}\n  - {id: b, uses: test.counting, with: {seed: 1}}\n"
    result = run_yaml(text, tmp_path, plugins=[("counting", CountingPlugin())], use_cache=False)
    assert Counting.loads == 1
    a1, a2 = [r.artifacts["text"].read_text() for r in result.step("a")]
    (b1,) = [r.artifacts["text"].read_text() for r in result.step("b")]
    assert a1 == b1 != a2


def test_an_unavailable_gpu_fails_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="device 'cuda:1' was asked for"):
        run_yaml("name: g\ndevice: cuda:1\nsteps:\n  - {id: a, uses: image.title, with: {text: hi}}\n", tmp_path)
    assert not (tmp_path / "runs").exists()


def test_torch_free_pipelines_do_not_choose_a_device(tmp_path):
    result = run_yaml("name: t\nsteps:\n  - {id: a, uses: image.title, with: {text: hi, width: 32, height: 32}}\n",
                      tmp_path)
    import json

    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["runtime"]["device"] == "none (no generator used torch)"
    assert manifest["runtime"]["requested_device"] == "auto"


def test_cli_memory_budgets_reach_the_model_cache(tmp_path, monkeypatch):
    """--max-ram-gb bounds the model cache on the CPU, and the manifest says so."""
    import json

    from click.testing import CliRunner

    import studio.host.plugins
    from studio.cli import cli
    from studio.testing import FakePlugin, make_host

    monkeypatch.setattr(studio.host.plugins, "_default", make_host([("fake", FakePlugin())]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text("name: p\ndevice: cpu\nsteps:\n  - {id: a, uses: fake.image}\n")
    result = CliRunner().invoke(cli, ["run", "p.yaml", "-q", "--max-ram-gb", "0.5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / result.output.strip() / "manifest.json").read_text())
    assert manifest["runtime"]["model_cache"]["budget_gb"] == 0.5


def test_compile_gives_the_eager_output_and_reports_the_first_batch(tmp_path):
    """`compile: true` torch.compiles the step's models in place; the image is the
    eager one (up to float reassociation), and the manifest says what compiling cost."""
    import json

    import numpy as np
    from PIL import Image

    from studio.testing import run_yaml

    steps = [{"id": "eager", "uses": "image.gan", "with": {"seed": 4}},
             {"id": "compiled", "uses": "image.gan", "compile": True, "with": {"seed": 4}}]
    # no step cache: the compiled step has the eager step's key (same outputs) and would be restored
    result = run_yaml(json.dumps({"name": "c", "device": "cpu", "steps": steps}), tmp_path, use_cache=False)
    assert result.status == "done", [r.error for r in result.failed]
    eager, compiled = (np.asarray(Image.open(result.artifacts(s)[0].path), dtype=int) for s in ("eager", "compiled"))
    assert np.abs(eager - compiled).max() <= 2
    report = json.loads(result.manifest_path.read_text())["runtime"]["compile"]
    assert report["modules"] >= 1 and report["first_batch_s (includes compiling)"]["compiled"] > 0


def test_compile_must_be_a_boolean(write_yaml):
    import pytest

    from studio.errors import PipelineError
    from studio.pipeline.validate import load_spec
    from studio.testing import make_host

    path = write_yaml("name: c\ncompile: yes please\nsteps:\n  - {id: a, uses: image.gan, compile: 3}\n")
    with pytest.raises(PipelineError) as caught:
        load_spec(path, make_host().registry)
    text = str(caught.value)
    assert "pipeline.yaml:2: compile: got 'yes please'; allowed: true | false" in text
    assert "steps[0].compile (step 'a'): got 3; allowed: true | false" in text


def overflowing_vae():
    """A tiny AutoencoderKL whose decoder's last layer passes fp16's 65504 (as SDXL's
    VAE does at full size) while fp32 is fine."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), block_out_channels=(32,), latent_channels=4,
                        norm_num_groups=8, sample_size=16).eval()
    with torch.no_grad():
        vae.decoder.conv_out.weight.fill_(2000.0)
    return vae


@torch.inference_mode()
def test_an_fp16_decoder_that_overflows_is_upcast_to_fp32_and_the_rest_stays_half():
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    reference = overflowing_vae().decode(z).sample
    plain_half = overflowing_vae().half()
    assert not torch.isfinite(plain_half.decode(z.half()).sample).all()  # the overflow is real

    ctx = make_context(precision="fp16")
    vae = prepare_autoencoder(overflowing_vae(), ctx)
    runtime = ctx.runtime
    out = vae.decode(z.half()).sample
    assert torch.isfinite(out).all() and vae.dtype == torch.float32
    assert torch.allclose(out, reference, rtol=2e-3, atol=1.0)  # weights went through fp16 once
    assert runtime.upcast == ["AutoencoderKL"]
    assert runtime.describe()["upcast_to_fp32"] == ["AutoencoderKL"]


@torch.inference_mode()
def test_an_fp16_decoder_in_range_stays_half():
    vae = overflowing_vae()
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(1e-4)
    ctx = make_context(precision="fp16")
    vae = prepare_autoencoder(vae, ctx)
    runtime = ctx.runtime
    out = vae.decode(torch.randn((1, 4, 8, 8)).half()).sample
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert vae.dtype == torch.float16 and runtime.upcast == []


def test_a_text_to_image_pipeline_in_fp16_upcasts_only_its_overflowing_vae(tiny_sd_dir, tmp_path):
    import shutil

    from diffusers import AutoencoderKL

    model = tmp_path / "sd-hot-vae"
    shutil.copytree(tiny_sd_dir, model)
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae")
    with torch.no_grad():
        vae.decoder.conv_out.weight.fill_(2000.0)
    vae.save_pretrained(model / "vae")
    step = {"id": "i", "uses": "image.diffusion", "with": {"model": str(model), "prompt": "a cat", "steps": 2}}
    result = run_yaml(f"name: h\ndevice: cpu\nprecision: fp16\nsteps: [{step}]\n", tmp_path)
    assert result.status == "done", [i.error for i in result.failed]
    runtime = json.loads(result.manifest_path.read_text())["runtime"]
    assert runtime["upcast_to_fp32"] == ["AutoencoderKL"]
    assert result.artifacts("i")[0].path.stat().st_size > 0


def test_the_nan_guard_covers_text_to_image_pipelines(tiny_sd_dir, tmp_path):
    import shutil

    from diffusers import UNet2DConditionModel

    model = tmp_path / "sd-nan-unet"
    shutil.copytree(tiny_sd_dir, model)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    with torch.no_grad():
        unet.conv_out.bias.fill_(float("nan"))
    unet.save_pretrained(model / "unet")
    step = {"id": "i", "uses": "image.diffusion", "with": {"model": str(model), "prompt": "a cat", "steps": 2}}
    result = run_yaml(f"name: h\ndevice: cpu\nsteps: [{step}]\n", tmp_path)
    assert result.status != "done"
    assert "NaN or Inf" in result.failed[0].error and "latents" in result.failed[0].error
    assert not (result.run_dir / "i").exists() or not any((result.run_dir / "i").iterdir())


def test_modules_a_model_keeps_in_fp32_stay_fp32_when_the_rest_is_cast():
    class Tower(torch.nn.Module):
        _keep_in_fp32_modules = ["head"]

        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 2)

    model = Runtime("cpu", "bf16").prepare(Tower(), "bf16")
    assert model.body.weight.dtype == torch.bfloat16
    assert model.head.weight.dtype == torch.float32
    assert Runtime("cpu", "fp32").prepare(Tower(), "fp32").body.weight.dtype == torch.float32


def test_compiling_an_autoencoder_compiles_the_encoder_and_decoder_its_methods_call():
    """nn.Module.compile covers `vae(...)`, but a VAE is used through vae.encode/decode."""
    from studio.generator import StepContext

    def is_compiled(module):
        return getattr(module, "_compiled_call_impl", None) is not None

    runtime = Runtime("cpu", "fp32")
    ctx = StepContext(step_id="t", item_name="t", seed=0, runtime=runtime, precision="fp32", compile=True)
    vae = prepare_autoencoder(overflowing_vae(), ctx)
    assert is_compiled(vae.encoder) and is_compiled(vae.decoder) and runtime.compiled == 2
    linear = runtime.prepare(torch.nn.Linear(2, 2), "fp32", compile=True)
    assert is_compiled(linear) and runtime.compiled == 3
