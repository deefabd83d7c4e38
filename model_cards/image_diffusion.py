"""Measures a text-to-image model on captions it was not trained on, for its model card.

    python -m model_cards.image_diffusion --model DIR [--data emoji:noto] [--json OUT] [--grid OUT.png]

The held-out captions are the ones `studio train image.diffusion` kept back (the same
fixed split). A judge, a small CNN trained here on every image of the data set (the
held-out ones too: it must know what each caption looks like), scores one image per
held-out caption:
- name retrieval: the judge ranks the prompted image's name among `candidates` names
  (the right one and others drawn at random); top-1 / top-5;
- category: the judge's group (emoji:noto: the 9 CLDR groups) against the caption's;
- FID and KID on the judge's 128 features (torchmetrics with that feature extractor:
  nothing downloaded, and so not comparable with Inception-based FID), against the
  held-out images themselves;
- colour: prompts that differ only in a colour word, and whether the colour of the
  drawn pixels follows the word.
The same for the untrained model (the trained autoencoder and tokenizer with a fresh
UNet and text encoder), for a nearest-training-image baseline (the training image whose
caption shares the most words with the prompt) and for the held-out images (the ceiling).

With `--lora FILE --data STYLE` it measures a style LoRA instead: images of held-out
captions at each `--scales` value (0 is the model alone) against the style's held-out
images and the model's own data, by colour saturation and the share of dark (line)
pixels, which separate line art from colour glyphs:

    python -m model_cards.image_diffusion --model DIR --lora FILE --data emoji:noto-outline
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

COLOURS = {"red": 0.0, "orange": 30.0, "yellow": 55.0, "green": 120.0, "blue": 220.0, "purple": 280.0}
COLOUR_SHAPES = ("heart", "circle", "square")
GRID_PROMPTS = ("red heart", "blue heart", "green heart", "cat face", "grinning face", "rocket", "red apple",
                "sun", "snowflake", "pizza", "dog face", "rainbow")


class Judge(nn.Module):
    """A small CNN: 128 features, then one head for the image's own name and one for its group."""

    num_features = 128

    def __init__(self, names: int, groups: int):
        super().__init__()
        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.name = nn.Linear(128, names)
        self.group = nn.Linear(128, groups)

    def forward(self, x):  # x in [-1, 1]
        features = self.body(x)
        return self.name(features), self.group(features)


class JudgeFeatures(nn.Module):
    """The judge's features of images in [0, 1], as torchmetrics' FID and KID call it."""

    num_features = Judge.num_features

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge

    def forward(self, images):
        return self.judge.body(images.float() * 2 - 1).double()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shifts of up to 3 pixels, blur and noise: what a generated image differs by."""
    n, _, h, w = x.shape
    padded = F.pad(x, (3, 3, 3, 3), value=1.0)  # white, as the glyphs are drawn on
    dx, dy = torch.randint(0, 7, (2, n), generator=gen)
    shifted = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    blurred = F.avg_pool2d(F.pad(shifted, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    amount = torch.rand(n, 1, 1, 1, generator=gen)
    noise = 0.08 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return (torch.lerp(shifted, blurred, amount) + noise).clamp(-1, 1)


def train_judge(data, steps: int, batch: int = 64) -> Judge:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    judge = Judge(len(data.images), len(data.classes))
    optimizer = torch.optim.AdamW(judge.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    judge.train()
    for _ in range(steps):
        rows = torch.randint(len(data.images), (batch,), generator=gen)
        names, groups = judge(augment(data.images[rows], gen))
        loss = F.cross_entropy(names, rows) + F.cross_entropy(groups, data.labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return judge.eval()


def cached_judge(data, steps: int, path: Path | None) -> Judge:
    """The judge trained on `data`, from `path` when an earlier evaluation saved it there."""
    from safetensors.torch import load_file, save_file

    if path is not None and path.is_file():
        judge = Judge(len(data.images), len(data.classes))
        judge.load_state_dict(load_file(path))
        return judge.eval()
    judge = train_judge(data, steps)
    if path is not None:
        save_file(judge.state_dict(), path)
    return judge


def candidates_for(truth: torch.Tensor, total: int, count: int, seed: int = 0) -> torch.Tensor:
    """(len(truth), count) name indices: the true one first, then others drawn at random."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in truth.tolist():
        others = torch.randperm(total - 1, generator=gen)[: count - 1]
        rows.append(torch.cat([torch.tensor([t]), others + (others >= t).long()]))
    return torch.stack(rows)


