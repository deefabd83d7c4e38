"""gallery.html: one page per run to look at and listen to what it made, opened from
disk (file://): no server, no network, one file (thumbnails are inlined).

Per item: its output (images enlarged when tiny, contact sheets wide with a click to
zoom, a player and a waveform for audio, a piano roll for MIDI with the audio a later
step rendered from it, text), the parameters that matter, its seed and time, whether it
came from the cache, and the error of a failed item. Filters by step and status. A file
it cannot read is shown as a link, never a reason to fail the run.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.execute.artifacts import atomic_write
from studio.execute.manifest import relative_path

if TYPE_CHECKING:
    from studio.execute.records import ItemResult

# shown for an item when set: what a person scanning a gallery compares
SHOWN_PARAMS = ("prompt", "negative_prompt", "text", "class_label", "image", "mask", "audio", "primer", "strength",
                "steps", "scheduler", "guidance_scale", "loras", "lora_scale", "model", "temperature", "top_p",
                "duration_s", "mode", "direction", "position")
EVALUATIONS = "<!-- evaluations -->"
SHEET_WIDTH = 400  # an image wider than this is a contact sheet: shown wide, click to zoom
MAX_AUDIO_S = 600  # a waveform is drawn from at most this much audio

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}
h2{margin-top:2rem}.items{display:flex;flex-wrap:wrap;gap:1rem}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem;max-width:340px}
.item.wide{max-width:100%}.item img{max-width:320px;image-rendering:pixelated}
.item.wide img.sheet{max-width:100%;cursor:zoom-in}.item.wide img.sheet.zoomed{max-width:none;cursor:zoom-out}
.name{font-size:.8rem;color:#555;word-break:break-all}
pre{white-space:pre-wrap;max-height:16rem;overflow:auto;background:#f3f3f3;padding:.4rem}
.failed{color:#b00}.meta{font-size:.75rem;color:#777}
.params,.notes{font-size:.75rem;margin:.3rem 0;border-collapse:collapse}
.params td,.notes td{padding:0 .4rem 0 0;vertical-align:top;word-break:break-word}.params td:first-child,
.notes td:first-child{color:#777;white-space:nowrap}.notes{font-style:italic}
.cached{color:#06c}.roll,.wave{display:block;max-width:320px;margin:.3rem 0;image-rendering:pixelated}
nav{margin:1rem 0;font-size:.9rem}nav select{margin-right:1rem}
"""

SCRIPT = """
const step = document.getElementById('step'), status = document.getElementById('status');
function filter() {
  for (const section of document.querySelectorAll('section')) {
    let shown = 0;
    for (const item of section.querySelectorAll('.item')) {
      const ok = (!step.value || item.dataset.step === step.value) &&
                 (!status.value || item.dataset.status === status.value);
      item.style.display = ok ? '' : 'none';
      shown += ok;
    }
    section.style.display = shown ? '' : 'none';
  }
}
step.addEventListener('change', filter);
status.addEventListener('change', filter);
for (const sheet of document.querySelectorAll('img.sheet')) {
  sheet.addEventListener('click', event => { event.preventDefault(); sheet.classList.toggle('zoomed'); });
}
"""


def _size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # unreadable or not an image PIL knows: let the browser size it
        return None


def _display_width(size: tuple[int, int] | None) -> int:
    """Small images (a 16x16 sample) are shown enlarged by a whole factor, up to 96 px
    high and 320 px wide, so they can be seen; large ones at most 320 px wide."""
    if size is None:
        return 320
    w, h = size
    return w * max(1, min(96 // max(h, 1), 320 // max(w, 1)))


def _png_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def piano_roll(path: Path, width: int = 320, height: int = 96) -> str | None:
    """A MIDI file's piano roll (pretty_midi's), its pitch range only, as a PNG data URI."""
    try:
        import numpy as np
        import pretty_midi
        from PIL import Image

        roll = pretty_midi.PrettyMIDI(str(path)).get_piano_roll(fs=20)
        played = np.nonzero(roll.sum(axis=1))[0]
        if not len(played) or not roll.shape[1]:
            return None
        roll = roll[played[0]:played[-1] + 1][::-1]  # high notes at the top
        image = Image.fromarray((255 - np.clip(roll * 2, 0, 255)).astype(np.uint8), "L")
        return _png_uri(image.resize((width, height), Image.Resampling.NEAREST))
    except Exception:  # a MIDI pretty_midi cannot read: no roll, the link stays
        return None


def waveform(path: Path, width: int = 320, height: int = 64) -> str | None:
    """An audio file's waveform (min and max per column), as a PNG data URI."""
    try:
        import numpy as np
        import soundfile
        from PIL import Image, ImageDraw

        with soundfile.SoundFile(path) as f:
            frames = min(f.frames, int(MAX_AUDIO_S * f.samplerate))
            samples = f.read(frames, dtype="float32", always_2d=True).mean(axis=1)
        if not len(samples):
            return None
        columns = np.array_split(samples, width)
        image = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(image)
        middle = height / 2
        for x, column in enumerate(columns):
            if len(column):
                top, bottom = float(column.max()), float(column.min())
                draw.line([(x, middle - top * middle), (x, middle - bottom * middle)], fill=60)
        return _png_uri(image)
    except Exception:  # not audio soundfile reads: no waveform, the player stays
        return None


def _artifact_html(run_dir: Path, media_type: str, path: Path, rendered: Path | None) -> tuple[str, bool]:
    """(the HTML for one output, whether it needs the whole width)."""
    rel = html.escape(relative_path(path, run_dir))
    if media_type.startswith("image/"):
        size = _size(path)
        if size and size[0] > SHEET_WIDTH:
            return f'<a href="{rel}"><img class=sheet src="{rel}" alt="{rel}"></a>', True
        return f'<a href="{rel}"><img src="{rel}" width="{_display_width(size)}" loading="lazy" alt="{rel}"></a>', False
    if media_type == "audio/midi":
        roll = piano_roll(path)
        out = f'<img class=roll src="{roll}" alt="piano roll">' if roll else ""
        if rendered is not None:
            sound = html.escape(relative_path(rendered, run_dir))
            out += f'<audio controls preload=none src="{sound}"></audio>'
        return out + f'<a href="{rel}">{rel}</a>', False
    if media_type.startswith("audio/"):
        wave = waveform(path)
        out = f'<img class=wave src="{wave}" alt="waveform">' if wave else ""
        return out + f'<audio controls preload=none src="{rel}"></audio>', False
    if media_type.startswith("text/"):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(5000)
        except OSError:
            return f'<a href="{rel}">{rel}</a>', False
        return f"<pre>{html.escape(text)}</pre>", False
    return f'<a href="{rel}">{rel}</a>', False


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "sha256" in value:  # a media input
        return f"from {value['from']}" if value.get("from") else str(value.get("file", "a file"))
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value[:4]) + (f" (+{len(value) - 4})" if len(value) > 4 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items() if k != "sha256")
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _params_html(params: dict[str, Any]) -> str:
    rows = [f"<tr><td>{html.escape(k)}</td><td>{html.escape(_shown(params[k]))}</td></tr>"
            for k in SHOWN_PARAMS if params.get(k) not in (None, [], "")
            and not (k == "lora_scale" and not params.get("loras"))]  # a scale of no LoRA says nothing
    return f"<table class=params>{''.join(rows)}</table>" if rows else ""


def _notes_html(notes: dict[str, Any], shown: int = 8) -> str:
    """What the generator recorded about the item (ctx.record), the first few."""
    rows = [f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_shown(v))}</td></tr>"
            for k, v in list(notes.items())[:shown]]
    return f"<table class=notes>{''.join(rows)}</table>" if rows else ""


