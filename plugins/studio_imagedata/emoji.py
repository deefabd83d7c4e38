"""The emoji:noto and emoji:noto-outline image sources: Debian's Noto Color Emoji glyphs
on white (or drawn as outlines), captioned with their CLDR names, classes the CLDR
groups."""

from __future__ import annotations

from pathlib import Path

from studio import UserError
from studio_imagedata.images import ImageData, square, to_tensor

# Debian's fonts-noto-color-emoji and unicode-data (the CLDR groups in emoji-test.txt)
NOTO_EMOJI = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
INSTALL_EMOJI = "apt-get install fonts-noto-color-emoji unicode-data (as root: scripts/install-system-packages)"


# Emoji skin-tone modifiers U+1F3FB..U+1F3FF
SKIN_TONES = "".join(chr(c) for c in range(0x1F3FB, 0x1F400))


def emoji_noto(size: int, channels: int, outline: bool = False) -> ImageData:
    """Every emoji that Debian's Noto Color Emoji draws as one glyph, on white, in code-point
    order, captioned with its CLDR short name from the `emoji` package ("red heart"); its
    other names (the package's aliases, "heart") go to alt_captions rather than making
    more copies of the image: a copy per alias would weigh the ~1,000 emoji that have one
    twice or three times. Classes: the CLDR groups ("Smileys & Emotion", "Flags", ...).

    Not cached: rendering the ~3,800 glyphs takes about 2 s, less than loading a cache of
    them would save, and nothing can go stale."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    emoji = _emoji_package()
    groups = _emoji_groups()
    # a bitmap (CBDT) font: FreeType loads it only at the size of its one strike, 109
    font = ImageFont.truetype(str(NOTO_EMOJI), 109)
    left, top, right, bottom = font.getbbox("\U0001F600")
    cell = (right - left, bottom - top)  # 136 x 128: the glyphs lie in the middle 128 x 128
    crop = ((cell[0] - cell[1]) // 2, 0, (cell[0] + cell[1]) // 2, cell[1])

    def render(text: str):
        im = Image.new("RGBA", cell, (0, 0, 0, 0))
        ImageDraw.Draw(im).text((-left, -top), text, font=font, embedded_color=True)
        return im

    fully_qualified = emoji.STATUS["fully_qualified"]
    images, captions, alt_captions, labels, classes = [], [], [], [], []
    untoned: dict[str, bytes] = {}
    for text in sorted(k for k, v in emoji.EMOJI_DATA.items() if v.get("status") == fully_qualified):
        # a sequence the font has no glyph for is drawn as its parts side by side
        if font.getlength(text) > 1.5 * cell[0]:
            continue
        im = render(text)
        if im.getbbox() is None:  # a code point newer than the font: nothing drawn
            continue
        if any(c in SKIN_TONES for c in text):
            # the font draws some toned sequences exactly like the untoned emoji (a
            # snowboarder's face is hidden): the caption would name a tone the image lacks
            base = "".join(c for c in text if c not in SKIN_TONES)
            if base not in untoned:
                untoned[base] = render(base).tobytes()
            if untoned[base] == im.tobytes():
                continue
        group, subgroup = _emoji_group(text, groups)
        if group is None:
            continue
        name, aliases = _emoji_names(emoji.EMOJI_DATA[text], subgroup)
        if group not in classes:
            classes.append(group)
        glyph = im.crop(crop)
        images.append(square(_outline(glyph) if outline else glyph, size, channels))
        captions.append(name)
        alt_captions.append(aliases)
        labels.append(classes.index(group))
    # classes in CLDR order, whatever order the glyphs came in
    order = [g for g in groups["order"] if g in classes]
    labels = [order.index(classes[i]) for i in labels]
    return ImageData(to_tensor(images, size, channels), torch.tensor(labels), order,
                     "emoji:noto-outline" if outline else "emoji:noto", captions, alt_captions)


def _emoji_package():
    """The `emoji` package (its CLDR names are the captions), once the font it is drawn
    with is known to be installed; a UserError saying what to install otherwise."""
    try:
        import emoji
    except ImportError:
        raise UserError("--data emoji:noto needs the emoji package (its CLDR names are the captions): "
                        "pip install 'studio-media[train]'")
    if not NOTO_EMOJI.is_file():
        raise UserError(f"--data emoji:noto needs Debian's Noto Color Emoji font ({NOTO_EMOJI} is missing): "
                        + INSTALL_EMOJI)
    return emoji


def _outline(glyph):
    """A glyph as black lines on a clear ground: the edges of its shape and of its
    colours, thickened so they survive the downscale to a few dozen pixels."""
    from PIL import Image, ImageChops, ImageFilter

    flat = Image.new("RGBA", glyph.size, (255, 255, 255, 255))
    flat.alpha_composite(glyph)
    edges = ImageChops.lighter(flat.convert("L").filter(ImageFilter.FIND_EDGES),
                               glyph.getchannel("A").filter(ImageFilter.FIND_EDGES))
    lines = edges.point(lambda v: 255 if v > 40 else 0).filter(ImageFilter.MaxFilter(5))
    drawn = Image.new("RGBA", glyph.size, (0, 0, 0, 0))
    drawn.putalpha(lines)
    return drawn


def _emoji_groups() -> dict:
    """{sequence without U+FE0F: (CLDR group, subgroup)} from Unicode's emoji-test.txt, and
    "order": the groups in CLDR order. The `emoji` package has the names but not the groups."""
    if not EMOJI_TEST.is_file():
        raise UserError(f"--data emoji:noto needs Unicode's emoji-test.txt for the emoji groups ({EMOJI_TEST} is "
                        "missing): " + INSTALL_EMOJI)
    found: dict = {"order": []}
    group = subgroup = ""
    for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            if group != "Component":  # skin-tone and hair swatches, not emoji people type
                found["order"].append(group)
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif ";" in line and not line.startswith("#") and group != "Component":
            try:
                text = "".join(chr(int(h, 16)) for h in line.split(";")[0].split())
            except ValueError:
                continue
            found.setdefault(text.replace("\ufe0f", ""), (group, subgroup))
    return found


def _emoji_group(text: str, groups: dict) -> tuple[str | None, str]:
    """The CLDR group of an emoji; one newer than the installed emoji-test.txt takes its
    first part's (phoenix = bird + ZWJ + fire: Animals & Nature), as CLDR itself places them."""
    plain = text.replace("\ufe0f", "")
    for key in (plain, "".join(c for c in plain if c not in SKIN_TONES), plain.split("\u200d")[0], plain[:1]):
        if key in groups:
            return groups[key]
    return None, ""


def _emoji_names(data: dict, subgroup: str) -> tuple[str, list[str]]:
    """(caption, other captions) from the emoji package's entry: ':red_heart:' -> "red heart";
    its aliases that say something else (GitHub's ':heart:' -> "heart"; not codes like
    ':clock330:' or ':+1:', nor the name again in other case or punctuation)."""
    import re

    def words(code: str) -> str:
        return " ".join(code.strip(":").replace("_", " ").split())

    name = words(data["en"])
    if subgroup in ("country-flag", "subdivision-flag"):  # the package drops CLDR's "flag:": ':Japan:'
        name = f"flag of {name}"

    def key(text: str) -> str:
        return re.sub(r"[^a-z]+", "", text.lower().replace("flag of", "").replace("flag for", ""))

    seen = {key(name)}
    aliases = []
    for alias in data.get("alias", []):
        text = words(alias)
        if re.fullmatch(r"[A-Za-z][A-Za-z' -]+", text) and key(text) not in seen:
            seen.add(key(text))
            aliases.append(text)
    return name, aliases
