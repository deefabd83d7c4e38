"""The run folders on disk, below an output folder (OUT/<pipeline>/<run-id>/): finding
them, the `latest` link in each pipeline's folder that points at its newest run,
removing a run's folder without following a link, and the disk a run takes.

Walks of run folders are iterative and bounded, and never follow a link.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

LATEST = "latest"
MANIFEST = "manifest.json"
# the disk size of a run is the sum over its files, walked to this depth and count
MAX_WALK_FILES = 100_000
MAX_WALK_DEPTH = 64


def run_dirs(folder: Path) -> Iterator[Path]:
    """The run folders in one pipeline's folder: `<run-id>/` with a manifest, never the
    hidden ones being built nor the `latest` link."""
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.startswith(".") or entry.name == LATEST or not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        if os.path.isfile(os.path.join(entry.path, MANIFEST)):
            yield Path(entry.path)



def newest_in(folder: Path) -> Path | None:
    """A pipeline folder's newest run (its `latest` link when it names a run in this
    folder, else the last run id), or None."""
    link = folder / LATEST
    try:
        if link.is_symlink():
            target = os.readlink(link)
            if os.sep not in target and target not in ("", ".", "..") and not target.startswith("."):
                run_dir = folder / target
                if run_dir.is_dir() and not run_dir.is_symlink() and (run_dir / MANIFEST).is_file():
                    return Path(os.path.realpath(run_dir))
    except (OSError, ValueError):
        pass
    found = sorted(p for p in run_dirs(folder))
    return found[-1] if found else None



def link_latest(run_dir: Path) -> None:
    """Point the pipeline folder's `latest` at `run_dir` (relative, replaced atomically:
    the link is replaced, never what it points at). Where links cannot be made (some
    Windows and network file systems) there is none."""
    link = run_dir.parent / LATEST
    temporary = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(run_dir.name, temporary)
        os.replace(temporary, link)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass



def is_plain_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False



_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)



def remove_tree(path: Path) -> None:
    """Delete the folder `path` and everything below it, however deep, without
    recursion and without following a link (a link is removed, not what it points at).
    Only one folder is open at a time; going back up, each parent is checked to be the
    folder that was left. Raises OSError when something cannot be removed."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        def scan(fd: int) -> list[str]:
            subfolders = []
            with os.scandir(fd) as listing:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(entry.name)
                    else:
                        try:
                            os.unlink(entry.name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
            return subfolders

        def identity(fd: int) -> tuple[int, int]:
            st = os.fstat(fd)
            return st.st_dev, st.st_ino

        # one level per folder on the way down: (its name in its parent, its identity, what is left in it)
        stack = [("", identity(fd), scan(fd))]
        while stack:
            name, ident, pending = stack[-1]
            if pending:
                child_name = pending.pop()
                try:
                    child = os.open(child_name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError:  # it became a link or a file meanwhile: remove the name itself
                    os.unlink(child_name, dir_fd=fd)
                    continue
                os.close(fd)
                fd = child
                stack.append((child_name, identity(fd), scan(fd)))
                continue
            stack.pop()
            if not stack:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            if identity(fd) != stack[-1][1]:
                raise OSError(f"{path}: a folder below it was moved while it was being removed")
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:  # removed meanwhile by someone else: gone, as asked
        pass



def disk_usage(run_dir: Path) -> tuple[int, int]:
    """(bytes only this run holds, bytes it shares through hard links with the cache or
    other runs), from the blocks its files take. The walk is iterative, never follows a
    link and stops at MAX_WALK_DEPTH folders deep and MAX_WALK_FILES entries (a lower
    bound beyond that)."""
    own = shared = 0
    seen = 0
    stack: list[tuple[str, int]] = [(os.fspath(run_dir), 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_WALK_FILES:
                return own, shared
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 < MAX_WALK_DEPTH:
                    stack.append((entry.path, depth + 1))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            size = st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
            if st.st_nlink > 1:
                shared += size
            else:
                own += size
    return own, shared