def _rendered_audio(steps: dict[str, list[ItemResult]]) -> dict[str, Path]:
    """MIDI item name -> the audio a later step made from it (its input was that item)."""
    found: dict[str, Path] = {}
    for items in steps.values():
        for r in items:
            audio = [a.path for a in r.artifacts.values() if a.media_type == "audio/wav"]
            if not audio:
                continue
            for value in (r.params or {}).values():
                if isinstance(value, dict) and isinstance(value.get("from"), str):
                    found.setdefault(value["from"], audio[0])
    return found


def write_gallery(run_dir: Path, pipeline: str, status: str, steps: dict[str, list[ItemResult]],
                  description: str | None = None) -> Path:
    rendered = _rendered_audio(steps)
    options = "".join(f'<option value="{html.escape(s)}">{html.escape(s)}</option>' for s in steps)
    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(pipeline)}</title>",
             f"<style>{STYLE}</style><h1>{html.escape(pipeline)}</h1>",
             f"<p>{html.escape(description)}</p>" if description else "",
             f'<p class=meta>{html.escape(str(run_dir))} &middot; {html.escape(status)} &middot; '
             f'<a href="manifest.json">manifest.json</a> &middot; <a href="pipeline.yaml">pipeline.yaml</a></p>',
             f'<nav>step <select id=step><option value="">all</option>{options}</select>'
             'status <select id=status><option value="">all</option><option>done</option><option>cached</option>'
             '<option>failed</option><option>skipped</option><option>interrupted</option></select></nav>']
    for step_id, items in steps.items():
        parts.append(f'<section><h2 id="{html.escape(step_id)}">{html.escape(step_id)}</h2><div class=items>')
        for r in items:
            pieces = [_artifact_html(run_dir, a.media_type, a.path, rendered.get(r.name))
                      for a in r.artifacts.values()]
            body, wide = "".join(p for p, _ in pieces), any(w for _, w in pieces)
            if not r.ok:
                body = f'<p class=failed>{html.escape(r.status)}: {html.escape(r.error or "")}</p>'
            seconds = f" &middot; {r.seconds:.2f} s" if isinstance(r.seconds, (int, float)) else ""
            cached = " &middot; <span class=cached>cached</span>" if r.status == "cached" else ""
            parts.append(f'<div class="item{" wide" if wide else ""}" data-step="{html.escape(step_id)}" '
                         f'data-status="{html.escape(r.status)}"><div class=name>{html.escape(r.name)}</div>{body}'
                         f"{_params_html(r.params or {})}{_notes_html(r.notes or {})}"
                         f"<div class=meta>seed {r.seed}{seconds}{cached}</div></div>")
        parts.append("</div></section>")
    parts.append(EVALUATIONS)  # `studio eval` puts its sections here later (studio.runs.evaluations)
    parts.append(f"<script>{SCRIPT}</script>")
    out = run_dir / "gallery.html"
    atomic_write(out, lambda tmp: tmp.write_text("\n".join(parts), encoding="utf-8"))
    return out


def write_pipeline(run_dir: Path, pipeline: dict[str, Any], source: str) -> Path:
    """pipeline.yaml beside the manifest: the resolved pipeline as it ran."""
    import yaml

    out = run_dir / "pipeline.yaml"
    text = f"# the pipeline as it ran (seed and --set applied), from {source}\n" + yaml.safe_dump(
        json.loads(json.dumps(pipeline, default=str)), sort_keys=False, allow_unicode=True)
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
