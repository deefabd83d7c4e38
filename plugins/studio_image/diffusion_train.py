"""Trains image.diffusion: DDPM noise prediction (Ho et al. 2020) with a cosine schedule,
the condition dropped 10% of the time so classifier-free guidance works, and an
exponential moving average of the weights (what gets exported).

Class folders (or no classes) train a pixel-space UNet2DModel with class labels.
Captioned data (a caption file beside each image, or a metadata.jsonl) trains a small
Stable Diffusion instead (diffusion_network.py): first its autoencoder, for `vae_steps`
steps, then the UNet and the text encoder together on the autoencoder's latents; it is
exported as a standard StableDiffusionPipeline folder.
With `--option lora_rank=N`, captioned data trains a LoRA instead: peft adapters of rank
N on the attention layers of `--option base`'s UNet (the embedded default unless named),
everything else frozen, the same noise-prediction loss; it is exported as diffusers
saves one (pytorch_lora_weights.safetensors), for image.diffusion's `loras:`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field

from studio import UserError
from studio.training import OneOf, Trainer, TrainerOptions

NULL_CLASS_DROPOUT = 0.1


def unet_config(size: int, channels: int, num_classes: int) -> dict:
    return dict(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(32, 64, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        # one extra embedding: the "no class" label used for guidance
        num_class_embeds=num_classes + 1 if num_classes else None,
    )


class DiffusionTrainer(Trainer):
    generator = "image.diffusion"
    description = "DDPM training of a small class-conditional UNet2DModel (diffusers)."
    default_steps = 2000
    default_batch_size = 64
    default_lr = 2e-3

    class Options(TrainerOptions):
        size: int = Field(16, ge=4, le=1024, multiple_of=4, description=(
            "Side of the square images the UNet learns, in pixels; every training image is resized to it. "
            "A multiple of 4: the UNet halves it twice."))
        channels: Annotated[int, OneOf((1, 3))] = Field(1, description="1: greyscale, 3: RGB.")
        vae_steps: int = Field(1000, ge=1, le=1_000_000, description=(
            "Captioned data only: steps spent on the autoencoder before the UNet and text encoder train "
            "(part of --steps)."))
        vocab_size: int = Field(2000, ge=600, le=50_000, description=(
            "Captioned data only: the size of the BPE vocabulary learnt from the captions, its 514 byte "
            "symbols and 2 special tokens included."))
        max_tokens: int = Field(32, ge=8, le=77, description=(
            "Captioned data only: tokens per caption, start and end included; longer captions are cut."))
        text_width: int = Field(128, ge=32, le=1024, multiple_of=4, description=(
            "Captioned data only: the text encoder's width (and the UNet's cross-attention width)."))
        lora_rank: int = Field(0, ge=0, le=256, description=(
            "Captioned data only: above 0, train a LoRA of this rank on `base` instead of a new model (the "
            "images are resized to the base's size; size, channels, vae_steps and the text options are the base's)."))
        base: str = Field("default", min_length=1, max_length=1000, description=(
            "With lora_rank: the text-to-image pipeline the LoRA is made for: 'default' (the embedded one) or a "
            "diffusers folder (safetensors)."))
        weights_precision: Annotated[str, OneOf(("fp16", "fp32"))] = Field("fp16", description=(
            "Captioned data only: how the exported pipeline's weights are stored (half the size in fp16; "
            "Studio computes in the run's precision either way, and diffusers loads them with dtype=torch.float32)."))

    options: Options

    def setup(self) -> None:
        import torch
        from diffusers import DDPMScheduler, UNet2DModel

        from studio_imagedata.sources import load_images

        self.size = self.options.size
        self.channels = self.options.channels
        self.lora = self.options.lora_rank > 0
        if self.lora:
            self.base = self._load_base()
            self.size, self.channels = self.base["size"], 3
        data = load_images(self.config.data, self.size, self.channels)
        self.train_data, self.held_out = data.split()
        self.classes = data.classes
        self.captioned = data.captions is not None
        if self.lora and not self.captioned:
            raise UserError(f"--option lora_rank trains a LoRA on captioned images; {self.config.data!r} has no "
                            "captions (a .txt beside each image, or a metadata.jsonl)")
        if self.lora:
            self._setup_lora()
            return
        if self.captioned:
            self._setup_text_to_image()
            return
        self.unet = UNet2DModel(**unet_config(self.size, self.channels, len(self.classes))).to(self.device)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
        self.modules = {"unet": self.unet, "ema": self.ema}
        self.optimizers = {"unet": torch.optim.AdamW(self.unet.parameters(), lr=self.lr, weight_decay=0.01)}

    def _labels(self, labels, drop: bool):
        import torch

        if not self.classes:
            return None
        labels = labels.clone()
        if drop:
            mask = torch.rand(labels.shape, generator=self.rng) < NULL_CLASS_DROPOUT
            labels[mask] = len(self.classes)
        return labels.to(self.device)

    def _loss(self, model, x0, labels, noise, t):
        import torch.nn.functional as F

        noisy = self.scheduler.add_noise(x0, noise, t)
        return F.mse_loss(model(noisy, t.to(self.device), class_labels=labels).sample, noise)

    def train_step(self, step: int) -> dict[str, float]:
        import torch

        index = torch.randint(len(self.train_data.images), (self.batch_size,), generator=self.rng)
        x0 = self.train_data.images[index]
        if self.lora:
            return self._lora_step(x0.to(self.device), [self.train_data.captions[i] for i in index])
        if self.captioned:
            return self._text_to_image_step(step, x0.to(self.device), [self.train_data.captions[i] for i in index])
        noise = torch.randn(x0.shape, generator=self.rng)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x0),), generator=self.rng)
        labels = self._labels(self.train_data.labels[index], drop=True)
        self.unet.train()
        loss = self._loss(self.unet, x0.to(self.device), labels, noise.to(self.device), t)
        self.optimize(loss, "unet", clip=1.0)
        decay = min(0.999, (1 + step) / (10 + step))  # short runs: let the average warm up
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.unet.parameters()):
                e.lerp_(p, 1 - decay)
        return {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        """Noise-prediction MSE of the exported (EMA) weights on held-out images, at
        fixed timesteps and noise so runs compare."""
        import torch

        if self.lora:
            return self._evaluate_lora()
        if self.captioned:
            return self._evaluate_text_to_image()
        gen = torch.Generator().manual_seed(1234)
        x0 = self.held_out.images
        total = 0.0
        timesteps = (50, 250, 500, 750, 950)
        with torch.no_grad():
            for t in timesteps:
                noise = torch.randn(x0.shape, generator=gen)
                tt = torch.full((len(x0),), t)
                labels = self._labels(self.held_out.labels, drop=False)
                total += self._loss(self.ema.eval(), x0.to(self.device), labels, noise.to(self.device), tt).item()
        return {"held_out_noise_mse": total / len(timesteps), "held_out_images": len(x0)}

    # -- captioned data: a small Stable Diffusion -----------------------------------

    def _setup_text_to_image(self) -> None:
        import torch
        from diffusers import DDPMScheduler

        from studio_image.diffusion_network import autoencoder, caption_tokenizer, conditional_unet, text_encoder

        if self.options.vae_steps >= self.steps:
            raise UserError(f"--option vae_steps={self.options.vae_steps} leaves no steps of --steps {self.steps} "
                            "for the UNet; give more --steps or fewer vae_steps")
        o = self.options
        # the tokenizer is learnt once and kept with the checkpoints, so --resume uses the same ids
        saved = self.config.out / "training" / "tokenizer"
        if saved.is_dir():
            from transformers import CLIPTokenizer

            self.tokenizer = CLIPTokenizer.from_pretrained(saved)
        else:
            self.tokenizer = caption_tokenizer(self.train_data.captions, o.vocab_size, o.max_tokens)
            self.tokenizer.save_pretrained(saved)
        self.vae = autoencoder(self.size, self.channels).to(self.device)
        self.text_encoder = text_encoder(len(self.tokenizer), o.max_tokens, o.text_width).to(self.device)
        self.unet = conditional_unet(self.size // 2, o.text_width).to(self.device)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_text = copy.deepcopy(self.text_encoder).requires_grad_(False)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                       beta_start=0.00085, beta_end=0.012)  # Stable Diffusion's
        self.modules = {"vae": self.vae, "text_encoder": self.text_encoder, "unet": self.unet, "ema": self.ema,
                        "ema_text": self.ema_text}
        self.optimizers = {
            "vae": torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0),
            "denoiser": torch.optim.AdamW(list(self.unet.parameters()) + list(self.text_encoder.parameters()),
                                          lr=self.lr, weight_decay=0.01)}
        self.latent_scale: float | None = None
        self.vae_done = False  # the autoencoder has finished training (set by the first UNet step)
        self.max_tokens = o.max_tokens

    def _ids(self, captions: list[str], drop: bool):
        """Token ids of `captions`; with `drop`, 10% become "" (the unconditional prompt
        that classifier-free guidance subtracts)."""
        import torch

        if drop:
            keep = torch.rand(len(captions), generator=self.rng) >= NULL_CLASS_DROPOUT
            captions = [c if k else "" for c, k in zip(captions, keep.tolist())]
        return self.tokenizer(captions, padding="max_length", max_length=self.max_tokens, truncation=True,
                              return_tensors="pt").input_ids.to(self.device)

    def _vae_step(self, x0) -> dict[str, float]:
        import torch.nn.functional as F

        self.vae.train()
        posterior = self.vae.encode(x0).latent_dist
        reconstruction = self.vae.decode(posterior.sample(generator=self.rng)).sample
        l1 = F.l1_loss(reconstruction, x0)
        kl = posterior.kl().mean()
        self.optimize(l1 + 1e-6 * kl, "vae", clip=1.0)
        return {"vae_l1": l1.item(), "vae_kl": kl.item()}

    def _latents(self, x0, sample: bool = True):
        """The autoencoder's latents of `x0`, scaled to unit variance as Stable Diffusion
        does: the scale is measured on training images once the autoencoder has finished
        training (the same value after a --resume) and saved in its config."""
        import torch

        with torch.no_grad():
            self.vae.eval()
            scale = self.latent_scale
            if scale is None:
                measured_on = self.train_data.images[:256].to(self.device)
                scale = float(1.0 / self.vae.encode(measured_on).latent_dist.mean.std())
                if self.vae_done:
                    self.latent_scale = scale
                    self.vae.register_to_config(scaling_factor=scale)
            posterior = self.vae.encode(x0).latent_dist
            # evaluation takes the mean: it must not draw from the training generator, or
            # a run checkpointed at other steps would train on other noise
            return (posterior.sample(generator=self.rng) if sample else posterior.mean) * scale

    def _text_to_image_loss(self, unet, text, x0, captions, drop: bool, noise=None, t=None):
        import torch
        import torch.nn.functional as F

        latents = self._latents(x0, sample=noise is None)
        noise = torch.randn(latents.shape, generator=self.rng).to(self.device) if noise is None else noise
        if t is None:
            t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(latents),), generator=self.rng)
        states = text(self._ids(captions, drop)).last_hidden_state
        noisy = self.scheduler.add_noise(latents, noise, t)
        return F.mse_loss(unet(noisy, t.to(self.device), encoder_hidden_states=states).sample, noise)

    def _text_to_image_step(self, step: int, x0, captions) -> dict[str, float]:
        import torch

        if step < self.options.vae_steps:
            return self._vae_step(x0)
        if not self.vae_done:
            self.vae_done = True
            self.vae.requires_grad_(False)
        self.unet.train()
        self.text_encoder.train()
        loss = self._text_to_image_loss(self.unet, self.text_encoder, x0, captions, drop=True)
        self.optimize(loss, "denoiser", clip=1.0)
        decay = min(0.999, (1 + step - self.options.vae_steps) / (10 + step - self.options.vae_steps))
        with torch.no_grad():
            for ema, live in ((self.ema, self.unet), (self.ema_text, self.text_encoder)):
                for e, p in zip(ema.parameters(), live.parameters()):
                    e.lerp_(p, 1 - decay)
        return {"loss": loss.item()}

    def _evaluate_text_to_image(self) -> dict[str, float]:
        """The autoencoder's L1 on held-out images, and the exported (EMA) denoiser's
        noise-prediction MSE on their latents and captions at fixed timesteps and noise."""
        import torch
        import torch.nn.functional as F

        x0 = self.held_out.images.to(self.device)
        with torch.no_grad():
            self.vae.eval()
            reconstruction = self.vae.decode(self.vae.encode(x0).latent_dist.mean).sample
            metrics = {"held_out_vae_l1": F.l1_loss(reconstruction, x0).item(), "held_out_images": len(x0)}
            gen = torch.Generator().manual_seed(1234)
            total = 0.0
            timesteps = (50, 250, 500, 750, 950)
            for t in timesteps:
                noise = torch.randn((len(x0), 4, self.size // 2, self.size // 2), generator=gen).to(self.device)
                tt = torch.full((len(x0),), t)
                total += self._text_to_image_loss(self.ema.eval(), self.ema_text.eval(), x0, self.held_out.captions,
                                                  drop=False, noise=noise, t=tt).item()
        metrics["held_out_noise_mse"] = total / len(timesteps)
        return metrics

    def _export_text_to_image(self, out: Path) -> None:
        import torch
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        self.vae_done = True
        self._latents(self.train_data.images[:1].to(self.device), sample=False)  # the scale, even after a resume
        scheduler = DDIMScheduler.from_config(self.scheduler.config, clip_sample=False, set_alpha_to_one=False,
                                              steps_offset=1)
        pipeline = StableDiffusionPipeline(vae=self.vae, text_encoder=self.ema_text, tokenizer=self.tokenizer,
                                           unet=self.ema, scheduler=scheduler, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
        stored = {"fp16": torch.float16, "fp32": torch.float32}[self.options.weights_precision]
        pipeline.to(dtype=stored)
        pipeline.save_pretrained(out)
        pipeline.to(dtype=torch.float32)  # the trainer's modules, as they were
        (out / "studio.json").write_text(json.dumps({"data": self.config.data, "captioned": True}, indent=2))

    # -- samples while training ----------------------------------------------------------

    def samples(self) -> dict:
        """What the exported weights make now, from fixed noise (never the training
        generator): four held-out captions for a text-to-image model or a LoRA (the
        autoencoder's reconstructions while it trains alone), one image per class for
        class folders."""
        import torch

        from studio_image.samples import sheet

        noise = torch.Generator().manual_seed(0)
        if not self.captioned:
            return {"classes": sheet(self._sample_classes(noise), 5)}
        if not self.lora and not self.vae_done:
            x0 = self.held_out.images[:8].to(self.device)
            self.vae.eval()
            made = self.vae.decode(self.vae.encode(x0).latent_dist.mean).sample
            self.vae.train()
            return {"autoencoder": sheet(torch.cat([x0, made]), 8)}
        captions = list(self.held_out.captions[:4])
        pipe = self.base["pipeline"] if self.lora else self._pipeline_now()
        pipe.set_progress_bar_config(disable=True)
        self.unet.eval()
        images = pipe(captions, num_inference_steps=20, generator=[torch.Generator().manual_seed(i) for i in
                                                                   range(len(captions))], output_type="pt").images
        self.unet.train()
        return {"captions": sheet(images * 2 - 1, 4), "captions-text": "\n".join(captions)}

    def _pipeline_now(self):
        """The text-to-image pipeline the export would write now (EMA weights, DDIM)."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        scheduler = DDIMScheduler.from_config(self.scheduler.config, clip_sample=False, set_alpha_to_one=False,
                                              steps_offset=1)
        return StableDiffusionPipeline(vae=self.vae, text_encoder=self.ema_text, tokenizer=self.tokenizer,
                                       unet=self.ema, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)

    def _sample_classes(self, noise):
        """One image per class (at most 10; 8 without classes), 20 DDIM steps, guidance 2."""
        import torch
        from diffusers import DDIMScheduler

        count = min(10, len(self.classes)) if self.classes else 8
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(20)
        x = torch.randn((count, self.channels, self.size, self.size), generator=noise).to(self.device)
        labels = torch.arange(count, device=self.device) if self.classes else None
        null = torch.full((count,), len(self.classes), device=self.device) if self.classes else None
        for t in scheduler.timesteps:
            eps = self.ema(x, t, class_labels=labels).sample
            if null is not None:
                unconditional = self.ema(x, t, class_labels=null).sample
                eps = unconditional + 2.0 * (eps - unconditional)  # the guidance image.diffusion uses
            x = scheduler.step(eps, t, x).prev_sample
        return x

    # -- a LoRA on a text-to-image pipeline ------------------------------------------

    def _load_base(self) -> dict:
        """The base pipeline, loaded as image.diffusion loads a model (checked first:
        safetensors only, no code), and the size its images are."""
        import torch
        from diffusers import StableDiffusionPipeline

        from studio.weights import loading, local_path, refuse
        from studio_image.diffusion_models import DEFAULT_WEIGHTS, PipelineFacts, component_folders, model_facts

        base = self.options.base
        root = local_path(base, DEFAULT_WEIGHTS)
        facts = model_facts(base) if root is not None else None
        if not isinstance(facts, PipelineFacts) or facts.inpainting or not facts.one_text_encoder:
            raise UserError(f"--option base={base!r} is not a Stable Diffusion pipeline folder (model_index.json, a "
                            "UNet2DConditionModel and one CLIP text encoder); give 'default' or such a folder")
        refuse(base, root, component_folders(root))
        with loading(base, "the LoRA's base pipeline", "give 'default' or a diffusers pipeline folder"):
            pipe = StableDiffusionPipeline.from_pretrained(root, dtype=torch.float32, use_safetensors=True,
                                                           local_files_only=True)
        return {"pipeline": pipe, "size": (facts.size or (512, 512))[0], "root": str(root)}

    def _setup_lora(self) -> None:
        import torch
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        pipe = self.base["pipeline"]
        self.tokenizer = pipe.tokenizer
        self.max_tokens = pipe.tokenizer.model_max_length
        self.vae, self.text_encoder, self.unet = (m.to(self.device).requires_grad_(False)
                                                  for m in (pipe.vae, pipe.text_encoder, pipe.unet))
        rank = self.options.lora_rank
        # the attention projections, as diffusers' train_text_to_image_lora.py adapts
        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                         target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # the base's noise levels
        self.latent_scale, self.vae_done = float(self.vae.config.scaling_factor), True
        self.modules = {"unet": self.unet}
        self.optimizers = {"lora": torch.optim.AdamW([p for p in self.unet.parameters() if p.requires_grad],
                                                     lr=self.lr, weight_decay=1e-2)}

    def _lora_step(self, x0, captions) -> dict[str, float]:
        self.unet.train()
        loss = self._text_to_image_loss(self.unet, self.text_encoder, x0, captions, drop=True)
        self.optimize(loss, "lora", clip=1.0)
        return {"loss": loss.item()}

    def _evaluate_lora(self) -> dict[str, float]:
        """Held-out noise-prediction MSE with the LoRA and, for comparison, of the base
        alone, at fixed timesteps and noise."""
        import torch

        x0 = self.held_out.images.to(self.device)
        latent = self.size // (2 ** (len(self.vae.config.block_out_channels) - 1))
        metrics: dict[str, float] = {"held_out_images": len(x0)}
        for name, on in (("held_out_noise_mse", True), ("held_out_noise_mse_base", False)):
            (self.unet.enable_adapters if on else self.unet.disable_adapters)()
            gen = torch.Generator().manual_seed(1234)
            # 50, 250, 500, 750 and 950 of Stable Diffusion's 1,000: the same fractions of the base's
            trained = self.scheduler.config.num_train_timesteps
            total, timesteps = 0.0, [int(f * trained) for f in (0.05, 0.25, 0.5, 0.75, 0.95)]
            with torch.no_grad():
                for t in timesteps:
                    noise = torch.randn((len(x0), 4, latent, latent), generator=gen).to(self.device)
                    total += self._text_to_image_loss(self.unet.eval(), self.text_encoder, x0,
                                                      self.held_out.captions, drop=False, noise=noise,
                                                      t=torch.full((len(x0),), t)).item()
            metrics[name] = total / len(timesteps)
        self.unet.enable_adapters()
        return metrics

    def _export_lora(self, out: Path) -> None:
        from diffusers import StableDiffusionPipeline
        from peft import get_peft_model_state_dict

        out.mkdir(parents=True, exist_ok=True)
        StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(self.unet),
                                                  safe_serialization=True)
        (out / "studio.json").write_text(json.dumps({"data": self.config.data, "lora": True,
                                                     "rank": self.options.lora_rank, "base": self.options.base},
                                                    indent=2))

    def export(self, out: Path) -> None:
        if self.lora:
            return self._export_lora(out)
        if self.captioned:
            return self._export_text_to_image(out)
        from diffusers import DDIMScheduler

        self.ema.save_pretrained(out / "unet")
        DDIMScheduler.from_config(self.scheduler.config).save_pretrained(out / "scheduler")
        (out / "model_index.json").write_text(json.dumps({
            "_class_name": "DDIMPipeline", "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, indent=2))
        (out / "studio.json").write_text(json.dumps({
            "classes": self.classes, "null_class": len(self.classes) if self.classes else None,
            "data": self.config.data}, indent=2))
