"""Studio against the raw libraries, in one process: real architecture sizes and the
embedded defaults.

    python benchmarks/harness.py [--device cuda] [--only sd gpt2 ...] [--json FILE]
    python benchmarks/harness.py --device cpu --scale small    # a quick check of the harness

For the real sizes the harness builds each model with random weights (speed does not
depend on what the weights learned) and saves it the way a user's checkpoint is saved.
Each row times Studio running the step from YAML against a hand-written loop of the raw
library doing the same work, with warm models on both sides, called in turn. Ratio =
raw time / Studio time: >= 0.97 means the host adds nothing measurable.

Rows (each a group; `--only` picks groups):
- sd:       Stable Diffusion 1.5-size UNet + VAE + CLIP text encoder, a pipeline directory;
            Studio vs StableDiffusionPipeline; UNet fp32 vs autocast vs bf16/fp16 weights;
            bf16 vs fp32 output (relative error, PSNR); a 16-seed sweep batched vs one by one
- gpt2:     GPT-2 124M, greedy decoding: Studio vs generate(); compiled Studio (static cache,
            CUDA graphs) vs generate(); same tokens
- music:    a MIDI transformer at a realistic size (8 layers, 512 wide, 2048 positions)
- cyclegan: ResNet-9 generator at 256 and 512
- oobleck:  Stable Audio Open-size Oobleck VAE, 10 s of 44.1 kHz stereo, encode + decode
- defaults: the embedded defaults vs their raw loops; a 16-seed sweep batched vs one by one
- modes:    image.diffusion's image-to-image at strength 0.5 vs text-to-image (same steps), vs
            diffusers' img2img pipeline; a 16-item LoRA-scale sweep vs the same sweep without
            LoRA and vs diffusers' set_adapters loop (unfused and fused), loads counted
- tiny:     the embedded defaults, eager vs `compile: true` (CUDA graphs on a GPU)
- precision: the trained defaults in bf16 vs fp32, same seed (PSNR, SNR, same tokens)
- memory:   the showcase three times in one process: memory back to its baseline?
- cli:      the showcase end to end, `studio --help`, `studio validate` (fresh processes)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, StudioRunner, command_seconds, median_time, paired_times, sync, write_json  # noqa: E402

SCALES = {
    "real": {
        "sd": {"unet": (320, 640, 1280, 1280), "vae": (128, 256, 512, 512), "text": (768, 12, 3072), "heads": 8,
               "layers": 2, "groups": 32},
        "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab": 50257, "positions": 1024},
        "music": {"n_layer": 8, "n_embd": 512, "n_head": 8, "positions": 2048},
        "cyclegan": {"ngf": 64, "sizes": (256, 512)},
        "oobleck": {"hidden": 128, "decoder": 128, "latent": 64, "seconds": 10.0},
    },
    "small": {  # the same code paths in seconds, for checking the harness on a CPU
        "sd": {"unet": (32, 64), "vae": (32, 64), "text": (32, 2, 64), "heads": 2, "layers": 1, "groups": 8},
        "gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab": 1000, "positions": 256},
        "music": {"n_layer": 2, "n_embd": 64, "n_head": 2, "positions": 512},
        "cyclegan": {"ngf": 8, "sizes": (64,)},
        "oobleck": {"hidden": 16, "decoder": 16, "latent": 8, "seconds": 1.0},
    },
}


GROUPS = ["sd", "gpt2", "music", "cyclegan", "oobleck", "defaults", "modes", "tiny", "precision", "memory", "cli"]


class Harness:
    def __init__(self, args, tmp: Path):
        self.args, self.tmp = args, tmp
        self.device = args.device
        self.sizes = SCALES[args.scale]
        self.studio = StudioRunner(tmp, self.device, args.precision)
        self.rows: list[dict] = []

    def time(self, fn) -> float:
        return median_time(fn, self.args.repeats)

    def precision_of(self, generator) -> str:
        """The precision Studio runs `generator` in here ("bf16", "fp16", "fp32")."""
        return self.studio.runtimes[self.args.precision].precision_for(generator.precisions)

    def dtype_for(self, generator) -> torch.dtype:
        """... as a torch dtype, so a raw loop runs in the same one."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision_of(generator)]

    def compare(self, group: str, name: str, raw, studio, target: str, **extra) -> None:
        """Time `raw` and `studio` in turn and record the row."""
        self.row(group, name, *paired_times(raw, studio, self.args.repeats), target, **extra)

    def row(self, group: str, name: str, raw_s: float, studio_s: float, target: str, **extra) -> None:
        ratio = raw_s / studio_s
        self.rows.append({"group": group, "row": name, "raw_s": round(raw_s, 4), "studio_s": round(studio_s, 4),
                          "ratio": round(ratio, 3), "target": target, **extra})
        more = "  ".join(f"{k} {v}" for k, v in extra.items())
        print(f"[{group}] {name}: raw {raw_s:.3f} s, studio {studio_s:.3f} s, ratio {ratio:.2f} "
              f"(target {target}) {more}", flush=True)

    def note(self, group: str, name: str, **values) -> None:
        self.rows.append({"group": group, "row": name, **values})
        print(f"[{group}] {name}: " + "  ".join(f"{k} {v}" for k, v in values.items()), flush=True)

    # -- Stable Diffusion 1.5 size ---------------------------------------------------

    def sd(self) -> None:
        path = build_sd(self.tmp / "sd", self.sizes["sd"])
        side, steps = self.args.sd_size, self.args.sd_steps
        self._sd_pipeline(path, side, steps)
        self._sd_correctness(path, side, steps)
        if self.args.sd_sweep:
            self._sd_batching(path, side)

    def _sd_pipeline(self, path: Path, side: int, steps: int) -> None:
        from diffusers import StableDiffusionPipeline

        from studio_image.diffusion import ImageDiffusion

        dtype = self.dtype_for(ImageDiffusion)
        pipe = StableDiffusionPipeline.from_pretrained(path, dtype=dtype).to(self.device)
        pipe.set_progress_bar_config(disable=True)

        def raw():  # a diffusers user's script: one image, saved
            image = pipe("a lighthouse at dusk", num_inference_steps=steps, height=side, width=side,
                         generator=torch.Generator("cpu").manual_seed(1)).images[0]
            image.save(self.tmp / "raw.png")

        step = [{"id": "i", "uses": "image.diffusion", "with": {"model": str(path), "prompt": "a lighthouse at dusk",
                                                              "steps": steps, "width": side, "height": side,
                                                              "seed": 1}}]
        size = "SD1.5-size" if self.args.scale == "real" else "small SD"
        self.compare("sd", f"{size} pipeline {side}px {steps} steps {self.precision_of(ImageDiffusion)}", raw,
                     lambda: self.studio(step), ">= 0.97")
        if self.device.startswith("cuda"):  # a CPU without bf16 units runs bf16 many times slower
            self._sd_precision(pipe, side)

    def _sd_precision(self, pipe, side: int) -> None:
        """The UNet alone, one CFG step (batch 2): fp32 weights, autocast over fp32
        weights, and weights cast to bf16/fp16 (what Studio's precision auto does)."""
        unet = pipe.unet.to(torch.float32)
        latents = torch.randn((2, 4, side // 8, side // 8), device=self.device)
        text = torch.randn((2, 77, unet.config.cross_attention_dim), device=self.device)

        @torch.inference_mode()
        def forward(dtype, autocast=False):
            if autocast:
                with torch.autocast(self.device.split(":")[0], dtype=dtype):
                    return unet(latents, 500, encoder_hidden_states=text).sample
            return unet(latents.to(dtype), 500, encoder_hidden_states=text.to(dtype)).sample

        fp32 = self.time(lambda: forward(torch.float32))
        for dtype in (torch.bfloat16, torch.float16):
            autocast = self.time(lambda: forward(dtype, autocast=True))
            unet.to(dtype)
            cast = self.time(lambda: forward(dtype))
            unet.to(torch.float32)
            name = str(dtype).replace("torch.", "")
            self.note("sd", f"UNet step {side}px, fp32 weights vs {name}", fp32_s=round(fp32, 4),
                      autocast_over_fp32_s=round(autocast, 4), weights_cast_s=round(cast, 4),
                      speedup_weights_cast=round(fp32 / cast, 2), speedup_autocast=round(fp32 / autocast, 2),
                      target="weights cast >= 5x fp32 on CUDA")

    def _sd_correctness(self, path: Path, side: int, steps: int) -> None:
        """Studio's half-precision image against its fp32 image, same seed."""
        from PIL import Image

        from studio_image.diffusion import ImageDiffusion

        chosen = self.precision_of(ImageDiffusion)
        if chosen == "fp32":
            return
        step = [{"id": "i", "uses": "image.diffusion", "with": {"model": str(path), "prompt": "a red door",
                                                              "steps": steps, "width": side, "height": side,
                                                              "seed": 7}}]
        images = {}
        for precision in (chosen, "fp32"):
            result = self.studio(step, precision=precision)
            images[precision] = np.asarray(Image.open(result.artifacts("i")[0].path), dtype=np.float64)
        half, full = images[chosen], images["fp32"]
        mse = float(np.mean((half - full) ** 2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
        relative = float(np.linalg.norm(half - full) / max(np.linalg.norm(full), 1e-9))
        self.note("sd", f"{chosen} vs fp32 image, same seed", psnr_db=round(psnr, 1),
                  relative_error=round(relative, 4), target="close: PSNR reported")

    def _sd_batching(self, path: Path, side: int) -> None:
        from studio_image.diffusion import ImageDiffusion

        count = self.args.sd_sweep
        self.sweep("sd", f"{count}-seed sweep, {side}px 10 steps", ImageDiffusion, count,
                   {"model": str(path), "prompt": "a lighthouse", "steps": 10, "width": side, "height": side})

    def sweep(self, group: str, name: str, generator, count: int, with_: dict) -> None:
        """A `count`-seed sweep as Studio batches it, and one item at a time."""
        step = [{"id": "d", "uses": generator.name, "with": with_, "sweep": {"seed": list(range(count))}}]
        batched = self.time(lambda: self.studio(step))
        size, generator.max_batch_size = generator.max_batch_size, 1
        try:
            single = self.time(lambda: self.studio(step))
        finally:
            generator.max_batch_size = size
        self.note(group, f"{name}: batched vs one by one", one_by_one_s=round(single, 3),
                  batched_s=round(batched, 3), speedup=round(single / batched, 2), target=">= 4x")

    # -- GPT-2 124M ----------------------------------------------------------------

    def gpt2(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = build_gpt2(self.tmp / "gpt2", self.sizes["gpt2"])
        tokenizer = AutoTokenizer.from_pretrained(path)
        from studio_text.gpt import TextGPT

        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype_for(TextGPT)).to(self.device).eval()
        prompt, new = "It was a dark and stormy night", self.args.tokens
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.device)
        label = f"GPT-2 {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M"

        @torch.inference_mode()
        def raw():
            return model.generate(ids, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                                  pad_token_id=tokenizer.eos_token_id)

        with_ = {"model": str(path), "prompt": prompt, "temperature": 0, "max_new_tokens": new,
                 "include_prompt": False}
        eager = [{"id": "t", "uses": "text.gpt", "with": with_}]
        compiled = [{"id": "t", "uses": "text.gpt", "compile": True, "with": with_}]
        self.compare("gpt2", f"{label}, {new} tokens greedy, batch 1 (eager vs generate())", raw,
                     lambda: self.studio(eager), ">= 0.97")
        began = time.perf_counter()
        result = self.studio(compiled)  # compiles and captures; then the steady state is timed
        first = time.perf_counter() - began
        self.compare("gpt2", f"{label}, {new} tokens greedy, batch 1 (compiled vs generate())", raw,
                     lambda: self.studio(compiled), ">= 5x on CUDA", first_call_s=round(first, 1),
                 same_tokens=result.artifacts("t")[0].path.read_text() == tokenizer.decode(
                     raw()[0, ids.shape[1]:], skip_special_tokens=True))

    # -- MIDI transformer ------------------------------------------------------------

    def music(self) -> None:
        from transformers import AutoModelForCausalLM

        size = self.sizes["music"]
        label = f"MIDI transformer {size['n_layer']}x{size['n_embd']}"
        path = build_music(self.tmp / "music", size)
        from studio_music.transformer import MusicTransformer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype_for(MusicTransformer))
        model = model.to(self.device).eval()
        with_ = {"model": str(path), "duration_s": self.args.music_s, "seed": 1}
        eager = [{"id": "m", "uses": "music.transformer", "with": with_}]
        compiled = [{"id": "m", "uses": "music.transformer", "compile": True, "with": with_}]
        result = self.studio(eager)
        events = json.loads(result.manifest_path.read_text())["steps"]["m"]["items"][0]["notes"]["events"]
        start = torch.tensor([[388]], device=self.device)

        @torch.inference_mode()
        def raw():  # transformers' sampling for as many events as Studio wrote
            return model.generate(start, do_sample=True, top_p=0.95, max_new_tokens=events, min_new_tokens=events,
                                  pad_token_id=389)

        self.compare("music", f"{label}, {events} events (eager vs generate())", raw,
                     lambda: self.studio(eager), ">= 0.97")
        began = time.perf_counter()
        self.studio(compiled)
        first = time.perf_counter() - began
        self.compare("music", f"{label}, {events} events (compiled vs generate())", raw,
                     lambda: self.studio(compiled), ">= 5x on CUDA", first_call_s=round(first, 1))

    # -- CycleGAN ResNet-9 -----------------------------------------------------------

    def cyclegan(self) -> None:
        from PIL import Image

        from studio_style.cyclegan_network import ResnetGenerator

        torch.manual_seed(0)
        net = ResnetGenerator(ngf=self.sizes["cyclegan"]["ngf"], n_blocks=9).eval()
        weights = self.tmp / "latest_net_G_A.pth"
        torch.save(net.state_dict(), weights)  # the reference's checkpoint format
        from studio_style.cyclegan import StyleCycleGAN

        dtype = self.dtype_for(StyleCycleGAN)
        net = net.to(self.device, dtype)
        rng = np.random.default_rng(0)
        for side in self.sizes["cyclegan"]["sizes"]:
            photo = self.tmp / f"photo{side}.png"
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(photo)
            raw = cyclegan_test_loop(net, photo, self.tmp / "raw.png", self.device, dtype)
            step = [{"id": "s", "uses": "style.cyclegan", "with": {"model": str(weights), "image": str(photo)}}]
            self.compare("cyclegan", f"ResNet-9 generator {side}x{side} {self.precision_of(StyleCycleGAN)}", raw,
                         lambda: self.studio(step), ">= 0.97")

    # -- Stable Audio Open-size Oobleck -------------------------------------------------

    def oobleck(self) -> None:
        import soundfile
        from diffusers import AutoencoderOobleck

        sizes = self.sizes["oobleck"]
        torch.manual_seed(0)
        vae = AutoencoderOobleck(encoder_hidden_size=sizes["hidden"], downsampling_ratios=[2, 4, 4, 8, 8],
                                 channel_multiples=[1, 2, 4, 8, 16], decoder_channels=sizes["decoder"],
                                 decoder_input_channels=sizes["latent"], audio_channels=2, sampling_rate=44100)
        path = self.tmp / "oobleck"
        vae.save_pretrained(path)
        from studio_audio.vae import AudioVAE

        dtype = self.dtype_for(AudioVAE)  # fp16 on a GPU: audio.vae's first choice
        vae = vae.to(self.device, dtype).eval()
        seconds = self.args.audio_s or sizes["seconds"]
        t = np.arange(int(44100 * seconds)) / 44100
        clip = self.tmp / "clip.wav"
        soundfile.write(clip, 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], 1), 44100)

        @torch.inference_mode()
        def raw():  # read, encode, decode, write
            audio = torch.from_numpy(soundfile.read(clip, dtype="float32")[0].T.copy())[None]
            z = vae.encode(audio.to(self.device, dtype)).latent_dist.mean
            out = vae.decode(z).sample[0].float().cpu().numpy().T
            soundfile.write(self.tmp / "raw.wav", out, 44100)

        step = [{"id": "v", "uses": "audio.vae", "with": {"model": str(path), "mode": "reconstruct",
                                                         "audio": str(clip)}}]
        size = "SAO-size" if self.args.scale == "real" else "small"
        self.compare("oobleck", f"{size} Oobleck, {seconds:g} s stereo 44.1 kHz reconstruct {self.precision_of(AudioVAE)}",
                     raw, lambda: self.studio(step), ">= 0.97")

    # -- the embedded defaults against their raw loops -----------------------------------


    def defaults(self) -> None:
        self._default_diffusion()
        self._default_text_to_image()
        self._default_text()
        self._default_music()
        self._default_vae()
        self._default_style()
        self._default_batching()

    def _default_diffusion(self) -> None:
        from diffusers import DDIMScheduler, UNet2DModel

        from studio_image.diffusion import DIGITS_WEIGHTS as DIGITS, ImageDiffusion

        info = json.loads((DIGITS / "studio.json").read_text())
        dtype = self.dtype_for(ImageDiffusion)
        unet = UNet2DModel.from_pretrained(DIGITS, subfolder="unet").to(self.device, dtype).eval()
        scheduler = DDIMScheduler.from_pretrained(DIGITS, subfolder="scheduler")

        @torch.inference_mode()
        def raw():  # a diffusers user's loop: classifier-free guidance over class labels
            scheduler.set_timesteps(25, device=self.device)
            x = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(1)).to(self.device)
            labels = torch.tensor([3, info["null_class"]], device=self.device)
            for t in scheduler.timesteps:
                cond, uncond = unet(torch.cat([x, x]).to(dtype), t, class_labels=labels).sample.float().chunk(2)
                x = scheduler.step(uncond + 2.0 * (cond - uncond), t, x).prev_sample
            return x.cpu()

        step = [{"id": "d", "uses": "image.diffusion",
                 "with": {"steps": 25, "class_label": 3, "seed": 1, "model": str(DIGITS)}}]
        self.compare("defaults", "image.diffusion digits 16x16, 25 DDIM steps, CFG "
                     "(raw: UNet2DModel + DDIMScheduler)",
                     raw, lambda: self.studio(step), "reported (tiny model)")

    def _default_text_to_image(self) -> None:
        from diffusers import StableDiffusionPipeline

        from studio_image.diffusion import DEFAULT_WEIGHTS, ImageDiffusion

        dtype = self.dtype_for(ImageDiffusion)
        pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_WEIGHTS, dtype=dtype).to(self.device)
        pipe.set_progress_bar_config(disable=True)
        prompts = ["red heart", "cat face", "rocket", "sun"]

        @torch.inference_mode()
        def raw():  # a diffusers user's call: four prompts, one generator each
            generators = [torch.Generator().manual_seed(i) for i in range(4)]
            return pipe(prompts, num_inference_steps=25, generator=generators).images

        step = [{"id": "t", "uses": "image.diffusion", "with": {"steps": 25},
                 "zip": {"prompt": prompts, "seed": [0, 1, 2, 3]}}]
        self.compare("defaults", "image.diffusion text-to-image default 32x32, 4 prompts, 25 DDIM steps "
                     "(raw: StableDiffusionPipeline)", raw, lambda: self.studio(step), "a few seconds on 2 cores")

    # -- image.diffusion's modes on the embedded default ---------------------------------

    def modes(self) -> None:
        self._img2img()
        self._lora_sweep()

    def _img2img(self) -> None:
        from diffusers import StableDiffusionImg2ImgPipeline

        from studio_image.diffusion import DEFAULT_WEIGHTS, ImageDiffusion

        sketch = str(ROOT / "pipelines" / "assets" / "apple-sketch.png")
        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(DEFAULT_WEIGHTS, dtype=self.dtype_for(ImageDiffusion))
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        from PIL import Image

        init = Image.open(sketch).convert("RGB")

        @torch.inference_mode()
        def raw():  # a diffusers user's call: four seeds of one sketch at strength 0.5
            generators = [torch.Generator().manual_seed(i) for i in range(4)]
            return pipe(["red apple"] * 4, image=[init] * 4, strength=0.5, num_inference_steps=30,
                        generator=generators).images

        image_step = [{"id": "i", "uses": "image.diffusion",
                       "with": {"prompt": "red apple", "image": sketch, "strength": 0.5, "steps": 30},
                       "sweep": {"seed": [0, 1, 2, 3]}}]
        text_step = [{"id": "t", "uses": "image.diffusion", "with": {"prompt": "red apple", "steps": 30},
                      "sweep": {"seed": [0, 1, 2, 3]}}]
        self.compare("modes", "image.diffusion image-to-image 32x32, strength 0.5, 30 steps, 4 seeds "
                     "(raw: StableDiffusionImg2ImgPipeline)", raw, lambda: self.studio(image_step), ">= 0.97")
        text_s, image_s = paired_times(lambda: self.studio(text_step), lambda: self.studio(image_step),
                                       self.args.repeats)
        self.note("modes", "image-to-image at strength 0.5 vs text-to-image, same 30 steps", text_to_image_s=round(
            text_s, 3), image_to_image_s=round(image_s, 3), ratio=round(image_s / text_s, 2), target="about 0.5")

    def _lora_sweep(self) -> None:
        import diffusers

        from studio_image.diffusion import DEFAULT_WEIGHTS, ImageDiffusion

        lora = ROOT / "plugins" / "studio_image" / "weights" / "lora-outline" / "pytorch_lora_weights.safetensors"
        scales, seeds = [0.0, 0.5, 1.0, 1.5], [0, 1, 2, 3]
        loads = {"model": 0, "lora": 0}
        model_load, lora_load = ImageDiffusion.load, diffusers.StableDiffusionPipeline.load_lora_weights

        def counted_model(gen, params, ctx):
            loads["model"] += 1
            return model_load(gen, params, ctx)

        def counted_lora(pipe, *args, **kwargs):
            loads["lora"] += 1
            return lora_load(pipe, *args, **kwargs)

        def sweep(loras):
            # without LoRA, four guidance scales stand in for the four LoRA scales: the same
            # work in the same four batches of four
            axis = {"lora_scale": scales} if loras else {"guidance_scale": [7.0, 7.5, 8.0, 8.5]}
            return [{"id": "l", "uses": "image.diffusion", "with": {"prompt": "red heart", "steps": 25, "loras": loras},
                     "sweep": {**axis, "seed": seeds}}]

        ImageDiffusion.load, diffusers.StableDiffusionPipeline.load_lora_weights = counted_model, counted_lora
        try:
            self.studio(sweep([{"path": str(lora)}]))  # a first run in a fresh process: what loads
            first = dict(loads)
            with_s, without_s = paired_times(lambda: self.studio(sweep([{"path": str(lora)}])),
                                             lambda: self.studio(sweep([])), self.args.repeats)
        finally:
            ImageDiffusion.load, diffusers.StableDiffusionPipeline.load_lora_weights = model_load, lora_load
        self.note("modes", "LoRA-scale sweep, 16 items (4 scales x 4 seeds), 32x32, 25 steps, vs without LoRA",
                  with_lora_s=round(with_s, 3), without_lora_s=round(without_s, 3),
                  overhead=f"{with_s / without_s - 1:+.1%}", model_reloads=first["model"], lora_loads=first["lora"],
                  target="within 10%, one load each")

        pipe = diffusers.StableDiffusionPipeline.from_pretrained(DEFAULT_WEIGHTS, dtype=self.dtype_for(ImageDiffusion))
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(str(lora), adapter_name="outline")

        @torch.inference_mode()
        def raw(fused: bool):  # a diffusers user's loop: one call per scale, four seeds each
            def run():
                for scale in scales:
                    pipe.set_adapters(["outline"], adapter_weights=[scale])
                    if fused:
                        pipe.fuse_lora(adapter_names=["outline"], lora_scale=1.0)
                    pipe(["red heart"] * 4, num_inference_steps=25,
                         generator=[torch.Generator().manual_seed(s) for s in seeds])
                    if fused:
                        pipe.unfuse_lora()
            return run

        self.compare("modes", "LoRA-scale sweep, 16 items (raw: set_adapters per scale, unfused)", raw(False),
                     lambda: self.studio(sweep([{"path": str(lora)}])), ">= 0.97")
        self.compare("modes", "LoRA-scale sweep, 16 items (raw: set_adapters + fuse_lora per scale)", raw(True),
                     lambda: self.studio(sweep([{"path": str(lora)}])), "reported: is fusing faster?")

    def _default_text(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from studio_text.gpt import DEFAULT_WEIGHTS, TextGPT

        model = AutoModelForCausalLM.from_pretrained(DEFAULT_WEIGHTS, dtype=self.dtype_for(TextGPT))
        model = model.to(self.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(DEFAULT_WEIGHTS)
        ids = tokenizer("To be, or not to be", return_tensors="pt")["input_ids"].to(self.device)

        @torch.inference_mode()
        def raw():
            return model.generate(ids, do_sample=False, max_new_tokens=100, min_new_tokens=100,
                                  pad_token_id=tokenizer.eos_token_id)

        step = [{"id": "t", "uses": "text.gpt", "with": {"prompt": "To be, or not to be", "temperature": 0,
                                                          "max_new_tokens": 100}}]
        self.compare("defaults", "text.gpt 100 tokens greedy (raw: generate(do_sample=False))", raw,
                     lambda: self.studio(step), "reported (tiny model)")

    def _default_music(self) -> None:
        from transformers import AutoModelForCausalLM

        from studio_music.transformer import DEFAULT_WEIGHTS, MusicTransformer

        model = AutoModelForCausalLM.from_pretrained(DEFAULT_WEIGHTS, dtype=self.dtype_for(MusicTransformer))
        model = model.to(self.device).eval()
        step = [{"id": "m", "uses": "music.transformer", "with": {"duration_s": 10, "seed": 1}}]
        events = json.loads(self.studio(step).manifest_path.read_text())["steps"]["m"]["items"][0]["notes"]["events"]
        start = torch.tensor([[388]], device=self.device)

        @torch.inference_mode()
        def raw():  # transformers' sampling for the same number of events
            return model.generate(start, do_sample=True, top_p=0.95, max_new_tokens=events, min_new_tokens=events,
                                  pad_token_id=389)

        self.compare("defaults", f"music.transformer 10 s, {events} events (raw: generate())", raw,
                     lambda: self.studio(step), "reported (tiny model)")

    def _default_vae(self) -> None:
        import soundfile

        from studio_audio.vae import AudioVAE, load_vae

        t = np.arange(160000) / 16000
        clip = self.tmp / "clip16k.wav"
        soundfile.write(clip, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
        dtype = self.dtype_for(AudioVAE)
        vae = load_vae("default").to(self.device, dtype).eval()

        @torch.inference_mode()
        def raw():  # read, encode, decode, write
            x = torch.from_numpy(soundfile.read(clip, dtype="float32")[0])[None, None].to(self.device, dtype)
            out = vae.decode(vae.encode(x).latent_dist.mean).sample[0, 0].float().cpu().numpy()
            soundfile.write(self.tmp / "raw.wav", out, 16000)

        step = [{"id": "v", "uses": "audio.vae", "with": {"mode": "reconstruct", "audio": str(clip)}}]
        self.compare("defaults", "audio.vae reconstruct 10 s (raw: read, encode, decode, write)", raw,
                     lambda: self.studio(step), "reported (tiny model)")

    def _default_style(self) -> None:
        from PIL import Image

        from studio_style.cyclegan import StyleCycleGAN, load_generator

        photo = self.tmp / "photo256.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(photo)
        dtype = self.dtype_for(StyleCycleGAN)
        net = load_generator("default", "AtoB").to(self.device, dtype).eval()
        raw = cyclegan_test_loop(net, photo, self.tmp / "raw.png", self.device, dtype)
        step = [{"id": "s", "uses": "style.cyclegan", "with": {"image": str(photo)}}]
        self.compare("defaults", "style.cyclegan 256x256 (raw: normalise, forward, save PNG)", raw,
                     lambda: self.studio(step), "reported (tiny model)")

    def _default_batching(self) -> None:
        from studio_image.diffusion import DIGITS_WEIGHTS as DIGITS, ImageDiffusion

        self.sweep("defaults", "16-seed sweep of image.diffusion digits, 10 steps", ImageDiffusion, 16,
                   {"steps": 10, "class_label": 5, "model": str(DIGITS)})

    # -- fresh processes: the showcase, --help, validate ------------------------------------

    def cli(self) -> None:
        showcase = command_seconds(["run", "pipelines/showcase.yaml", "--no-cache", "-q", "--device", self.device,
                                    "--out", str(self.tmp / "cli")], 1)
        self.note("cli", "showcase end to end (studio run, fresh process, no cache)", seconds=round(showcase, 1),
                  target="< 60 s on 2 CPU cores")
        self.note("cli", "studio --help", seconds=round(command_seconds(["--help"], 5), 3), target="< 1 s")
        self.note("cli", "studio validate pipelines/showcase.yaml",
                  seconds=round(command_seconds(["validate", "pipelines/showcase.yaml"], 5), 3))

    # -- the embedded defaults, eager vs compiled ----------------------------------------

    def tiny(self) -> None:
        steps = {
            "image.diffusion default, 25 steps": {"uses": "image.diffusion", "with": {"steps": 25, "seed": 1}},
            "text.gpt default, 100 tokens": {"uses": "text.gpt", "with": {"prompt": "To be", "max_new_tokens": 100}},
            "music.transformer default, 10 s": {"uses": "music.transformer", "with": {"duration_s": 10, "seed": 1}},
        }
        for name, step in steps.items():
            eager = [{"id": "x", **step}]
            compiled = [{"id": "x", "compile": True, **step}]
            began = time.perf_counter()
            self.studio(compiled)
            first = time.perf_counter() - began
            self.compare("tiny", f"{name}: eager vs compiled", lambda: self.studio(eager),
                         lambda: self.studio(compiled), ">= 4x on CUDA", first_call_s=round(first, 1))


    # -- bf16 against fp32 on the embedded defaults ------------------------------------------

    def precision(self) -> None:
        """Each trained default run in bf16 and in fp32 with the same seed: how close is
        what half precision makes? (Numerics, so it is measurable on any device; bf16 runs
        on CPUs too, slowly.)"""
        from PIL import Image

        photo = self.tmp / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(photo)
        images = {
            "image.diffusion": {"steps": 25, "prompt": "red heart", "seed": 1},
            "image.gan": {"seed": 1},
            "style.cyclegan": {"image": str(photo)},
        }
        for uses, with_ in images.items():
            half, full = (self._output(uses, with_, p, read_image) for p in ("bf16", "fp32"))
            mse = float(np.mean((half - full) ** 2))
            self.note("precision", f"{uses} default, bf16 vs fp32 image",
                      psnr_db=round(10 * np.log10(255**2 / mse), 1) if mse else "identical",
                      max_abs_diff=int(np.abs(half - full).max()))
        sound = {"mode": "sample", "duration_s": 2, "seed": 1, "loudness": "as_decoded"}
        full = self._output("audio.vae", sound, "fp32", read_audio)
        for precision in ("bf16", "fp16"):  # audio.vae prefers fp16: this is why
            half = self._output("audio.vae", sound, precision, read_audio)
            snr = 10 * np.log10(np.sum(full**2) / max(np.sum((half - full) ** 2), 1e-20))
            self.note("precision", f"audio.vae default, {precision} vs fp32 sample", snr_db=round(float(snr), 1))
        for uses, with_ in {"text.gpt": {"prompt": "To be", "temperature": 0, "max_new_tokens": 100},
                            "music.transformer": {"duration_s": 10, "temperature": 0}}.items():
            half, full = (self._output(uses, with_, p, lambda path: path.read_bytes()) for p in ("bf16", "fp32"))
            common = next((i for i, (a, b) in enumerate(zip(half, full)) if a != b), min(len(half), len(full)))
            self.note("precision", f"{uses} default greedy, bf16 vs fp32", identical=half == full,
                      same_prefix_bytes=common, bytes=len(full))

    def _output(self, uses: str, with_: dict, precision: str, read):
        result = self.studio([{"id": "x", "uses": uses, "with": with_}], precision=precision)
        return read(result.artifacts("x")[0].path)

    # -- no leak: the showcase three times in one process ---------------------------------

    def memory(self) -> None:
        """Memory after each of three showcase runs (each with its own Runtime, as the CLI
        makes one per run), against the baseline before the first: CUDA memory allocated
        on a GPU, resident memory on a CPU (where the allocator keeps some pages)."""
        import gc

        from studio import api
        from studio.execute.runtime import Runtime

        def used() -> int:
            if self.device.startswith("cuda"):
                return torch.cuda.memory_allocated(self.device)
            return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

        gc.collect()
        baseline, after = used(), []
        for i in range(3):
            result = api.run(ROOT / "pipelines" / "showcase.yaml", out=self.tmp / f"showcase{i}", use_cache=False,
                             runtime=Runtime(self.device, self.args.precision))
            assert result.status == "done", [item.error for item in result.failed]
            peak = torch.cuda.max_memory_allocated(self.device) if self.device.startswith("cuda") else None
            del result
            gc.collect()
            after.append(used())
        what = "CUDA allocated" if self.device.startswith("cuda") else "resident"
        self.note("memory", f"showcase x3 in one process, {what} MB after each run",
                  baseline_mb=round(baseline / 2**20, 1), after_mb=[round(a / 2**20, 1) for a in after],
                  **({"peak_mb": round(peak / 2**20, 1)} if peak else {}),
                  target="back to baseline")


# -- model builders: random weights, saved as a user's checkpoint is ---------------------


def cyclegan_test_loop(net, photo: Path, out: Path, device: str, dtype: torch.dtype):
    """The reference's test loop for one image: normalise, forward, back to an image, save."""
    from PIL import Image

    @torch.inference_mode()
    def run():
        x = torch.from_numpy(np.asarray(Image.open(photo), dtype=np.float32) / 127.5 - 1)
        y = net(x.permute(2, 0, 1)[None].to(device, dtype))[0].float()
        array = ((y + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
        Image.fromarray(array).save(out)

    return run


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.float64)


def read_audio(path: Path) -> np.ndarray:
    import soundfile

    return soundfile.read(path, dtype="float64")[0]


def build_sd(root: Path, size: dict) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77)
    hidden, layers, inner = size["text"]
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=inner, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    blocks = len(size["unet"])
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=size["layers"],
        block_out_channels=size["unet"], norm_num_groups=size["groups"], cross_attention_dim=hidden,
        attention_head_dim=size["heads"],
        down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1))
    vae_blocks = len(size["vae"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=size["vae"], layers_per_block=2,
        norm_num_groups=size["groups"], sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks, up_block_types=("UpDecoderBlock2D",) * vae_blocks)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "pipeline")
    params = sum(p.numel() for m in (unet, vae, text_encoder) for p in m.parameters())
    print(f"built an SD pipeline: UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M, "
          f"all {params / 1e6:.0f}M parameters")
    return root / "pipeline"


def build_gpt2(root: Path, size: dict) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from studio_text.gpt_train import train_tokenizer

    text = " ".join(f"the {w} of {v} and a {w}{v}" for w in ("sea", "night", "storm", "house", "light")
                    for v in ("stone", "rain", "wind", "fire", "glass")) * 20
    tokenizer = train_tokenizer([text], vocab_size=300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=size["vocab"], n_positions=size["positions"],
                                       n_embd=size["n_embd"], n_layer=size["n_layer"], n_head=size["n_head"],
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    print(f"built a GPT-2: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
    return root


def build_music(root: Path, size: dict) -> Path:
    from transformers import GPT2LMHeadModel

    from studio_music.transformer_network import gpt2_config

    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(n_layer=size["n_layer"], n_embd=size["n_embd"], n_head=size["n_head"],
                                        n_positions=size["positions"]))
    model.save_pretrained(root)
    print(f"built a MIDI transformer: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--scale", default="real", choices=sorted(SCALES))
    parser.add_argument("--only", nargs="*", choices=GROUPS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sd-size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--sd-steps", type=int, default=20)
    parser.add_argument("--sd-sweep", type=int, default=16, help="seeds in the batching row (0: skip it)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per GPT-2 row")
    parser.add_argument("--music-s", type=float, default=60.0, help="seconds of music per row")
    parser.add_argument("--audio-s", type=float, help="seconds of audio per Oobleck row (default: 10, small: 1)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    groups = args.only or GROUPS
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(args, Path(tmp))
        for group in groups:
            began = time.perf_counter()
            getattr(harness, group)()
            sync()
            print(f"[{group}] done in {time.perf_counter() - began:.0f} s", flush=True)
        json_path = args.json or ROOT / "benchmarks" / "results" / f"{args.device.split(':')[0]}.json"
        write_json(json_path, args.device, harness.rows, scale=args.scale, precision=args.precision)


if __name__ == "__main__":
    main()