def judge_scores(judge: Judge, images: torch.Tensor, truth: torch.Tensor, groups: torch.Tensor,
                 candidates: torch.Tensor) -> dict[str, float]:
    """Retrieval of the true name among the candidates, and the group, top-1 and top-5."""
    with torch.no_grad():
        names, group_logits = judge(images)
    picked = names.gather(1, candidates)  # the true name is column 0
    rank = (picked > picked[:, :1]).sum(1)
    group_rank = (group_logits > group_logits.gather(1, groups[:, None])).sum(1)
    return {"name_top1": rate(rank < 1), "name_top5": rate(rank < 5),
            "group_top1": rate(group_rank < 1), "group_top5": rate(group_rank < 5)}


def rate(hits: torch.Tensor) -> float:
    return round(hits.float().mean().item(), 3)


def distribution_scores(judge: Judge, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    features = JudgeFeatures(judge).eval()
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    kid = KernelInceptionDistance(feature=features, normalize=True, subset_size=min(100, len(real), len(fake)))
    with torch.no_grad():
        for metric in (fid, kid):
            metric.update((real + 1) / 2, real=True)
            metric.update((fake + 1) / 2, real=False)
        kid_mean, kid_std = kid.compute()
        return {"fid_judge": significant(fid.compute().item()), "kid_judge": significant(kid_mean.item()),
                "kid_judge_std": significant(kid_std.item())}


def significant(x: float) -> float:
    return float(f"{x:.4g}")


def words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", caption.lower()))


def nearest_training_images(prompts: list[str], train) -> torch.Tensor:
    """For each prompt, the training image whose caption shares the most words with it
    (Jaccard; the first one on ties)."""
    vocab = [words(c) for c in train.captions]
    picks = []
    for prompt in prompts:
        w = words(prompt)
        scores = [len(w & v) / max(1, len(w | v)) for v in vocab]
        picks.append(max(range(len(scores)), key=scores.__getitem__))
    return train.images[picks]


def hue_of_ink(image: torch.Tensor) -> float | None:
    """The mean hue, in degrees, of the saturated pixels of an image in [-1, 1]; None if
    nothing in it is coloured."""
    rgb = ((image + 1) / 2).clamp(0, 1)
    top, _ = rgb.max(0)
    low, _ = rgb.min(0)
    chroma = top - low
    coloured = chroma > 0.25
    if coloured.sum() < 4:
        return None
    r, g, b = rgb
    angle = torch.atan2(3 ** 0.5 * (g - b), 2 * r - g - b)  # hue as an angle
    weights = chroma * coloured
    x, y = (torch.cos(angle) * weights).sum(), (torch.sin(angle) * weights).sum()
    return float(torch.rad2deg(torch.atan2(y, x)) % 360)


def nearest_colour(hue: float | None) -> str | None:
    """The colour word (of COLOURS) whose hue is nearest `hue` around the colour circle."""
    if hue is None:
        return None
    return min(COLOURS, key=lambda c: min(abs(hue - COLOURS[c]), 360 - abs(hue - COLOURS[c])))


def colour_scores(sample, seeds: int = 4) -> dict:
    """For each colour word x shape, `seeds` images: how often the ink's hue is nearest the
    word's colour among the six."""
    hits, total, table = 0, 0, {}
    for shape in COLOUR_SHAPES:
        prompts = [f"{colour} {shape}" for colour in COLOURS for _ in range(seeds)]
        images = sample(prompts, list(range(len(prompts))))
        for index, prompt in enumerate(prompts):
            nearest = nearest_colour(hue_of_ink(images[index]))
            word = prompt.split()[0]
            hits += nearest == word
            total += 1
            table.setdefault(prompt, []).append(nearest)
    return {"colour_followed": f"{hits}/{total}", "colour_rate": round(hits / total, 3), "nearest_colour": table}


def sampler(pipeline, steps: int, guidance: float, batch: int = 64):
    """A function (prompts, seeds) -> images in [-1, 1], one seed per image."""
    def sample(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        out = []
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            generators = [torch.Generator().manual_seed(s) for s in seeds[start:start + batch]]
            with torch.no_grad():
                images = pipeline(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                                  output_type="pt").images
            out.append(images * 2 - 1)
        return torch.cat(out)
    return sample


def untrained_pipeline(pipeline):
    """The same pipeline with a fresh UNet and text encoder (seeded), for the baseline."""
    from studio_image.diffusion_network import conditional_unet, text_encoder

    torch.manual_seed(1)
    config = pipeline.text_encoder.config
    fresh_text = text_encoder(config.vocab_size, config.max_position_embeddings, config.hidden_size).eval()
    fresh_unet = conditional_unet(pipeline.unet.config.sample_size, config.hidden_size).eval()
    return type(pipeline)(**{**pipeline.components, "text_encoder": fresh_text, "unet": fresh_unet})


def grid_image(sample, prompts, seeds: int, path: Path, scale: int = 3) -> None:
    """Rows: prompts; columns: seeds; each cell scaled `scale`x (nearest)."""
    from PIL import Image

    images = sample([p for p in prompts for _ in range(seeds)], [s for _ in prompts for s in range(seeds)])
    n, _, h, w = images.shape
    sheet = ((images + 1) * 127.5).clamp(0, 255).round().byte().view(len(prompts), seeds, 3, h, w)
    sheet = sheet.permute(0, 3, 1, 4, 2).reshape(len(prompts) * h, seeds * w, 3).numpy()
    Image.fromarray(sheet).resize((seeds * w * scale, len(prompts) * h * scale), Image.NEAREST).save(path)


def style_stats(images: torch.Tensor) -> dict[str, float]:
    """Mean HSV saturation and the share of dark pixels (every channel below a quarter)
    of images in [-1, 1]."""
    x = (images + 1) / 2
    top, bottom = x.max(1).values, x.min(1).values
    saturation = torch.where(top > 0, (top - bottom) / top.clamp_min(1e-6), torch.zeros_like(top))
    return {"saturation": round(saturation.mean().item(), 4),
            "dark_share": round((top < 0.25).float().mean().item(), 4)}


def lora_report(pipeline, args) -> dict:
    """Style statistics of the model with the LoRA at each scale, and of the targets."""
    from studio_imagedata.sources import load_images

    size = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    style = load_images(args.data, size, 3).split()[1]  # the held-out split the LoRA's trainer kept back
    own = load_images(args.own_data, size, 3).split()[1]
    count = min(args.lora_captions, len(style.captions))
    prompts, seeds = style.captions[:count], list(range(count))
    pipeline.load_lora_weights(str(args.lora), adapter_name="evaluated")
    report: dict = {"model": args.model, "lora": str(args.lora), "captions": count, "steps": args.steps,
                    "guidance": args.guidance, "style_images": style_stats(style.images[:count]),
                    "model_data_images": style_stats(own.images[:count])}
    sample = sampler(pipeline, args.steps, args.guidance)
    for scale in args.scales:
        pipeline.set_adapters(["evaluated"], adapter_weights=[scale])
        report[f"scale_{scale:g}"] = style_stats(sample(prompts, seeds))
    if args.grid:
        sheets = []
        for scale in args.scales:
            pipeline.set_adapters(["evaluated"], adapter_weights=[scale])
            sheets.append(sample(list(GRID_PROMPTS[:6]), [3] * 6))
        _lora_grid(sheets, args.grid)
    return report


def _lora_grid(sheets: list[torch.Tensor], path: Path, scale: int = 3) -> None:
    """Rows: prompts; columns: LoRA scales."""
    from PIL import Image

    images = torch.stack(sheets, 1)  # prompts x scales x 3 x h x w
    prompts, scales, _, h, w = images.shape
    grid = ((images + 1) * 127.5).clamp(0, 255).round().byte().permute(0, 3, 1, 4, 2)
    grid = grid.reshape(prompts * h, scales * w, 3).numpy()
    Image.fromarray(grid).resize((scales * w * scale, prompts * h * scale), Image.NEAREST).save(path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a text-to-image pipeline folder")
    parser.add_argument("--data", default="emoji:noto")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--judge-steps", type=int, default=2000)
    parser.add_argument("--judge", type=Path, help="keep the judge's weights in this file and reuse them")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grid", type=Path, help="write a prompt x seed sheet here")
    parser.add_argument("--lora", type=Path, help="measure this style LoRA on --model (see above)")
    parser.add_argument("--scales", type=lambda v: [float(x) for x in v.split(",")], default=[0, 0.5, 1, 1.5])
    parser.add_argument("--own-data", default="emoji:noto", help="with --lora: the data the model was trained on")
    parser.add_argument("--lora-captions", type=int, default=128, help="with --lora: held-out captions to draw")
    return parser.parse_args()


def text_to_image_report(pipeline, args) -> dict:
    """The judge's scores of the model, the untrained model and two references (the
    held-out images, the nearest training images) on the held-out captions."""
    from studio_imagedata.sources import load_images

    size = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    data = load_images(args.data, size, 3)
    train, held_out = data.split()  # the split the trainer used
    judge = cached_judge(data, args.judge_steps, args.judge)
    index_of = {caption: i for i, caption in enumerate(data.captions)}
    truth = torch.tensor([index_of[c] for c in held_out.captions])
    candidates = candidates_for(truth, len(data.images), args.candidates)
    prompts, seeds = held_out.captions, list(range(len(held_out.captions)))
    report = {"model": args.model, "held_out_captions": len(prompts), "candidates": args.candidates,
              "steps": args.steps, "guidance": args.guidance, "chance": {
                  "name_top1": round(1 / args.candidates, 3), "name_top5": round(5 / args.candidates, 3),
                  # always answering the commonest group (People & Body, for emoji:noto)
                  "group_top1": rate(held_out.labels == held_out.labels.mode().values)}}
    with torch.no_grad():
        report["judge_accuracy_augmented"] = rate(judge(augment(data.images, torch.Generator().manual_seed(9)))[0]
                                                  .argmax(1) == torch.arange(len(data.images)))
    contenders = {"held_out_images": held_out.images,
                  "nearest_training_image": nearest_training_images(prompts, train)}
    sample = sampler(pipeline, args.steps, args.guidance)
    timed = time.time()
    contenders["model"] = sample(prompts, seeds)
    report["model_seconds_per_image"] = round((time.time() - timed) / len(prompts), 3)
    untrained = sampler(untrained_pipeline(pipeline), args.steps, args.guidance)
    contenders["untrained_model"] = untrained(prompts, seeds)
    for name, images in contenders.items():
        report[name] = judge_scores(judge, images, truth, held_out.labels, candidates)
        if name != "held_out_images":
            report[name] |= distribution_scores(judge, held_out.images, images)
    report["model"] |= colour_scores(sample)
    report["untrained_model"] |= {k: v for k, v in colour_scores(untrained).items() if k != "nearest_colour"}
    if args.grid:
        grid_image(sample, GRID_PROMPTS, 6, args.grid)
    return report


def main() -> None:
    from diffusers import StableDiffusionPipeline

    args = parse_args()
    began = time.time()
    pipeline = StableDiffusionPipeline.from_pretrained(args.model, local_files_only=True, use_safetensors=True,
                                                       dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    if args.lora:
        report = lora_report(pipeline, args) | {"seconds": round(time.time() - began, 1)}
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return
    report = text_to_image_report(pipeline, args)
    report["seconds"] = round(time.time() - began, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
