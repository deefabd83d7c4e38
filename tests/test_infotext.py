"""A1111's `parameters` text on image.diffusion's images: what it says, how it is quoted,
and that A1111's reading rules give back the values used."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image
from studio_image.diffusion_infotext import lora_hash, model_hash, sampler_names

from studio.errors import UserError
from studio.interop.a1111 import pairs, parse, quote, unquote
from studio.testing import run_yaml

WEIGHTS = Path(__file__).parents[1] / "plugins" / "studio_image" / "weights"
LORA = WEIGHTS / "lora-outline" / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two images of the embedded default, one step each, 32 x 32: one with a LoRA,
    clip skip and a quoted prompt, one plain."""
    tmp_path = tmp_path_factory.mktemp("infotext")
    run = run_yaml(f"""
        name: infotext
        steps:
          - id: lora
            uses: image.diffusion
            with: {{prompt: "red heart, big: yes", negative_prompt: "blurry, dark", steps: 1, seed: 7,
                    scheduler: dpm++-karras, guidance_scale: 6, clip_skip: 1, width: 32, height: 32,
                    loras: [{{path: "{LORA}", scale: 0.5}}]}}
          - id: plain
            uses: image.diffusion
            with: {{prompt: "cat face", steps: 1, seed: 3, timestep_spacing: trailing}}
    """, tmp_path)
    (lora,), (plain,) = run.step("lora"), run.step("plain")
    assert lora.status == plain.status == "done", (lora.error, plain.error)
    return lora.artifacts["image"].path, plain.artifacts["image"].path


def test_every_image_carries_a1111_parameters_beside_studios_provenance(made):
    from studio.runs.reopen import reopen

    for path in made:
        image = Image.open(path)
        assert set(image.info) >= {"studio", "parameters"}
        assert reopen(Path(path)).pipeline["name"] == "infotext"  # re-opening still works
    lora, plain = (Image.open(p).info["parameters"] for p in made)
    digest = hashlib.sha256(LORA.read_bytes()[8 + int.from_bytes(LORA.read_bytes()[:8], "little"):]).hexdigest()
    assert lora.split("\n") == [
        "red heart, big: yes <lora:pytorch_lora_weights:0.5>",
        "Negative prompt: blurry, dark",
        ('Steps: 1, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.0, Seed: 7, Size: 32x32, Model: default, '
         f'Clip skip: 2, Lora hashes: "pytorch_lora_weights: {digest[:12]}", Version: studio 0.1.0')]
    # the embedded default's own scheduler is DDIM; no negative prompt, no line for it
    assert plain.split("\n") == [
        "cat face", ("Steps: 1, Sampler: DDIM, Schedule type: Automatic, CFG scale: 7.5, Seed: 3, Size: 32x32, "
                     "Model: default, Timestep spacing: trailing, Version: studio 0.1.0")]


def test_the_text_read_by_a1111s_rules_gives_back_the_values_used(made):
    info = parse(Image.open(made[0]).info["parameters"], "image.png")
    assert info.prompt == "red heart, big: yes <lora:pytorch_lora_weights:0.5>"
    assert info.negative_prompt == "blurry, dark"
    assert info.pairs["Steps"] == "1" and info.pairs["Seed"] == "7" and info.pairs["Size"] == "32x32"
    assert info.pairs["CFG scale"] == "6.0" and info.pairs["Clip skip"] == "2"
    assert info.pairs["Sampler"] == "DPM++ 2M" and info.pairs["Schedule type"] == "Karras"
    assert info.pairs["Lora hashes"] == f"pytorch_lora_weights: {lora_hash(str(LORA))}"


def test_values_are_quoted_as_a1111_quotes_them():
    assert quote("Euler a") == "Euler a" and quote(7.5) == "7.5"
    assert quote("a: b") == '"a: b"' and quote("a, b") == '"a, b"' and quote("a\nb") == '"a\\nb"'
    assert quote('say "hi", ünï') == '"say \\"hi\\", ünï"'
    for value in ("a: b", "a, b", "a\nb", 'say "hi", ünï', "plain"):
        assert unquote(quote(value)) == value
    assert unquote('"not json') == '"not json' and unquote('"3"') == "3"
    line = 'Steps: 20, Hires prompt: "a, b: c", Lora hashes: "x: 1, y: 2", Empty: , Seed: 5'
    assert pairs(line) == [("Steps", "20"), ("Hires prompt", '"a, b: c"'), ("Lora hashes", '"x: 1, y: 2"'),
                           ("Empty", ""), ("Seed", "5")]


def test_a1111s_reading_rules():
    text = ("first line\n  second line  \nNegative prompt: bad\nworse\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x768, Steps: 21")
    info = parse(text, "t.txt")
    assert info.prompt == "first line\nsecond line" and info.negative_prompt == "bad\nworse"
    assert info.pairs == {"Steps": "21", "Sampler": "Euler a", "CFG scale": "7", "Seed": "965400086",
                          "Size": "512x768"}  # a key given twice: the last one, as A1111 reads it
    # fewer than three pairs on the last line: it is prompt, and there are no parameters
    with pytest.raises(UserError, match="no line of generation parameters"):
        parse("a cat\nSteps: 20, Seed: 1", "t.txt")
    with pytest.raises(UserError, match="empty"):
        parse(" \n\n ", "t.txt")


def test_a_checkpoints_scheduler_is_named_as_a1111_names_it(tmp_path):
    assert sampler_names("default", {"_class_name": "PNDMScheduler"}) == ("PLMS", "Automatic")
    assert sampler_names("default", {"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}) == (
        "Euler", "Karras")
    assert sampler_names("default", {"_class_name": "DPMSolverMultistepScheduler",
                                     "algorithm_type": "sde-dpmsolver++"}) == ("DPM++ 2M SDE", "Automatic")
    assert sampler_names("euler-a", {}) == ("Euler a", "Automatic")
    # a one-file checkpoint has A1111's short hash; a diffusers folder has none
    checkpoint = tmp_path / "dreamshaper_8.safetensors"
    checkpoint.write_bytes(b"weights")
    assert model_hash(str(checkpoint)) == hashlib.sha256(b"weights").hexdigest()[:10]
    assert model_hash(str(tmp_path)) is None and model_hash("default") is None


def test_the_model_hash_is_remembered_across_runs(tmp_path, monkeypatch):
    """A run over a multi-gigabyte checkpoint reads its hash from the model-hash cache
    (by real path, size and mtime) that `studio models list` fills too: hashed once."""
    import studio.weights
    from studio.models import hashes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hashed = []
    real = hashes._hash_file
    monkeypatch.setattr(hashes, "_hash_file", lambda path: hashed.append(path) or real(path))
    checkpoint = tmp_path / "models" / "dreamshaper_8.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    expected = hashlib.sha256(b"weights").hexdigest()[:10]
    for _ in range(2):  # two runs: two processes, whose in-memory caches start empty
        studio.weights._file_sha256.cache_clear()
        assert model_hash(str(checkpoint)) == expected
    assert len(hashed) == 1
    link = tmp_path / "link.safetensors"  # the same file by another name: the same entry
    link.symlink_to(checkpoint)
    studio.weights._file_sha256.cache_clear()
    assert model_hash(str(link)) == expected and len(hashed) == 1
    checkpoint.write_bytes(b"weights, retrained")  # a new version is hashed again
    os.utime(checkpoint, ns=(1, 1))
    studio.weights._file_sha256.cache_clear()
    assert model_hash(str(checkpoint)) == hashlib.sha256(b"weights, retrained").hexdigest()[:10] and len(hashed) == 2
    studio.weights._file_sha256.cache_clear()
