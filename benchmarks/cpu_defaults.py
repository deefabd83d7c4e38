"""CPU benchmarks of the embedded defaults: Studio running a step from YAML against a
hand-written loop of the raw library doing the same work, in the same process.

    python benchmarks/cpu_defaults.py [--repeats 3] [--json benchmarks/results/cpu.json]

Studio's runs share one Runtime, so its model cache is warm as the raw loop's model is:
what is compared is the step (parameters, seeds, the generator, writing the file with
its provenance, the manifest), not loading. Times are medians of `--repeats`, raw and
Studio called in turn after a warm-up. Ratio = raw time / Studio time: 1.0 means the
host adds nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, StudioRunner, command_seconds, median_time, paired_times, write_json  # noqa: E402


def bench_diffusion(studio, repeats):
    from diffusers import DDIMScheduler, UNet2DModel

    weights = ROOT / "plugins/studio_image/weights/diffusion"
    info = json.loads((weights / "studio.json").read_text())
    unet = UNet2DModel.from_pretrained(weights, subfolder="unet").eval()
    scheduler = DDIMScheduler.from_pretrained(weights, subfolder="scheduler")

    @torch.inference_mode()
    def raw():  # the loop a diffusers user writes: classifier-free guidance over class labels
        scheduler.set_timesteps(25)
        x = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(1))
        labels = torch.tensor([3, info["null_class"]])
        for t in scheduler.timesteps:
            cond, uncond = unet(torch.cat([x, x]), t, class_labels=labels).sample.chunk(2)
            x = scheduler.step(uncond + 2.0 * (cond - uncond), t, x).prev_sample
        return x

    step = [{"id": "d", "uses": "image.diffusion", "with": {"steps": 25, "class_label": 3, "seed": 1}}]
    return paired_times(raw, lambda: studio(step), repeats)


def bench_text(studio, repeats):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = ROOT / "plugins/studio_text/weights/gpt"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(weights).eval(), AutoTokenizer.from_pretrained(weights)
    ids = tokenizer("To be, or not to be", return_tensors="pt")["input_ids"]

    @torch.inference_mode()
    def raw():
        return model.generate(ids, do_sample=False, max_new_tokens=100, min_new_tokens=100,
                              pad_token_id=tokenizer.eos_token_id)

    step = [{"id": "t", "uses": "text.gpt", "with": {"prompt": "To be, or not to be", "temperature": 0,
                                                      "max_new_tokens": 100}}]
    return paired_times(raw, lambda: studio(step), repeats)


def bench_music(studio, repeats):
    from transformers import AutoModelForCausalLM

    weights = ROOT / "plugins/studio_music/weights/transformer"
    model = AutoModelForCausalLM.from_pretrained(weights).eval()
    step = [{"id": "m", "uses": "music.transformer", "with": {"duration_s": 10, "seed": 1}}]
    events = json.loads(studio(step).manifest_path.read_text())["steps"]["m"]["items"][0]["notes"]["events"]

    @torch.inference_mode()
    def raw():  # transformers' sampling for the same number of events
        return model.generate(torch.tensor([[388]]), do_sample=True, top_p=0.95, max_new_tokens=events,
                              min_new_tokens=events, pad_token_id=389)

    return paired_times(raw, lambda: studio(step), repeats)


def bench_vae(studio, repeats, tmp):
    import soundfile

    from studio_audio.vae import load_vae

    t = np.arange(160000) / 16000
    soundfile.write(tmp / "clip.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    vae = load_vae("default").eval()
    x = torch.from_numpy(soundfile.read(tmp / "clip.wav", dtype="float32")[0])[None, None]

    @torch.inference_mode()
    def raw():
        return vae.decode(vae.encode(x).latent_dist.mean).sample

    step = [{"id": "v", "uses": "audio.vae", "with": {"mode": "reconstruct", "audio": str(tmp / "clip.wav")}}]
    return paired_times(raw, lambda: studio(step), repeats)


def bench_style(studio, repeats, tmp):
    from PIL import Image

    from studio_style.generator import load_generator

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp / "photo.png")
    net = load_generator("default", "AtoB").eval()

    @torch.inference_mode()
    def raw():  # the reference's test loop: normalise, forward, back to an image
        x = torch.from_numpy(np.asarray(Image.open(tmp / "photo.png"), dtype=np.float32) / 127.5 - 1)
        y = net(x.permute(2, 0, 1)[None])[0]
        Image.fromarray(((y + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(tmp / "raw.png")

    step = [{"id": "s", "uses": "style.cyclegan", "with": {"image": str(tmp / "photo.png")}}]
    return paired_times(raw, lambda: studio(step), repeats)


def bench_batching(studio, repeats):
    """A 16-seed sweep of image.diffusion as batches vs one item at a time."""
    from studio_image.diffusion import ImageDiffusion

    step = [{"id": "d", "uses": "image.diffusion", "with": {"steps": 10, "class_label": 5},
             "sweep": {"seed": list(range(16))}}]
    batched = median_time(lambda: studio(step), repeats)
    ImageDiffusion.max_batch_size = 1
    try:
        single = median_time(lambda: studio(step), repeats)
    finally:
        ImageDiffusion.max_batch_size = 16
    return single, batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cpu.json")
    parser.add_argument("--only", nargs="*", help="run only these rows")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        studio = StudioRunner(tmp)
        families = {
            "image.diffusion 16x16, 25 DDIM steps, CFG": lambda: bench_diffusion(studio, args.repeats),
            "text.gpt 100 tokens greedy vs generate()": lambda: bench_text(studio, args.repeats),
            "music.transformer 10 s vs generate()": lambda: bench_music(studio, args.repeats),
            "audio.vae reconstruct 10 s": lambda: bench_vae(studio, args.repeats, tmp),
            "style.cyclegan 256x256": lambda: bench_style(studio, args.repeats, tmp),
        }
        for name, run in families.items():
            if args.only and not any(o in name for o in args.only):
                continue
            raw, ours = run()
            rows.append({"row": name, "raw_s": round(raw, 4), "studio_s": round(ours, 4),
                         "ratio_raw_over_studio": round(raw / ours, 3)})
            print(f"{name:48s} raw {raw:8.3f} s  studio {ours:8.3f} s  ratio {raw / ours:5.2f}", flush=True)
        if not args.only or "batching" in args.only:
            single, batched = bench_batching(studio, args.repeats)
            rows.append({"row": "16-seed sweep, image.diffusion 10 steps: batched vs one by one",
                         "one_by_one_s": round(single, 3), "batched_s": round(batched, 3),
                         "speedup": round(single / batched, 2)})
            print(f"16-seed sweep: one by one {single:.2f} s, batched {batched:.2f} s, x{single / batched:.2f}")
    if not args.only or "showcase" in args.only:
        with tempfile.TemporaryDirectory() as out:
            showcase = command_seconds(["run", "pipelines/showcase.yaml", "--no-cache", "-q", "--out", out], 1)
        rows.append({"row": "showcase end to end (studio run, fresh process, no cache)", "seconds": round(showcase, 1)})
        print(f"showcase end to end: {showcase:.1f} s")
    if not args.only or "help" in args.only:
        help_s = command_seconds(["--help"], 5)
        validate_s = command_seconds(["validate", "pipelines/showcase.yaml"], 5)
        rows.append({"row": "studio --help", "seconds": round(help_s, 3)})
        rows.append({"row": "studio validate pipelines/showcase.yaml", "seconds": round(validate_s, 3)})
        print(f"studio --help {help_s:.3f} s, validate {validate_s:.3f} s")
    write_json(args.json, "cpu", rows)


if __name__ == "__main__":
    main()
