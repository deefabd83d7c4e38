"""Size limits and value checks generators share (public API: `studio.limits`), and
the bounded ways to read a user's files: a folder of training data (data_files) and one
file read only when it is a regular file within a size (read_regular).

Every limit is checked twice with the same function: by a Params validator when
`studio validate` can know the sizes, and before anything is allocated at run time,
where the real sizes (an upstream image, the model's own resolution) are known.
Limits on work (pixels x steps) apply on a CPU only; validators learn the device from
the validation context (on_cpu).
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from studio.errors import UserError, printable
from studio.sniff import MAX_IMAGE_PIXELS


# the public API plugins may import (documented in docs/plugins.md)
__all__ = ["MAX_CPU_PIXEL_STEPS", "MAX_OUTPUT_PIXELS", "MAX_OUTPUT_SIDE", "FileRefused", "colour", "colour_problem",
           "cpu_budget_problem", "data_files", "on_cpu", "output_size_problem", "read_regular",
           "regular_file_problem"]

# An image a step writes stays one Studio can read back as an input (the same limit).
MAX_OUTPUT_PIXELS = MAX_IMAGE_PIXELS
MAX_OUTPUT_SIDE = 8192
# Sampling on a CPU: width x height x steps. 1024 x 1024 at 50 steps is about an hour for
# a Stable Diffusion model on a CPU; 4096 x 4096 at 1000 steps would be weeks.
MAX_CPU_PIXEL_STEPS = 1024 * 1024 * 50


# Scanning a folder of training data (`data_files`): how far the walk goes. A data set is a
# few levels of class and split folders; 32 levels is far more than any has, and a folder
# nested deeper is refused rather than walked (recursion is never used: the walk is a loop).
MAX_DATA_DEPTH = 32
# entries looked at (files, folders and links, matching or not) and seconds spent looking:
# a scan that reaches these is walking something other than a data set (a home folder, /)
MAX_SCAN_ENTRIES = 500_000
MAX_SCAN_SECONDS = 30.0
# matching files a scan returns, unless the reader sets its own (lower) limit
MAX_DATA_FILES = 200_000


def data_files(root: Any, suffixes: Any, *, inside: Any = None, max_files: int = MAX_DATA_FILES,
               max_file_bytes: int | None = None, max_total_bytes: int | None = None,
               what: str = "files") -> list:
    """The regular files under `root` (a folder of training data) whose suffix is one of
    `suffixes`, sorted. Anything else with such a name (a FIFO, a socket, a device, a link
    to /dev/zero) is skipped with a warning on stderr: opening it would block or read forever.

    The walk stays inside the data folder: `inside` (default: `root` itself; a reader
    that scans a class sub-folder passes the data folder) bounds it. A linked folder is
    followed only when it leads to a folder inside that one, each real folder once (no
    loops); links that lead elsewhere (a link to / or to a home folder) are left out with
    a warning. It is a loop, not a recursion, and it is bounded: folders more than
    MAX_DATA_DEPTH levels deep, more than MAX_SCAN_ENTRIES entries or MAX_SCAN_SECONDS of
    looking, or more than `max_files` matching files are a UserError naming the folder,
    refused before any file is read. `max_file_bytes` (one file) and `max_total_bytes` (all
    of them together) are the reader's size caps, checked from the sizes on disk before it
    reads anything; `what` names the files in the messages ("text files")."""
    scan = _DataScan(Path(root), {s.lower() for s in suffixes}, inside, what)
    scan.max_files, scan.max_file_bytes, scan.max_total_bytes = max_files, max_file_bytes, max_total_bytes
    scan.walk()
    scan.warn()
    return sorted(path for path, _ in scan.files)


class _DataScan:
    """One walk of data_files: the folders still to look in, what was found, and what
    was left out (reported in one warning each at the end)."""

    # the reader's caps (data_files' keyword arguments)
    max_files: int = MAX_DATA_FILES
    max_file_bytes: int | None = None
    max_total_bytes: int | None = None

    def __init__(self, top: Path, suffixes: set[str], inside: Any, what: str) -> None:
        self.top, self.suffixes, self.what = top, suffixes, what
        try:
            self.fence = os.path.realpath(inside if inside is not None else top)
        except (OSError, ValueError) as exc:
            raise UserError(f"--data: {_shown(top)} cannot be read ({exc})") from None
        try:
            real_top = os.path.realpath(top)
        except (OSError, ValueError) as exc:
            raise UserError(f"--data: {_shown(top)} cannot be read ({exc})") from None
        if not _within(real_top, self.fence):
            raise UserError(f"--data: {_shown(top)} is a link to {_shown(real_top)}, outside {_shown(self.fence)}; "
                            "Studio reads training data only inside the folder given. Copy the files into it")
        self.began, self.looked, self.total = time.monotonic(), 0, 0
        self.files: list[tuple[Path, int]] = []
        self.outside: list[str] = []  # linked folders that lead outside the fence
        self.skipped: list[str] = []  # files and folders that cannot be read
        self.seen: set[str] = set()  # real folders walked

    def walk(self) -> None:
        pending: list[tuple[Path, int]] = [(self.top, 0)]
        while pending:
            folder, depth = pending.pop()
            entries = self._list(folder)
            for entry in entries or ():
                path = Path(entry.path)
                try:
                    is_link = entry.is_symlink()
                    is_dir = entry.is_dir(follow_symlinks=True)
                except OSError:
                    is_link, is_dir = True, False
                if is_dir:
                    if self._walks_into(path, is_link, depth + 1):
                        pending.append((path, depth + 1))
                elif os.path.splitext(entry.name)[1].lower() in self.suffixes:
                    self._take(path)

    def _list(self, folder: Path) -> list[os.DirEntry] | None:
        """The entries of `folder`, counted against the scan's bounds; None when it was
        walked already (a link back to it) or cannot be read."""
        try:
            real = os.path.realpath(folder)
        except (OSError, ValueError):
            return None
        if real in self.seen:  # a link back to a folder already walked
            return None
        self.seen.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = []
                for entry in listing:
                    self.looked += 1
                    if self.looked > MAX_SCAN_ENTRIES or time.monotonic() - self.began > MAX_SCAN_SECONDS:
                        raise UserError(
                            f"--data {_shown(self.top)}: the folder holds more than Studio looks through (over "
                            f"{min(self.looked, MAX_SCAN_ENTRIES):,} entries or {MAX_SCAN_SECONDS:.0f} s of "
                            "scanning); give a folder that holds only the training data")
                    entries.append(entry)
        except OSError as exc:
            why = exc.strerror or exc
            if folder == self.top:
                raise UserError(f"--data {_shown(self.top)}: the folder cannot be read ({why})") from None
            self.skipped.append(f"{_shown(folder)} (cannot be read: {why})")
            return None
        return entries

    def _walks_into(self, path: Path, is_link: bool, depth: int) -> bool:
        """Whether the walk goes into the folder at `path`: a linked one only when it leads
        inside the fence; one deeper than MAX_DATA_DEPTH is a UserError."""
        if is_link:
            try:
                target = os.path.realpath(path)
            except (OSError, ValueError):
                return False
            if not _within(target, self.fence):
                self.outside.append(f"{_shown(path)} -> {_shown(target)}")
                return False
        if depth > MAX_DATA_DEPTH:
            raise UserError(f"--data {_shown(self.top)}: {_shown(path)} is more than {MAX_DATA_DEPTH} folders "
                            f"deep; data sets are limited to {MAX_DATA_DEPTH} levels of folders")
        return True

    def _take(self, path: Path) -> None:
        """Adds the file at `path` (a matching name) when it is a regular file within the
        reader's size caps."""
        what = self.what
        try:
            info = os.stat(path)  # follows a link to a file: its target's kind and size
        except (OSError, ValueError) as exc:
            self.skipped.append(f"{_shown(path)} (cannot be read: {getattr(exc, 'strerror', None) or exc})")
            return
        if not stat.S_ISREG(info.st_mode):
            print(f"warning: --data: skipped {_shown(path)}: not a regular file", file=sys.stderr)
            return
        if self.max_file_bytes is not None and info.st_size > self.max_file_bytes:
            raise UserError(f"--data: {_shown(path)} is {_size(info.st_size)}; {what} are limited to "
                            f"{_size(self.max_file_bytes)} each. Remove it, or make it smaller")
        self.files.append((path, info.st_size))
        self.total += info.st_size
        if len(self.files) > self.max_files:
            raise UserError(f"--data {_shown(self.top)}: more than {self.max_files:,} {what}; training reads at most "
                            f"{self.max_files:,}. Give a smaller folder (or a sample of it)")
        if self.max_total_bytes is not None and self.total > self.max_total_bytes:
            raise UserError(f"--data {_shown(self.top)}: the {what} add up to more than {_size(self.max_total_bytes)}, "
                            f"the limit for training on them. Give a smaller folder (or a sample of it)")

    def warn(self) -> None:
        """One warning on stderr for the linked folders left out, one for what was skipped."""
        if self.outside:
            more = f" and {len(self.outside) - 1} more" if len(self.outside) > 1 else ""
            print(f"warning: --data: left out linked folders that lead outside {_shown(self.fence)}: "
                  f"{self.outside[0]}{more}", file=sys.stderr)
        if self.skipped:
            more = f" and {len(self.skipped) - 1} more" if len(self.skipped) > 1 else ""
            print(f"warning: --data: skipped {self.skipped[0]}{more}", file=sys.stderr)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _shown(path: Any) -> str:
    return printable(str(path)[-300:])


