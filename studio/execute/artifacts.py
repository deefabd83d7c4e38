"""Writing step outputs to disk: writers per media type, atomic writes, hashes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from studio import media

WriteFn = Callable[[Any, Path, dict[str, Any]], None]


@dataclass(frozen=True)
class Writer:
    """Writes a generator's output value for one media type to a file."""

    media_type: str
    extension: str  # without the dot
    write: WriteFn  # write(value, path, provenance)
    plugin: str = "studio"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def temp_path_for(final: Path) -> Path:
    """The name beside `final` to write into, free. The name is predictable, so whatever
    already has it (a crashed run's leftover, or a link planted there to send the write
    elsewhere) is removed first: a writer then creates a new file, never one through a
    link. (It is not created here: the step cache hard-links its file into this name.)"""
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    return tmp


def atomic_write(final: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file and rename, so `final` is either whole or absent.
    An interrupted write leaves no file that a later run could mistake for finished."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        tmp = temp_path_for(final)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` survive a power cut, where the file system
    allows it (some refuse to open or sync a directory: then the rename is as safe as
    the file system makes it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(final: Path, data: Any) -> None:
    atomic_write(
        final,
        lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n", "utf-8"),
    )


# --- file-system errors, in words ---------------------------------------------------

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def is_storage_problem(exc: BaseException) -> bool:
    """A full disk or a folder that refuses writes: the machine's problem, which every
    later write would hit too, not the generator's."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL | NOT_WRITABLE | {errno.EIO}


def os_error_text(exc: OSError, path: Path | str | None = None, *, writing: bool = True) -> str:
    """What went wrong with a file, naming it: `path` when the caller knows which file
    mattered (the artifact rather than its temporary name), else the error's own.
    `writing=False` when the caller does not know whether it was a read or a write."""
    where = path if path is not None else (exc.filename or "a file the system did not name")
    if exc.errno in DISK_FULL:
        return f"disk full at {where}: free space or use --out on another disk"
    if exc.errno in NOT_WRITABLE and writing:
        return f"cannot write to {where}: {exc.strerror or exc}"
    return f"{where}: {exc.strerror or exc}"


# --- built-in writers ------------------------------------------------------------


def write_png(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if not isinstance(value, Image.Image):
        raise TypeError(f"an image port needs a PIL.Image, got {type(value).__name__}")
    info = PngInfo()
    info.add_text("studio", json.dumps(provenance, sort_keys=True, default=str))
    parameters = value.info.get("parameters")
    if isinstance(parameters, str) and parameters:
        # a generator's A1111 infotext (docs/plugins.md, "Text metadata on images"): a
        # `parameters` chunk, where A1111, ComfyUI and model sites look (iTXt when not Latin-1)
        info.add_text("parameters", parameters)
    value.save(path, format="PNG", pnginfo=info)


def write_text(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a text port needs a str, got {type(value).__name__}")
    path.write_text(value, encoding="utf-8")


def write_json(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")


def write_wav(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    """16-bit PCM WAV; provenance goes in the INFO chunk's comment (ICMT). Encoded in
    memory, then written as bytes (the same file, byte for byte): libsndfile reports a
    full disk only as "System error", a plain write as ENOSPC, which the executor puts
    in words ("disk full at PATH")."""
    import io

    import numpy as np
    import soundfile

    if not isinstance(value, media.Audio):
        raise TypeError(f"an audio port needs a studio.media.Audio, got {type(value).__name__}")
    samples = value.samples
    if hasattr(samples, "detach"):  # a torch tensor
        samples = samples.detach().float().cpu().numpy()
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if samples.size == 0:
        raise ValueError("the audio is empty (0 samples)")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    encoded = io.BytesIO()
    with soundfile.SoundFile(encoded, "w", samplerate=int(value.sample_rate), channels=channels,
                             format="WAV", subtype="PCM_16") as f:
        f.comment = json.dumps(provenance, sort_keys=True, default=str)
        f.software = "studio"
        f.write(samples)
    with open(path, "wb") as out:
        out.write(encoded.getbuffer())


def write_midi(value: Any, path: Path, provenance: dict[str, Any]) -> None:
    """Standard MIDI file; provenance is a text meta event at time 0."""
    import pretty_midi

    if not isinstance(value, pretty_midi.PrettyMIDI):
        raise TypeError(f"a MIDI port needs a pretty_midi.PrettyMIDI, got {type(value).__name__}")
    note = pretty_midi.Text("studio:" + json.dumps(provenance, sort_keys=True, default=str), 0.0)
    value.text_events.append(note)
    try:
        value.write(str(path))
    finally:
        value.text_events.remove(note)


BUILTIN_WRITERS = [
    Writer(media.IMAGE, "png", write_png),
    Writer(media.TEXT, "txt", write_text),
    Writer(media.JSON, "json", write_json),
    Writer(media.AUDIO, "wav", write_wav),
    Writer(media.MIDI, "mid", write_midi),
]

def read_provenance(path: Path) -> dict[str, Any] | None:
    """The provenance Studio embedded in a PNG, WAV or MIDI file, or None when it carries
    none. Bounded and regular files only (studio.runs.reopen reads it); a file that is not
    one to read, or is damaged, is a UserError naming it."""
    from studio.runs.provenance import read_provenance_strict

    return read_provenance_strict(path)


def read_png_provenance(path: Path) -> dict[str, Any] | None:
    return read_provenance(path) if Path(path).suffix.lower() == ".png" else None
