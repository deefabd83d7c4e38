"""LoRAs on single-file checkpoints: a LoRA of the model's family loads and changes the
image as it does on the diffusers folder the file was made from; a LoRA of another family
is refused before the run (tests/test_hostile_models.py holds those cases)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from studio.testing import run_yaml
from test_hostile_lora import OUTLINE
from test_single_file import single_file_state

DEFAULT = OUTLINE.parents[1] / "diffusion"  # the model the outline LoRA was trained on


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The default model as one file in the original layout, and its configs and tokenizer."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("single-lora")
    pipe = StableDiffusionPipeline.from_pretrained(DEFAULT, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    save_file(single_file_state(pipe), root / "default.safetensors")
    shutil.copytree(DEFAULT, root / "configs", ignore=shutil.ignore_patterns("*.safetensors"))  # its tokenizer: 32 tokens
    return root


def image(tmp_path, name, model, **more) -> np.ndarray:
    with_ = {"model": str(model), "prompt": "a red heart", "steps": 2, "seed": 3, "width": 32, "height": 32, **more}
    step = {"id": "img", "uses": "image.diffusion", "with": with_}
    result = run_yaml(json.dumps({"name": "d", "device": "cpu", "steps": [step]}), tmp_path / name)
    assert result.status == "done", [i.error for i in result.failed]
    return np.asarray(Image.open(result.artifacts()[0].path)).astype(np.int16)


def test_a_lora_on_a_single_file_changes_the_image_as_on_its_folder(single, tmp_path):
    config = {"config": str(single / "configs")}
    lora = {"loras": [{"path": str(OUTLINE)}]}
    plain = image(tmp_path, "plain", single / "default.safetensors", **config)
    styled = image(tmp_path, "styled", single / "default.safetensors", **config, **lora)
    folder = image(tmp_path, "folder", DEFAULT, **lora)
    assert np.abs(styled - plain).max() > 10  # the LoRA was applied
    assert np.abs(styled - folder).max() <= 1  # as it is on the folder
