"""image.diffusion: diffusers models, from the embedded default to Stable Diffusion.

Users write one generator, `uses: image.diffusion`, with one set of parameters; inside,
the model folder picks the engine that runs it (diffusion_models reads its configs):
- a UNet2DModel with a scheduler (a DDPM/DDIM pipeline directory, unconditional or
  class-conditional; the digit model in weights/digits is one): diffusion_unet;
- any text-to-image pipeline diffusers' AutoPipeline classes know (Stable Diffusion 1.x,
  2.x, XL, ...; the embedded default is a small Stable Diffusion), and inpainting
  checkpoints: diffusion_pipeline.
Modes: text-to-image; image-to-image with `image` + `strength`; inpainting with `mask`
as well (diffusion_inputs prepares them); ControlNets steering any of the three with
`controlnets` and their `control_images` (diffusion_control). Each engine owns its rules: the validators
below ask the engine of the model's folder, and the run asks the engine of the model it
loaded, so a rule is written once. LoRA files (diffusion_lora), weighted prompts through
compel (diffusion_prompts) and `clip_skip` apply to text-to-image pipelines, and an SDXL
refiner pass (`refiner`, diffusion_refiner) to SDXL text-to-image.
Noise comes from `torch.Generator("cpu").manual_seed(seed)` per item, as in a diffusers
script with `generator=`, so the same seed gives the same image in both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from studio import Artifact, Generator, Params, UserError, batch_groups, media, media_input, model_input
from studio.limits import on_cpu
from studio.weights import input_path, loading, local_path, refuse, weights_problem
from studio_image.diffusion_control import MAX_CONTROLNETS, ControlNet, model_unet_config
from studio_image.diffusion_control import checked_all as checked_controlnets
from studio_image.diffusion_control_adapters import MAX_ADAPTERS, Adapter
from studio_image.diffusion_control_adapters import checked_all as checked_adapters
from studio_image.diffusion_embeddings import MAX_EMBEDDINGS, Embedding
from studio_image.diffusion_embeddings import checked_all as checked_embeddings
from studio_image.diffusion_engine import Engine, SchedulerName, quiet_libraries, strength_of
from studio_image.diffusion_infotext import parameters_text
from studio_image.diffusion_inputs import output_size
from studio_image.diffusion_lora import MAX_LORAS, Lora, checked_all
from studio_image.diffusion_models import (DEFAULT_WEIGHTS, DIGITS_WEIGHTS, UNKNOWN_PIPELINE, PipelineFacts,
                                           UnetFacts, component_folders, folder_facts, model_facts)
from studio_image.diffusion_pipeline import PipelineEngine
from studio_image.diffusion_refiner import REFINER_SWITCH, refiner_problem
from studio_image.diffusion_single_file import SINGLE_FILE_SUFFIXES, single_file_problem, vae_problem
from studio_image.diffusion_unet import UnetEngine

# names other modules import from here
__all__ = ["DEFAULT_WEIGHTS", "DIGITS_WEIGHTS", "ImageDiffusion", "component_folders", "engine_for", "model_facts"]

LOAD_FIX = ("Give 'default', a diffusers directory (model_index.json, or unet/ and scheduler/, with "
            ".safetensors weights), or a hub id in your Hugging Face cache")


def engine_for(model: str, config: str | None = None, prediction: str = "default") -> Engine:
    """The engine of the model `model` names, built from its folder's configs (a single
    file: its `config` folder's, or its recognised family's): the base engine (the rules
    that need no facts) when there is nothing to read. A ValueError says which config
    value is out of range."""
    return engine_of(model_facts(model, config, prediction))


def engine_of(facts: UnetFacts | PipelineFacts | None) -> Engine:
    if isinstance(facts, UnetFacts):
        return UnetEngine(facts)
    if isinstance(facts, PipelineFacts):
        return PipelineEngine(facts)
    return Engine()


def _engine(info: ValidationInfo) -> Engine | None:
    """The model's engine for a field validator: None when `model` itself was refused or
    its configs are not on this machine (nothing to check a field against)."""
    model = info.data.get("model")
    if not isinstance(model, str):
        return None
    facts = model_facts(model, info.data.get("config"), info.data.get("prediction", "default"))
    return None if facts is None else engine_of(facts)


class ImageDiffusion(Generator):
    name = "image.diffusion"
    description = ("Diffusion with diffusers: text-to-image, image-to-image, inpainting and LoRA on Stable Diffusion "
                   "pipelines (the embedded default draws emoji), and UNet2DModel checkpoints (the digit model).")
    outputs = {"image": media.IMAGE}
    precisions = ("bf16", "fp16", "fp32")
    default_weights = DEFAULT_WEIGHTS
    batchable = True
    max_batch_size = 16

    class Params(Params):
        # config and prediction come before model: model's validator judges a single file with them
        config: str | None = model_input(None, files=("model_index.json",), description=(
            "With a single-file model: a diffusers folder of its configs (model_index.json, unet/, vae/, "
            "text_encoder/, scheduler/; no weights needed), for a file Studio does not recognise or to override "
            "the configs Studio ships for its family."))
        prediction: Literal["default", "epsilon", "v_prediction"] = Field("default", description=(
            "What the model predicts, for a single file whose weights cannot tell: 'default' follows the family "
            "(SD 2.x text-to-image: v_prediction at 768, as 2.0-v, 2.1 and most fine-tunes; others: epsilon); "
            "'epsilon' for an SD 2.x 512-base model."))
        model: str = model_input(
            "default", files=("model_index.json", "unet/config.json"), suffixes=SINGLE_FILE_SUFFIXES, hub=True,
            description="'default' (embedded: a small text-to-image Stable Diffusion that draws 32x32 emoji "
                        "from their names), a local diffusers directory (safetensors weights), a single-file "
                        "checkpoint as model sites ship them (.safetensors: SD 1.x, SD 2.x, SDXL base and their "
                        "inpainting variants, recognised from the file; a .ckpt/.pt only when it holds plain "
                        "tensors), or a hub id in the local Hugging Face cache.")
        vae: str | None = model_input(None, files=("config.json",), suffixes=(".safetensors",), description=(
            "A VAE in place of the model's own: a .safetensors file (single-file or diffusers layout) or a "
            "diffusers VAE folder. Needed by a single file without a baked-in VAE."))
        prompt: str | None = Field(None, max_length=2000, description=(
            "Text prompt (text-to-image models); absent: the empty prompt, as diffusers, A1111 and ComfyUI sample "
            "(an unconditioned image; the embedded model was trained with caption dropout for it)."))
        negative_prompt: str | None = Field(None, max_length=2000,
                                            description="What to steer away from (text-to-image models).")
        class_label: int | str | None = Field(None, description=(
            "Class to draw (class-conditional models): an index or a class name; "
            "default: a class chosen by the seed."), json_schema_extra={"maxLength": 100})
        steps: int = Field(25, ge=1, le=1000, description="Denoising steps.")
        guidance_scale: float | None = Field(None, ge=0.0, le=50.0, description=(
            "Classifier-free guidance; 1 or less turns it off. Default: 7.5 for text-to-image "
            "models, 2 for class-conditional ones."))
        width: int | None = Field(None, ge=8, le=4096, description=(
            "Width in pixels; default: the model's size. width x height is at most 2048 x 2048 "
            "(4.2 megapixels); a UNet2DModel at most 8x its trained size a side; on a CPU width x height x "
            "steps at most 1024 x 1024 x 50 (512 x 512 x 50 for a text-to-image pipeline)."))
        height: int | None = Field(None, ge=8, le=4096, description="Height in pixels; default: the model's size.")
        scheduler: SchedulerName = Field("default", description=(
            "Sampler; 'default' keeps the checkpoint's. The -karras ones step through Karras et al.'s noise "
            "levels (diffusers' use_karras_sigmas), often better at few steps."))
        timestep_spacing: Literal["default", "linspace", "leading", "trailing"] = Field("default", description=(
            "Which of the trained timesteps the steps visit (diffusers' timestep_spacing): 'default' keeps "
            "the checkpoint's; 'trailing' starts from the last one, which helps at few steps."))
        image: Artifact | None = media_input("image/*", None, description=(
            "Image-to-image: the picture to start from (an upstream image or a file). The output has its size "
            "unless width and height are given; it is resized to them (Lanczos), transparency drawn over white."))
        strength: float | None = Field(None, gt=0.0, le=1.0, description=(
            "How much of the image is redrawn: near 0 keeps it, 1 starts from noise. Runs int(steps x strength) "
            "steps. Default: 0.8, or 1.0 with a mask (diffusers' defaults)."))
        mask: Artifact | None = media_input("image/*", None, description=(
            "Inpainting: white where the image is repainted, black where it is kept; greys, the image's size. "
            "Works with ordinary checkpoints (the kept part blended back each step) and inpainting ones "
            "(9-channel UNet)."))
        mask_blur: int = Field(0, ge=0, le=64, description=(
            "Soften the mask's edge by this many pixels (a Gaussian blur, diffusers' mask blur) so the repainted "
            "part blends in."))
        keep_unmasked: bool = Field(True, description=(
            "With a mask: put the image's own pixels back where the mask is black (diffusers' apply_overlay), "
            "as A1111 does; false gives diffusers' raw output, where the VAE shifts them slightly."))
        loras: list[Lora] = Field(default_factory=list, max_length=MAX_LORAS, description=(
            "LoRA files to apply, each {path, scale} (.safetensors: diffusers, peft or kohya layout; "
            "text-to-image pipelines). Checked against the model's layers before the run."))
        lora_scale: float = Field(1.0, ge=-10.0, le=10.0, description=(
            "Multiplies every LoRA's scale: the axis to sweep (the model and the files load once)."))
        embeddings: list[Embedding] = Field(default_factory=list, max_length=MAX_EMBEDDINGS, description=(
            "Textual-inversion embeddings, each {path or name, token}: the prompt calls one by its token (default: "
            "the file's name, as A1111: 'easynegative'). A1111 (.pt, .safetensors), kohya SDXL (clip_l + clip_g) "
            "and diffusers layouts; text-to-image pipelines. Checked against the model's text encoders before the "
            "run."))
        clip_skip: int | None = Field(None, ge=1, le=48, description=(
            "Condition on the text encoder's layer this many before the last (diffusers' clip_skip; A1111's "
            "'clip skip 2' is 1 here). Text-to-image pipelines with a CLIP text encoder, and SDXL's two (which "
            "read the layer before the last already)."))
        prompt_weighting: Literal["off", "a1111", "compel"] = Field("off", description=(
            "Weighted prompts through compel: 'a1111' reads (word:1.3), (word) = 1.1x, [word] = 1/1.1x; "
            "'compel' reads compel's own syntax (word+, (word)1.3, .blend()). Either way prompts longer than the "
            "text encoder's window are encoded in windows instead of cut."))
        refiner: str | None = model_input(None, files=("model_index.json",), suffixes=SINGLE_FILE_SUFFIXES,
                                          description=(
            "SDXL: a refiner that finishes the model's image, as A1111 and ComfyUI do (a single-file SDXL refiner or "
            "base, a diffusers folder, or a name in the model folders); it shares the model's VAE and second text "
            "encoder. Text-to-image; loras apply to the model, not the refiner."))
        refiner_switch: float = Field(REFINER_SWITCH, gt=0.0, lt=1.0, description=(
            "With refiner: the fraction of the steps the model denoises before the refiner takes over (A1111's "
            "'Refiner switch at')."))
        controlnets: list[ControlNet] = Field(default_factory=list, max_length=MAX_CONTROLNETS, description=(
            "ControlNets that steer the image by a control image (edges, depth, pose, a sketch), several at once: "
            "each {model (a diffusers ControlNet folder or a single .safetensors file, with config: for one Studio "
            "does not recognise) or name (in your model folders), scale, start, end}. "
            "Text-to-image, image-to-image and inpainting on Stable Diffusion 1.x, 2.x and XL pipelines; its "
            "image is control_images' entry at the same index. Checked against the model's family before the run."))
        control_images: list[Artifact] = media_input("image/*", [], max_length=MAX_CONTROLNETS, description=(
            "The control images of controlnets, one per entry in the same order (files or upstream outputs, "
            "such as a preprocessor's); each is resized to the output's size as diffusers does."))
        adapters: list[Adapter] = Field(default_factory=list, max_length=MAX_ADAPTERS, description=(
            "T2I-Adapters, lighter than ControlNets, several at once: each {model (a diffusers T2IAdapter folder) or "
            "name, scale}; text-to-image on Stable Diffusion 1.x, 2.x and XL pipelines. Its image is "
            "adapter_images' entry at the same index. Checked against the model's family before the run."))
        adapter_images: list[Artifact] = media_input("image/*", [], max_length=MAX_ADAPTERS, description=(
            "The control images of adapters, one per entry in the same order (files or upstream outputs)."))

        @field_validator("model")
        @classmethod
        def weights_are_plain(cls, value: str, info: ValidationInfo) -> str:
            root = local_path(value, DEFAULT_WEIGHTS)
            problem = single_file_problem(value, root, info.data.get("config"), info.data.get("prediction", "default"))
            if problem is None and not (root is not None and root.is_file()):
                problem = weights_problem(value, root, component_folders(root))
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("refiner")
        @classmethod
        def refiner_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
            model = info.data.get("model")
            problem = value is not None and isinstance(model, str) and refiner_problem(
                value, model, getattr(_engine(info), "facts", None))
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("vae")
        @classmethod
        def vae_fits_the_model(cls, value: str | None, info: ValidationInfo) -> str | None:
            problem = vae_problem(info.data.get("model"), value, info.data.get("config"))
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("prompt", "negative_prompt")
        @classmethod
        def prompt_fits_the_model(cls, value: str | None, info: ValidationInfo) -> str | None:
            engine = _engine(info)
            problem = engine and engine.prompt_problem(info.data["model"], value)
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("class_label")
        @classmethod
        def class_label_is_a_class(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
            engine = _engine(info)
            problem = engine and engine.class_label_problem(info.data["model"], value)
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("width", "height")
        @classmethod
        def size_fits_the_model(cls, value: int | None, info: ValidationInfo) -> int | None:
            engine = _engine(info)
            problem = engine and engine.multiple_problem(info.field_name, value)
            if problem:
                raise ValueError(problem)
            return value

        @field_validator("loras")
        @classmethod
        def loras_fit_the_model(cls, value: list[Lora], info: ValidationInfo) -> list[Lora]:
            engine = _engine(info)
            if not value or engine is None:
                return value
            model = info.data["model"]
            problem = engine.loras_problem(model)
            if problem:
                raise ValueError(problem)
            return checked_all(value, lambda path: input_path(path, info), local_path(model, DEFAULT_WEIGHTS))

        @field_validator("controlnets")
        @classmethod
        def controlnets_fit_the_model(cls, value: list[ControlNet], info: ValidationInfo) -> list[ControlNet]:
            engine = _engine(info)
            if not value or engine is None:
                return value
            model = info.data["model"]
            if not isinstance(engine, PipelineEngine):
                raise ValueError(f"model {model!r} is a UNet2DModel checkpoint: controlnets steer Stable Diffusion "
                                 "pipelines")
            unet = model_unet_config(model, info.data.get("config"), DEFAULT_WEIGHTS)
            return checked_controlnets(value, lambda path: input_path(path, info), unet, model)

        @field_validator("adapters")
        @classmethod
        def adapters_fit_the_model(cls, value: list[Adapter], info: ValidationInfo) -> list[Adapter]:
            engine = _engine(info)
            if not value or engine is None:
                return value
            model = info.data["model"]
            unet = model_unet_config(model, info.data.get("config"), DEFAULT_WEIGHTS)
            return checked_adapters(value, lambda path: input_path(path, info), unet, model)

        @field_validator("embeddings")
        @classmethod
        def embeddings_fit_the_model(cls, value: list[Embedding], info: ValidationInfo) -> list[Embedding]:
            engine = _engine(info)
            if not value or engine is None:
                return value
            if isinstance(engine, UnetEngine):
                raise ValueError(f"model {info.data['model']!r} is a UNet2DModel checkpoint without a text encoder: "
                                 "embeddings apply to Stable Diffusion pipelines")
            return checked_embeddings(value, lambda path: input_path(path, info), info.data["model"],
                                      info.data.get("config"), DEFAULT_WEIGHTS)

        @model_validator(mode="after")
        def fits(self, info: ValidationInfo):
            engine = engine_for(self.model, self.config, self.prediction)
            given = [name for name in ("config", "vae") if getattr(self, name) is not None]
            given += ["prediction"] if self.prediction != "default" else []
            given += [name for name in ("controlnets", "adapters") if getattr(self, name)]
            problem = (self.vae is None and vae_problem(self.model, None, self.config)
                       or (given and isinstance(engine, UnetEngine)
                           and f"model {self.model!r} is a UNet2DModel checkpoint: {', '.join(given)} apply to "
                               "Stable Diffusion pipelines")
                       or engine.item_problem(self, on_cpu(info)))
            if problem:
                raise ValueError(problem)
            return self

    def model_key(self, params: Params) -> str:
        """The weights path, and the config folder, VAE and prediction when given: each
        changes what loads."""
        extra = [f"{name}={value}" for name, value in (("config", params.config), ("vae", params.vae),
                                                        ("prediction", params.prediction), ("refiner", params.refiner))
                 if value not in (None, "default")]
        return "|".join([super().model_key(params), *extra])

    def weights_id(self, params: Params) -> str:
        from studio.weights import weights_fingerprint

        extra = [weights_fingerprint(value, DEFAULT_WEIGHTS) for value in (params.config, params.vae, params.refiner)
                 if value]
        if params.prediction != "default":
            extra.append(params.prediction)
        return "|".join([super().weights_id(params), *extra])

    def load(self, params: Params, ctx) -> Engine:
        """The model's engine holding the loaded model: local files only, safetensors only
        (nothing is downloaded and no pickle is read)."""
        quiet_libraries()
        root = local_path(params.model, DEFAULT_WEIGHTS)
        single = root is not None and root.is_file()
        problem = (single_file_problem(params.model, root, params.config, params.prediction)
                   or vae_problem(params.model, params.vae, params.config)
                   or (params.refiner is not None and refiner_problem(params.refiner, params.model, None)))
        if problem:
            raise UserError(problem)
        if not single:
            refuse(params.model, root, component_folders(root))
        folder = root is not None and root.is_dir()
        try:
            facts = model_facts(params.model, params.config, params.prediction) if single else folder_facts(root) if folder else None
            engine = engine_of(facts or UNKNOWN_PIPELINE)
        except ValueError as exc:
            raise UserError(f"model {params.model!r}: {exc}") from None
        options = {"use_safetensors": True, "local_files_only": True}
        # the single-file and VAE options, for the engine of diffusers pipelines (only when given)
        extra = {name: value for name, value in (("config", params.config), ("vae", params.vae),
                                                 ("prediction", params.prediction), ("refiner", params.refiner))
                 if value not in (None, "default")}
        if extra and not isinstance(engine, PipelineEngine):
            raise UserError(f"model {params.model!r} is not a Stable Diffusion pipeline: {', '.join(extra)} apply to "
                            "those (single-file checkpoints, a separate VAE)")
        options.update(extra)
        with loading(params.model, "a diffusers model", LOAD_FIX):
            return engine.load(root, params.model, options)

    def prepare(self, model: Engine, ctx) -> Engine:
        """The loaded model on the step's device, in its precision."""
        return model.prepared(ctx)

    def generate_batch(self, params: list[Params], ctxs: list) -> list[dict]:
        out: list[dict | None] = [None] * len(params)
        # items differing only in seed, prompt, class, init image or mask share a batch (not control images)
        keys = [(p.model, p.config, p.vae, p.prediction, p.steps, p.guidance_scale,
                 output_size(p.width, p.height, p.image, None) if p.image
                 else (p.width, p.height), p.scheduler, p.timestep_spacing, p.negative_prompt, strength_of(p),
                 p.mask is None, tuple((lora.sha256, lora.scale) for lora in p.loras), p.lora_scale, p.clip_skip,
                 p.prompt_weighting, tuple((e.sha256, e.token) for e in p.embeddings), p.refiner,
                 p.refiner_switch, tuple((c.model, c.fingerprint, c.scale, c.start, c.end) for c in p.controlnets),
                 tuple(image.sha256 for image in p.control_images),
                 tuple((a.model, a.fingerprint, a.scale) for a in p.adapters),
                 tuple(image.sha256 for image in p.adapter_images)) for p in params]
        for indexes in batch_groups(keys):
            batch = [params[i] for i in indexes]
            engine = ctxs[indexes[0]].model(self, batch[0])
            for i, image in zip(indexes, engine.run(batch, [ctxs[i] for i in indexes])):
                # A1111's infotext on the image; the PNG writer embeds it (docs/plugins.md)
                image.info["parameters"] = parameters_text(params[i], ctxs[i].seed, image.size, engine)
                out[i] = {"image": image}
        return out
