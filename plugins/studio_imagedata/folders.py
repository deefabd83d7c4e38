"""Image training data from a folder: sub-folders are classes, captions beside the images
or in a metadata.jsonl.

Captioned folders, the two conventions people use, are found without being asked for:
- a caption file beside each image, `cat.png` + `cat.txt` (kohya/sd-scripts, EveryDream);
- the Hugging Face imagefolder `metadata.jsonl`: one JSON object a line with `file_name`
  (a path inside the folder) and `text` (or `caption`).
Without either, sub-folders are classes as before and `captions` is None: a trainer that
wants text for a class folder can make it from `classes` itself, while a class-conditional
trainer given the same folder keeps training on labels, not on words it never asked for.
"""

from __future__ import annotations

from pathlib import Path

from studio import UserError
from studio.limits import data_files
from studio_imagedata.images import IMAGE_SUFFIXES, ImageData, square, to_tensor

CAPTION_SUFFIX = ".txt"
METADATA = "metadata.jsonl"
# a caption is a sentence or a tag list; a bigger .txt beside an image is something else
MAX_CAPTION_BYTES = 64 * 1024
# metadata.jsonl is read whole into memory: a million lines is far more images than a
# training run here holds, and 64 MiB is room for a million rows of long captions
MAX_METADATA_BYTES = 64 * 1024 * 1024
MAX_METADATA_LINES = 1_000_000
# a folder's images, all decoded and shrunk into one tensor in memory: at most this many
# files, each at most studio.sniff's input limit on disk, and the tensor at most
# MAX_IMAGE_TENSOR_BYTES (100,000 RGB images at 64 x 64 are 4.9 GB, 680 at 1024 x 1024 are 8); checked
# before any image is opened
MAX_IMAGE_FILES = 100_000
MAX_IMAGE_TENSOR_BYTES = 8 * 2**30


