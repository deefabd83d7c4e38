"""gallery.html: one page per run to look at what it made, opened from disk. A file it
cannot read is shown as a link, never a reason to fail the run."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from studio.artifacts import atomic_write
from studio.manifest import relative_path

if TYPE_CHECKING:
    from studio.records import ItemResult

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}
h2{margin-top:2rem}.items{display:flex;flex-wrap:wrap;gap:1rem}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem;max-width:340px}
.item img{max-width:320px;image-rendering:pixelated}.name{font-size:.8rem;color:#555;word-break:break-all}
pre{white-space:pre-wrap;max-height:16rem;overflow:auto;background:#f3f3f3;padding:.4rem}
.failed{color:#b00}.meta{font-size:.75rem;color:#777}
"""


def _display_width(path: Path) -> int:
    """Small images (a 16x16 sample) are shown enlarged by a whole factor, up to 96 px
    high and 320 px wide, so they can be seen; large ones at most 320 px wide."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # unreadable or not an image PIL knows: let the browser size it
        return 320
    return w * max(1, min(96 // max(h, 1), 320 // max(w, 1)))


def _artifact_html(run_dir: Path, media_type: str, path: Path) -> str:
    rel = html.escape(relative_path(path, run_dir))
    if media_type.startswith("image/"):
        return f'<a href="{rel}"><img src="{rel}" width="{_display_width(path)}" loading="lazy"></a>'
    if media_type.startswith("audio/") and media_type != "audio/midi":
        return f'<audio controls src="{rel}"></audio>'
    if media_type.startswith("text/"):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(5000)
        except OSError:
            return f'<a href="{rel}">{rel}</a>'
        return f"<pre>{html.escape(text)}</pre>"
    return f'<a href="{rel}">{rel}</a>'


def write_gallery(run_dir: Path, pipeline: str, status: str, steps: dict[str, list[ItemResult]]) -> Path:
    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(pipeline)}</title>",
             f"<style>{STYLE}</style><h1>{html.escape(pipeline)}</h1>",
             f'<p class=meta>{html.escape(str(run_dir))} &middot; {html.escape(status)}</p>']
    for step_id, items in steps.items():
        parts.append(f"<h2 id=\"{html.escape(step_id)}\">{html.escape(step_id)}</h2><div class=items>")
        for r in items:
            body = "".join(_artifact_html(run_dir, a.media_type, a.path) for a in r.artifacts.values())
            if not r.ok:
                body = f'<p class=failed>{html.escape(r.status)}: {html.escape(r.error or "")}</p>'
            meta = f"seed {r.seed}" + (" &middot; cached" if r.status == "cached" else "")
            parts.append(f'<div class=item><div class=name>{html.escape(r.name)}</div>{body}'
                         f'<div class=meta>{meta}</div></div>')
        parts.append("</div>")
    out = run_dir / "gallery.html"
    atomic_write(out, lambda tmp: tmp.write_text("\n".join(parts), encoding="utf-8"))
    return out