def _size(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:,.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:,.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:,.0f} KiB"
    return f"{n:,} bytes"


def regular_file_problem(path: Any) -> str | None:
    """Why `path` is not a regular file to open (a FIFO would block the reader), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{str(path)[-300:]} cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(mode):
        return f"{str(path)[-300:]} is not a regular file (a FIFO, device or folder); Studio reads only plain files"
    return None


class FileRefused(Exception):
    """Why open_regular or read_regular did not read a file, for the caller to say in
    its own words: `kind` is NOT_REGULAR (a FIFO, device or folder: `is_dir` tells a
    folder), TOO_LARGE (`size` bytes on disk, over the limit) or GREW (it grew past the
    limit while read)."""

    NOT_REGULAR, TOO_LARGE, GREW = "not a regular file", "too large", "grew while read"

    def __init__(self, kind: str, size: int = 0, is_dir: bool = False) -> None:
        super().__init__(kind)
        self.kind, self.size, self.is_dir = kind, size, is_dir


def open_regular(path: Any, limit: int) -> tuple[Any, int]:
    """(the file at `path` opened for binary reading, its size), when it is a regular
    file of at most `limit` bytes, else FileRefused. It is opened without blocking, so a
    FIFO or a device never hangs the open, and judged by the open file's own status (no
    race with a file swapped in between). OSError (FileNotFoundError among them) as the
    system gives it. The caller closes the file (`with`)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(FileRefused.NOT_REGULAR, st.st_size, stat.S_ISDIR(st.st_mode))
        if st.st_size > limit:
            raise FileRefused(FileRefused.TOO_LARGE, st.st_size)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Any, limit: int) -> bytes:
    """The bytes of `path`, read only if it is a regular file of at most `limit` bytes
    (open_regular), and never more than that: FileRefused GREW when the file grows past
    `limit` while it is read. OSError as the system gives it."""
    f, _ = open_regular(path, limit)
    chunks, total = [], 0
    with f:
        while total <= limit:  # a piece at a time: a large limit is never allocated at once
            block = f.read(min(1 << 20, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
    if total > limit:
        raise FileRefused(FileRefused.GREW, total)
    return b"".join(chunks)


def on_cpu(info: Any) -> bool:
    """Whether a validator runs for a CPU: the host passes the device in the validation
    context ("cpu" or "cuda" at validate time, the run's device at run time). Params
    built directly, without a context, are not weighed against a device."""
    device = (getattr(info, "context", None) or {}).get("device")
    return isinstance(device, str) and device.split(":")[0] == "cpu"


def output_size_problem(width: int, height: int, what: str = "the image") -> str | None:
    """Why an output of width x height pixels is refused, or None."""
    if width > MAX_OUTPUT_SIDE or height > MAX_OUTPUT_SIDE:
        return (f"{what} would be {width:,} x {height:,} pixels; images are limited to {MAX_OUTPUT_SIDE:,} "
                f"pixels a side ({MAX_OUTPUT_SIDE} x {MAX_OUTPUT_SIDE})")
    if width * height > MAX_OUTPUT_PIXELS:
        return (f"{what} would be {width:,} x {height:,} = {width * height / 1e6:,.0f} megapixels; images are "
                f"limited to {MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels (8192 x 8192)")
    return None


def cpu_budget_problem(width: int, height: int, steps: int, limit: int = MAX_CPU_PIXEL_STEPS,
                       example: str = "1024 x 1024 at 50 steps") -> str | None:
    """Why sampling width x height pixels for `steps` steps is refused on a CPU, or None.
    `limit` and `example`: a generator's own, lower budget (text-to-image pipelines)."""
    work = width * height * steps
    if work > limit:
        return (f"{width} x {height} pixels at {steps} steps is too much work for a CPU (width x height x steps "
                f"= {work:,}; the limit on a CPU is {limit:,}, e.g. {example}). "
                "Lower steps or the size, or run on a GPU (device: cuda)")
    return None


def colour_problem(value: str, *, also: tuple[str, ...] = ()) -> str | None:
    """Why `value` is not a colour PIL draws ('#203040', 'navy', 'rgb(10,20,30)'), or None.
    `also`: words the parameter takes besides colours ('seed', 'auto')."""
    from PIL import ImageColor

    if value in also:
        return None
    try:
        ImageColor.getrgb(value)
    except (ValueError, TypeError):
        words = " or ".join(repr(w) for w in also)
        return (f"{value!r} is not a colour; give a name ('navy'), '#rrggbb' ('#203040') or 'rgb(r, g, b)'"
                + (f", or {words}" if words else ""))
    return None


def colour(value: str, *, also: tuple[str, ...] = ()) -> str:
    """`value` when colour_problem finds nothing, else a ValueError saying why: the body
    of a Params field validator for a colour parameter."""
    problem = colour_problem(value, also=also)
    if problem:
        raise ValueError(problem)
    return value