def image_folder(root: Path, size: int, channels: int) -> ImageData:
    """The images of the folder `root` (which exists): a metadata.jsonl's rows, or its
    class sub-folders (none: one class), with the captions beside the images if any."""
    import torch

    if (root / METADATA).exists() or (root / METADATA).is_symlink():
        return _metadata_folder(root, size, channels)
    nested = sorted(root.glob(f"*/{METADATA}"))
    if nested:  # the imagefolder layout with one metadata.jsonl a split: its splits are not classes
        raise UserError(f"--data {str(root)!r}: {nested[0].relative_to(root)} is one folder down; give the folder "
                        f"that holds {METADATA} as --data (e.g. --data {nested[0].parent})")
    classes = _class_folders(root)
    entries: list[tuple[Path, int]] = []
    if classes:
        for index, name in enumerate(classes):
            entries += [(p, index) for p in _image_files(root / name, root, len(entries))]
    else:
        entries = [(p, 0) for p in _image_files(root, root, 0)]
    if not entries:
        raise UserError(f"--data {str(root)!r}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    found = _caption_files(root, [p for p, _ in entries])
    if found is not None:
        entries = [(p, label) for p, label in entries if p in found]
    _check_count(root, len(entries), size, channels)
    images = open_images([p for p, _ in entries], size, channels)
    labels = torch.tensor([label for _, label in entries])
    captions = None if found is None else [found[p] for p, _ in entries]
    return ImageData(to_tensor(images, size, channels), labels, classes, str(root), captions)


def _class_folders(root: Path) -> list[str]:
    """The sub-folders of `root` that are classes: not hidden, and inside `root` (a linked
    folder that leads elsewhere, to / or a home folder, is left out with a warning)."""
    import os
    import sys

    fence = os.path.realpath(root)
    classes, outside = [], []
    try:
        listing = sorted(root.iterdir())
    except OSError as exc:
        raise UserError(f"--data {str(root)!r}: the folder cannot be read ({exc.strerror or exc})") from None
    for p in listing:
        if p.name.startswith(".") or not p.is_dir():
            continue
        real = os.path.realpath(p)
        if real != fence and real.startswith(fence.rstrip(os.sep) + os.sep):
            classes.append(p.name)
        else:
            outside.append(f"{p.name} -> {real}")
    if outside:
        print(f"warning: --data: left out linked folders that lead outside {str(root)[-300:]}: {outside[0][-300:]}"
              + (f" and {len(outside) - 1} more" if len(outside) > 1 else ""), file=sys.stderr)
    return classes


def _image_files(folder: Path, root: Path, already: int) -> list[Path]:
    """The image files under `folder` (`root` or a class folder in it), within the limits."""
    from studio.sniff import MAX_INPUT_BYTES

    return data_files(folder, IMAGE_SUFFIXES, inside=root, max_files=max(1, MAX_IMAGE_FILES - already),
                      max_file_bytes=MAX_INPUT_BYTES, what="images")


def _check_count(root: Path, count: int, size: int, channels: int) -> None:
    """Refuse, before any is opened, more images than the training tensor holds."""
    if count > MAX_IMAGE_FILES:
        raise UserError(f"--data {str(root)!r}: {count:,} images; training reads at most {MAX_IMAGE_FILES:,}. "
                        "Give a smaller folder (or a sample of it)")
    tensor = count * size * size * channels * 4
    if tensor > MAX_IMAGE_TENSOR_BYTES:
        raise UserError(f"--data {str(root)!r}: {count:,} images at {size} x {size} are {tensor / 2**30:,.1f} GiB in "
                        f"memory for training; the limit is {MAX_IMAGE_TENSOR_BYTES // 2**30} GiB. Give fewer images "
                        "or a smaller image size")


def open_images(paths: list[Path], size: int | None = None, channels: int = 3) -> list:
    """The images at `paths`, each decoded then (with `size`) squared at once, so only one
    full-size image is in memory at a time."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from studio.weights import short

    images = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    images.append(im.copy() if size is None else square(im, size, channels))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise UserError(f"--data: {path} is too large to train on ({short(exc, 200)}); remove it or shrink it")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"--data: {path} is not a readable image ({short(exc, 200)}); remove it or fix it")
        except MemoryError:
            raise UserError(f"--data: {path} does not fit in memory to decode; remove it or shrink it") from None
    return images


def _caption_files(root: Path, paths: list[Path]) -> dict[Path, str] | None:
    """The caption beside each image (`cat.png` + `cat.txt`), or None when no image has one.

    An image without its caption in a folder where most have one is left out with a
    warning: kohya/sd-scripts, where this convention comes from, trains on with a warning
    too (it gives such an image an empty caption, i.e. trains it as unconditional; leaving
    it out instead does not teach the model that an empty prompt means that image). Where
    most images have none, the .txt files are more likely stray notes than captions: refused,
    saying which, rather than training on a few images."""
    import warnings

    beside = {p: p.with_suffix(CAPTION_SUFFIX) for p in paths}
    present = {p: t for p, t in beside.items() if t.exists() or t.is_symlink()}
    if not present:
        return None
    missing = [p for p in paths if p not in present]
    shown = ", ".join(str(p.relative_to(root)) for p in missing[:5]) + (", ..." if len(missing) > 5 else "")
    if len(missing) >= len(present):
        raise UserError(f"--data {str(root)!r}: only {len(present)} of {len(paths)} images have a caption file beside "
                        f"them (IMAGE{CAPTION_SUFFIX}); without one: {shown}. Write a caption for each, or remove the "
                        f"{CAPTION_SUFFIX} files to train on the images without captions")
    if missing:
        warnings.warn(f"--data {str(root)!r}: left out {len(missing)} of {len(paths)} images that have no caption file "
                      f"beside them ({shown}); write IMAGE{CAPTION_SUFFIX} beside each to train on them")
    captions = {p: _read_caption(t) for p, t in present.items()}
    empty = [p for p, c in captions.items() if not c]
    if empty:
        warnings.warn(f"--data {str(root)!r}: {len(empty)} caption files are empty (first: "
                      f"{beside[empty[0]].relative_to(root)}); those images train with an empty caption")
    return captions


def _read_within(path: Path, limit: int, what: str, too_big: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (never more is read); a
    UserError naming `what` and `path` otherwise."""
    from studio.limits import regular_file_problem

    problem = regular_file_problem(path)
    if problem:
        raise UserError(f"--data: {what}{problem}")
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise UserError(f"--data: {what}{path} {too_big}")
    return raw


def _read_caption(path: Path) -> str:
    """A caption file's text, UTF-8, its whitespace (newlines too) made single spaces."""
    raw = _read_within(path, MAX_CAPTION_BYTES, "caption file ",
                       f"is over {MAX_CAPTION_BYTES // 1024} KiB; a caption is a sentence or a list of tags: "
                       "shorten it")
    try:
        text = raw.decode("utf-8-sig")  # -sig: Windows editors start UTF-8 with a byte-order mark
    except UnicodeDecodeError as exc:
        raise UserError(f"--data: caption file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
    return " ".join(text.split())


def _metadata_folder(root: Path, size: int, channels: int) -> ImageData:
    """The Hugging Face imagefolder layout: the rows of metadata.jsonl are the data set."""
    import warnings

    import torch

    rows = _read_metadata(root)
    _check_count(root, len(rows), size, channels)
    listed = {image for image, _ in rows}
    unlisted = [p for p in _image_files(root, root, 0) if p not in listed]
    if unlisted:
        shown = ", ".join(str(p.relative_to(root)) for p in unlisted[:5]) + (", ..." if len(unlisted) > 5 else "")
        warnings.warn(f"--data {str(root)!r}: left out {len(unlisted)} images that {METADATA} does not list ({shown}); "
                      f"add a line for each to train on them")
    images = open_images([image for image, _ in rows], size, channels)
    return ImageData(to_tensor(images, size, channels), torch.zeros(len(rows), dtype=torch.long), [], str(root),
                     [caption for _, caption in rows])


def _read_metadata(root: Path) -> list[tuple[Path, str]]:
    """(image path, caption) for each line of root/metadata.jsonl, read within bounds."""
    import json

    path = root / METADATA
    raw = _read_within(path, MAX_METADATA_BYTES, "",
                       f"is over {MAX_METADATA_BYTES // 2**20} MiB; split the data set into folders of fewer images")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"--data: {path} line {line}: not UTF-8 text; save it as UTF-8")
    lines = text.split("\n")  # not splitlines(): JSON strings may hold U+2028 and other line breaks
    if len(lines) > MAX_METADATA_LINES + 1:
        raise UserError(f"--data: {path} has over {MAX_METADATA_LINES:,} lines; split the data set into folders "
                        "of fewer images")
    example = '{"file_name": "cats/1.png", "text": "a black cat"}'
    rows: list[tuple[Path, str]] = []
    first_line: dict[Path, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"--data: {path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not JSON ({exc.msg}, column {exc.colno}); each line is one object like {example}")
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting a thousand deep
            raise UserError(f"{where}: not a JSON line Studio reads ({str(exc)[:100]}); each line is one object "
                            f"like {example}")
        if not isinstance(row, dict):
            raise UserError(f"{where}: a JSON {type(row).__name__}, not an object; each line is one object like {example}")
        name = row.get("file_name")
        if not isinstance(name, str) or not name:
            raise UserError(f"{where}: no \"file_name\" (the image's path inside {root}); each line is one object "
                            f"like {example}")
        column = "text" if "text" in row else "caption" if "caption" in row else None
        if column is None:
            raise UserError(f"{where}: no \"text\" (or \"caption\") for {name!r}; each line is one object like {example}")
        caption = row[column]
        if not isinstance(caption, str):
            raise UserError(f"{where}: \"{column}\" of {name!r} is a JSON {type(caption).__name__}, not a string")
        image = _listed_image(root, name, where)
        if image in first_line:
            raise UserError(f"{where}: {name!r} is listed again (first on line {first_line[image]}); give each image "
                            "one line")
        first_line[image] = number
        rows.append((image, " ".join(caption.split())))
    if not rows:
        raise UserError(f"--data: {path} lists no images; each line is one object like {example}")
    return rows


def _listed_image(root: Path, name: str, where: str) -> Path:
    """The image a metadata.jsonl `file_name` names, which must lie inside the folder:
    a data set downloaded from anywhere must not make Studio read files outside it."""
    from pathlib import PurePosixPath

    from studio.limits import regular_file_problem

    inside = f"file_name is a path inside {root} (like 'cat.png' or 'cats/1.png')"
    relative = PurePosixPath(name)
    if "\x00" in name or relative.is_absolute() or ".." in relative.parts or name.startswith("~"):
        raise UserError(f"{where}: file_name {name[:300]!r} points outside the folder; {inside}")
    if relative.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{where}: file_name {name[:300]!r} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    image = root / relative
    try:
        real = image.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        raise UserError(f"{where}: no image {image}; {inside}")
    if not real.is_relative_to(root.resolve()):
        raise UserError(f"{where}: file_name {name[:300]!r} is a link that leads outside the folder (to {real}); "
                        f"copy the image into {root}")
    problem = regular_file_problem(image)
    if problem:
        raise UserError(f"{where}: {problem}")
    return image
