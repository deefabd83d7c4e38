"""Captioned image data for text-to-image training: caption files beside the images,
the Hugging Face imagefolder metadata.jsonl, and the emoji:noto source."""

import json
import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from studio.errors import UserError
from studio_imagedata import emoji as image_emoji
from studio_imagedata import folders as image_folders
from studio_imagedata.sources import load_images

COLOURS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}


def square(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), COLOURS[colour]).save(path)
    return path


def colour_of(image: torch.Tensor) -> str:
    """The name of the COLOURS entry nearest an image's mean colour."""
    rgb = ((image.mean(dim=(1, 2)) + 1) * 127.5).tolist()
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], rgb)))


def assert_aligned(data):
    """Each image is the colour its caption names: captions stayed with their images."""
    assert data.captions is not None and len(data.captions) == len(data.images)
    for image, caption in zip(data.images, data.captions):
        assert caption.split()[0] == colour_of(image), caption


def metadata(root: Path, *rows, raw: str | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    text = raw if raw is not None else "\n".join(json.dumps(r) for r in rows) + "\n"
    (root / "metadata.jsonl").write_text(text, encoding="utf-8")


# --- a caption file beside each image ---------------------------------------------------

def test_caption_files_beside_the_images(tmp_path):
    for i, colour in enumerate(COLOURS):
        square(tmp_path / f"{i}.png", colour)
        (tmp_path / f"{i}.txt").write_text(f"  {colour} square\n on white \n", encoding="utf-8")
    data = load_images(str(tmp_path), 8, 3)
    assert data.captions == ["red square on white", "green square on white", "blue square on white",
                             "yellow square on white"]  # stripped, whitespace made single spaces
    assert data.classes == [] and data.labels.tolist() == [0, 0, 0, 0]
    assert_aligned(data)


def test_caption_files_in_class_folders_keep_the_classes(tmp_path):
    for colour in COLOURS:
        for i in range(2):
            square(tmp_path / colour / f"{i}.png", colour)
            (tmp_path / colour / f"{i}.txt").write_text(f"{colour} thing {i}", encoding="utf-8")
    data = load_images(str(tmp_path), 8, 3)
    assert data.classes == sorted(COLOURS)
    assert [data.classes[i] for i in data.labels] == [c.split()[0] for c in data.captions]
    assert_aligned(data)


def test_an_image_without_its_caption_is_left_out_with_a_warning(tmp_path):
    for i, colour in enumerate(COLOURS):
        square(tmp_path / f"{i}.png", colour)
        if i != 2:
            (tmp_path / f"{i}.txt").write_text(f"{colour} square", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"left out 1 of 4 images that have no caption file beside them \(2.png\)"):
        data = load_images(str(tmp_path), 8, 3)
    assert data.captions == ["red square", "green square", "yellow square"]
    assert_aligned(data)


def test_a_few_stray_txt_files_are_refused_naming_the_images_without(tmp_path):
    for i in range(8):
        square(tmp_path / f"{i}.png", "red")
    (tmp_path / "0.txt").write_text("red", encoding="utf-8")
    (tmp_path / "1.txt").write_text("red", encoding="utf-8")
    with pytest.raises(UserError, match=r"only 2 of 8 images have a caption file beside them .*without one: "
                                        r"2.png, 3.png, 4.png, 5.png, 6.png, \.\.\..*remove the .txt files"):
        load_images(str(tmp_path), 8, 3)


def test_bad_caption_files_are_clear_errors(tmp_path):
    square(tmp_path / "a.png", "red")
    (tmp_path / "a.txt").write_bytes(b"caf\xe9")
    with pytest.raises(UserError, match=r"caption file .*a.txt is not UTF-8 text \(byte 3\); save it as UTF-8"):
        load_images(str(tmp_path), 8, 3)
    (tmp_path / "a.txt").unlink()
    os.mkfifo(tmp_path / "a.txt")  # opening it would block
    with pytest.raises(UserError, match="not a regular file"):
        load_images(str(tmp_path), 8, 3)
    (tmp_path / "a.txt").unlink()
    (tmp_path / "a.txt").write_text("x" * (image_folders.MAX_CAPTION_BYTES + 1), encoding="utf-8")
    with pytest.raises(UserError, match="caption file .*a.txt is over 64 KiB"):
        load_images(str(tmp_path), 8, 3)


def test_an_empty_caption_file_is_an_empty_caption_with_a_warning(tmp_path):
    square(tmp_path / "a.png", "red")
    square(tmp_path / "b.png", "blue")
    (tmp_path / "a.txt").write_text("\ufeffred square", encoding="utf-8")  # a byte-order mark is not text
    (tmp_path / "b.txt").write_text("\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"1 caption files are empty \(first: b.txt\)"):
        assert load_images(str(tmp_path), 8, 3).captions == ["red square", ""]


# --- the Hugging Face imagefolder metadata.jsonl -----------------------------------------

def test_metadata_jsonl_with_sub_folders(tmp_path):
    square(tmp_path / "a.png", "red")
    square(tmp_path / "more" / "deeper" / "b.png", "blue")
    square(tmp_path / "more" / "c.jpg", "green")
    metadata(tmp_path, {"file_name": "more/deeper/b.png", "text": "blue square", "extra": 1},
             {"file_name": "a.png", "text": "red square"}, {"file_name": "./more/c.jpg", "text": "green  square"})
    data = load_images(str(tmp_path), 8, 3)
    assert data.captions == ["blue square", "red square", "green square"]  # metadata.jsonl's order
    assert data.classes == [] and data.labels.tolist() == [0, 0, 0]  # sub-folders are paths, not classes
    assert_aligned(data)


def test_metadata_jsonl_caption_column_and_unlisted_images(tmp_path):
    square(tmp_path / "a.png", "red")
    square(tmp_path / "b.png", "blue")
    metadata(tmp_path, {"file_name": "a.png", "caption": "red square"})
    with pytest.warns(UserWarning, match=r"left out 1 images that metadata.jsonl does not list \(b.png\)"):
        data = load_images(str(tmp_path), 8, 3)
    assert data.captions == ["red square"]
    metadata(tmp_path, {"file_name": "a.png", "caption": "not this", "text": "red square"},
             {"file_name": "b.png", "caption": "blue square"})
    assert load_images(str(tmp_path), 8, 3).captions == ["red square", "blue square"]  # text first


@pytest.mark.parametrize("name, message", [
    ("../outside.png", "points outside the folder"),
    ("sub/../../outside.png", "points outside the folder"),
    ("/tmp/outside.png", "points outside the folder"),
    ("~/outside.png", "points outside the folder"),
    ("link.png", "is a link that leads outside the folder"),
    ("missing.png", "no image .*missing.png"),
    ("notes.txt", "is not an image"),
])
def test_metadata_file_names_never_leave_the_folder(tmp_path, name, message):
    root = tmp_path / "data"
    square(tmp_path / "outside.png", "red")
    square(root / "sub" / "in.png", "red")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    metadata(root, {"file_name": "sub/in.png", "text": "fine"}, {"file_name": name, "text": "escape"})
    with pytest.raises(UserError, match=rf"metadata.jsonl line 2: .*{message}"):
        load_images(str(root), 8, 3)


@pytest.mark.parametrize("lines, message", [
    ('{"file_name": "a.png", "text": "red"}\n\n{"file_name": "a.png" "text": "x"}\n',
     r"line 3: not JSON \(Expecting ',' delimiter, column 23\)"),
    ('{"file_name": "a.png", "text": "red"}\n["a.png", "red"]\n', "line 2: a JSON list, not an object"),
    ('{"text": "red"}\n', r'line 1: no "file_name"'),
    ('{"file_name": "a.png", "label": 3}\n', r'line 1: no "text" \(or "caption"\)'),
    ('{"file_name": "a.png", "text": null}\n', r'line 1: "text" of \'a.png\' is a JSON NoneType, not a string'),
    ('{"file_name": "a.png", "text": "red"}\n{"file_name": "./a.png", "text": "red"}\n',
     r"line 2: './a.png' is listed again \(first on line 1\)"),
    ('{"file_name": "a.png", "text": ' + "[" * 100_000 + "\n", "line 1: not a JSON line Studio reads"),
    ("\n\n", "lists no images"),
])
def test_bad_metadata_lines_are_located(tmp_path, lines, message):
    square(tmp_path / "a.png", "red")
    metadata(tmp_path, raw=lines)
    with pytest.raises(UserError, match=message):
        load_images(str(tmp_path), 8, 3)


def test_metadata_jsonl_is_read_within_bounds(tmp_path, monkeypatch):
    square(tmp_path / "a.png", "red")
    row = json.dumps({"file_name": "a.png", "text": "red"})
    metadata(tmp_path, raw=f"{row}\n" * 3)
    monkeypatch.setattr(image_folders, "MAX_METADATA_LINES", 2)
    with pytest.raises(UserError, match="metadata.jsonl has over 2 lines"):
        load_images(str(tmp_path), 8, 3)
    monkeypatch.setattr(image_folders, "MAX_METADATA_BYTES", 20)
    with pytest.raises(UserError, match="metadata.jsonl is over .* MiB; split the data set"):
        load_images(str(tmp_path), 8, 3)
    monkeypatch.undo()
    (tmp_path / "metadata.jsonl").unlink()
    os.mkfifo(tmp_path / "metadata.jsonl")
    with pytest.raises(UserError, match="metadata.jsonl is not a regular file"):
        load_images(str(tmp_path), 8, 3)
    (tmp_path / "metadata.jsonl").unlink()
    metadata(tmp_path, raw=row + '\n{"file_name": "a.png", "text": "caf\xe9"}\n')
    (tmp_path / "metadata.jsonl").write_bytes((tmp_path / "metadata.jsonl").read_bytes().replace(b"\xc3\xa9", b"\xe9"))
    with pytest.raises(UserError, match="metadata.jsonl line 2: not UTF-8 text"):
        load_images(str(tmp_path), 8, 3)


def test_a_metadata_jsonl_one_folder_down_is_not_taken_for_a_class(tmp_path):
    square(tmp_path / "train" / "a.png", "red")
    metadata(tmp_path / "train", {"file_name": "a.png", "text": "red"})
    with pytest.raises(UserError, match=r"train/metadata.jsonl is one folder down; give the folder that holds "
                                        r"metadata.jsonl as --data \(e.g. --data .*train\)"):
        load_images(str(tmp_path), 8, 3)
    assert load_images(str(tmp_path / "train"), 8, 3).captions == ["red"]


# --- class folders and splits ------------------------------------------------------------

def test_class_folders_without_captions_are_unchanged(tmp_path):
    for colour in ("blue", "red"):
        for i in range(3):
            square(tmp_path / colour / f"{i}.png", colour)
    data = load_images(str(tmp_path), 8, 3)
    assert data.captions is None and data.alt_captions is None
    assert data.classes == ["blue", "red"] and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    train, held = data.split(held_out=0.34)
    assert train.captions is None and held.captions is None and len(train.images) + len(held.images) == 6


def test_split_keeps_captions_with_their_images(tmp_path):
    rows = []
    for i in range(40):
        colour = list(COLOURS)[i % 4]
        square(tmp_path / f"{i:02}.png", colour)
        rows.append({"file_name": f"{i:02}.png", "text": f"{colour} number {i}"})
    metadata(tmp_path, *rows)
    data = load_images(str(tmp_path), 8, 3)
    train, held = data.split(held_out=0.25, seed=3)
    assert len(train.captions) == 30 and len(held.captions) == 10
    assert sorted(train.captions + held.captions) == sorted(data.captions)
    assert_aligned(train)
    assert_aligned(held)
    assert data.split(held_out=0.25, seed=3)[1].captions == held.captions  # a fixed split


# --- emoji:noto ---------------------------------------------------------------------------

def test_the_install_script_installs_the_emoji_font_and_groups():
    script = (Path(__file__).parent.parent / "scripts" / "install-system-packages").read_text()
    assert "fonts-noto-color-emoji unicode-data" in script
    # FluidSynth's check no longer ends the script: the emoji step comes after it
    assert "exit 0" not in script.split("emoji-test.txt")[0]


@pytest.fixture(scope="module")
def emoji32():
    # No skip: CI installs the font and unicode-data (scripts/install-system-packages, run by
    # `make setup`); without them this fails with the UserError saying what to install.
    started = time.perf_counter()
    data = load_images("emoji:noto", 32, 3)
    seconds = time.perf_counter() - started
    print(f"emoji:noto at 32x32: {len(data.images)} glyphs in {seconds:.1f} s")
    return data, seconds


def test_emoji_noto_renders_every_glyph_with_its_name(emoji32):
    data, seconds = emoji32
    n = len(data.images)
    assert 3500 < n < 4500 and data.images.shape == (n, 3, 32, 32)
    assert seconds < 60, f"rendering took {seconds:.0f} s"
    # none blank: each glyph has ink on its white ground, and a white ground at the corners
    assert ((data.images < 0.9).flatten(1).sum(1) > 20).all()
    assert (data.images[:, :, 0, 0] > 0.9).float().mean() > 0.8
    assert data.source == "emoji:noto" and len(data.captions) == len(data.alt_captions) == n
    assert len(set(data.captions)) == n  # one image per name
    for caption in ("red heart", "cat face", "rocket", "grinning face", "flag of Japan", "keycap 1",
                    "thumbs up medium-dark skin tone"):
        assert caption in data.captions, caption
    heart = data.images[data.captions.index("red heart")]
    r, g, b = ((heart + 1) * 127.5)[:, 12:20, 12:20].mean(dim=(1, 2)).tolist()  # the middle of the heart
    assert r > 180 and g < 100 and b < 100, (r, g, b)
    assert data.alt_captions[data.captions.index("red heart")] == ["heart"]
    assert data.alt_captions[data.captions.index("grinning face")] == ["grinning"]
    assert all(":" not in c and "_" not in c for c in data.captions)


def test_emoji_noto_classes_are_the_cldr_groups(emoji32):
    data, _ = emoji32
    assert data.classes == ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
                            "Travel & Places", "Activities", "Objects", "Symbols", "Flags"]
    group = {c: data.classes[i] for c, i in zip(data.captions, data.labels)}
    assert group["grinning face"] == "Smileys & Emotion" and group["rocket"] == "Travel & Places"
    assert group["cat face"] == "Animals & Nature" and group["flag of Japan"] == "Flags"
    assert set(data.labels.tolist()) == set(range(len(data.classes)))


def test_emoji_noto_is_deterministic_at_any_size(emoji32):
    data, _ = emoji32
    grey = load_images("emoji:noto", 16, 1)
    assert grey.images.shape == (len(data.images), 1, 16, 16)
    assert grey.captions == data.captions and torch.equal(grey.labels, data.labels)
    train, held = data.split()
    assert len(held.images) == len(data.images) // 10
    assert held.captions == [data.captions[i] for i in torch.randperm(len(data.images),
                             generator=torch.Generator().manual_seed(0))[:len(held.images)].tolist()]


def test_emoji_noto_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(image_emoji, "NOTO_EMOJI", tmp_path / "NotoColorEmoji.ttf")
    with pytest.raises(UserError, match="apt-get install fonts-noto-color-emoji unicode-data"):
        load_images("emoji:noto", 32, 3)
    monkeypatch.setitem(__import__("sys").modules, "emoji", None)
    with pytest.raises(UserError, match=r"needs the emoji package .*pip install 'studio-media\[train\]'"):
        load_images("emoji:noto", 32, 3)
