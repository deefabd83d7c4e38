"""Content-addressed cache of finished items.

The key hashes everything that decides an item's outputs: generator name and version,
weights fingerprint, canonical parameters (inputs by content hash), seed, precision and
device kind. An entry is a directory made complete in a temporary place and renamed
into place.

The cache is untrusted input: another program, a crash or a person may have changed
it. An entry is used only when its entry.json is a small JSON object of the expected
shape naming plain files that sit directly inside the entry directory, with the
recorded size, and every file is re-hashed as it is copied out. Anything else is a
damaged entry: a miss, which the next store replaces."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from studio.execute.artifacts import sha256_stream
from studio.generator import Artifact

ENTRY = "entry.json"
MAX_ENTRY_BYTES = 1 << 20  # an entry.json is a few hundred bytes; a huge one is not ours
# A cached file larger than an input Studio would read is not one a step made (it may
# be a damaged file grown sparse to fill the disk it is copied to): a miss.
MAX_FILE_BYTES = 512 << 20
# media types whose content studio.sniff checks; a plugin's own types are checked by hash
SNIFFED = {"image/png", "image/jpeg", "image/webp", "audio/wav", "audio/midi", "text/plain"}
KEY = re.compile(r"[0-9a-f]{64}")
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# A file name inside an entry: no separators, no leading dot (temporary and hidden
# names), nothing that could climb out or be mistaken for a device.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=@+-]{0,254}")


def canonical(value: Any) -> Any:
    """JSON-ready form where inputs count by content, not by path."""
    if isinstance(value, Artifact):
        # labels count: a generator may draw them (image.grid does)
        return {"media_type": value.media_type, "sha256": value.sha256, "labels": canonical(value.labels)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "model_dump"):
        return canonical(dict(value))
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 7 and 7.0 are the same parameter
    return value


def cache_key(parts: dict[str, Any]) -> str:
    text = json.dumps(canonical(parts), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class DamagedEntry(Exception):
    """A cache entry that cannot be trusted; the item is made again."""


@dataclass
class CachedFile:
    port: str
    path: Path
    media_type: str
    sha256: str
    size: int | None = None


@dataclass
class CachedEntry:
    files: list[CachedFile]
    notes: dict[str, Any] = field(default_factory=dict)


class StepCache:
    def __init__(self, root: Path):
        self.root = root

    def _dir(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / key[:2] / key

    def lookup(self, key: str) -> CachedEntry | None:
        """The entry for `key` when it is whole: files present with their recorded sizes.
        Their content is checked by copy_out, as it is read."""
        try:
            return _read_entry(self._dir(key))
        except (DamagedEntry, OSError, ValueError, RecursionError, MemoryError):
            return None

    def touch(self, key: str) -> None:
        """Mark an entry used now (its folder's time): `studio cache gc` removes the least
        recently used first."""
        try:
            os.utime(self._dir(key))
        except OSError:
            pass  # a read-only cache still serves; only its order of removal is older

    def verify(self, f: CachedFile) -> None:
        """Check a cached file before it is copied: see verify_file."""
        verify_file(f)

    def copy_out(self, f: CachedFile, dest: Path) -> None:
        """Put a cached file at `dest`: a hard link to the entry's file where the file
        system allows it (the run takes no more disk), else a copy; hashed either way:
        DamagedEntry when the content is not what the entry recorded. Errors writing
        `dest` are OSErrors."""
        try:
            # the link itself, never what a link in the cache would point to
            os.link(f.path, dest, follow_symlinks=False)
        except OSError:  # another file system, or one without hard links: copy
            pass
        else:
            try:
                with _open_plain(dest) as linked:
                    if sha256_stream(linked) != f.sha256:
                        raise DamagedEntry(f"{f.path.name}: content changed")
            except (DamagedEntry, OSError) as exc:
                dest.unlink(missing_ok=True)
                raise DamagedEntry(str(exc)) from None
            return
        try:
            src = _open_plain(f.path)
        except OSError as exc:
            raise DamagedEntry(str(exc)) from None
        with src, open(dest, "wb") as out:
            h = hashlib.sha256()
            copied = 0
            limit = f.size if f.size is not None else MAX_FILE_BYTES
            while True:
                try:
                    block = src.read(1 << 20)
                except OSError as exc:
                    raise DamagedEntry(str(exc)) from None
                if not block:
                    break
                copied += len(block)
                if copied > limit:  # it grew since it was checked
                    raise DamagedEntry(f"{f.path.name}: larger than recorded")
                h.update(block)
                out.write(block)
        if h.hexdigest() != f.sha256:
            raise DamagedEntry(f"{f.path.name}: content changed")

    def store(self, key: str, artifacts: dict[str, Artifact], notes: dict | None = None) -> None:
        """Store an item's files. An intact entry is left alone (another run stored it);
        a damaged one is replaced. Raises OSError when the cache cannot be written."""
        final = self._dir(key)
        if _intact(final):
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
        try:
            files = {}
            for port, art in artifacts.items():
                try:  # the run's file and the entry share the disk blocks where they can
                    os.link(art.path, tmp / art.path.name, follow_symlinks=False)
                except OSError:
                    shutil.copyfile(art.path, tmp / art.path.name)
                files[port] = {"file": art.path.name, "media_type": art.media_type, "sha256": art.sha256,
                               "size": art.size}
            (tmp / ENTRY).write_text(json.dumps({"files": files, "notes": notes or {}}, indent=2, default=str),
                                     "utf-8")
            _put_in_place(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _put_in_place(new: Path, final: Path) -> None:
    """Rename the complete entry `new` to `final`. Whatever sits at `final` is damaged
    (an intact entry is never replaced): move it aside first, so readers see the old
    entry or the new one, never a mix, and remove it after."""
    aside = None
    if os.path.lexists(final):
        aside = final.with_name(f".damaged-{final.name[:12]}-{secrets.token_hex(4)}")
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            aside = None  # another run removed it meanwhile
    try:
        os.rename(new, final)
    except OSError:
        if not _intact(final):
            raise
        # another run stored the same entry first: theirs is as good as ours
    finally:
        if aside is not None:
            _remove(aside)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _intact(entry_dir: Path) -> bool:
    """The entry is whole and every file has its recorded content."""
    try:
        entry = _read_entry(entry_dir)
        for f in entry.files:
            verify_file(f)  # hash, size and content: a poisoned entry is replaced
    except (DamagedEntry, OSError, ValueError, RecursionError, MemoryError):
        return False
    return True


def verify_file(f: CachedFile) -> None:
    """Check a cached file before it is copied: DamagedEntry unless it is a plain
    file of sane size with the recorded hash (read, never copied) whose content is
    what its media type says and usable (a PNG, not a bomb; UTF-8 text ...). A
    self-consistent but poisoned entry is caught here, not by the next step."""
    try:
        with _open_plain(f.path) as src:
            size = os.fstat(src.fileno()).st_size
            if size > MAX_FILE_BYTES or (f.size is not None and size != f.size):
                raise DamagedEntry(f"{f.path.name}: {size} bytes")
            if sha256_stream(src) != f.sha256:
                raise DamagedEntry(f"{f.path.name}: content changed")
    except OSError as exc:
        raise DamagedEntry(str(exc)) from None
    if f.media_type in SNIFFED and not (f.media_type == "text/plain" and size == 0):
        from studio.sniff import sniff

        found = sniff(f.path)
        # a MIDI without notes or a WAV without frames is what a step may make; the rest is not
        usable = found.ok or found.problem in ("has no notes", "holds no audio (0 frames)")
        if not usable or found.media_type != f.media_type:
            raise DamagedEntry(f"{f.path.name}: {found.problem or 'not ' + f.media_type}")


def _open_plain(path: Path) -> BinaryIO:
    """Open a file for reading only if it is a regular file and not a symbolic link
    (checked on the open file, so it cannot be swapped in between)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DamagedEntry(f"{path.name}: not a plain file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_entry(entry_dir: Path) -> CachedEntry:
    """Parse and check an entry directory; DamagedEntry (or OSError) when it is not one
    Studio wrote."""
    if not stat.S_ISDIR(os.lstat(entry_dir).st_mode):  # a symlink to elsewhere is not an entry
        raise DamagedEntry("not a directory")
    with _open_plain(entry_dir / ENTRY) as f:
        raw = f.read(MAX_ENTRY_BYTES + 1)
    if len(raw) > MAX_ENTRY_BYTES:
        raise DamagedEntry(f"{ENTRY} is larger than {MAX_ENTRY_BYTES} bytes")
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or not data["files"]:
        raise DamagedEntry(f"{ENTRY}: not an entry")
    notes = data.get("notes", {})
    if not isinstance(notes, dict):
        raise DamagedEntry(f"{ENTRY}: notes is not a mapping")
    files = [_checked_file(entry_dir, port, info) for port, info in data["files"].items()]
    if len({f.path.name for f in files}) != len(files):
        raise DamagedEntry(f"{ENTRY}: two ports name the same file")
    return CachedEntry(files, notes)


def _checked_file(entry_dir: Path, port: Any, info: Any) -> CachedFile:
    if not isinstance(port, str) or not port.isidentifier() or not isinstance(info, dict):
        raise DamagedEntry(f"{ENTRY}: bad port {port!r}")
    name, media_type, digest, size = info.get("file"), info.get("media_type"), info.get("sha256"), info.get("size")
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name == ENTRY:
        raise DamagedEntry(f"{ENTRY}: unsafe file name {name!r}")
    if not isinstance(media_type, str) or not 0 < len(media_type) <= 200:
        raise DamagedEntry(f"{ENTRY}: bad media type for {port!r}")
    if not isinstance(digest, str) or not HEX_DIGEST.fullmatch(digest):
        raise DamagedEntry(f"{ENTRY}: bad sha256 for {port!r}")
    if size is not None and (type(size) is not int or size < 0):
        raise DamagedEntry(f"{ENTRY}: bad size for {port!r}")
    if size is not None and size > MAX_FILE_BYTES:
        raise DamagedEntry(f"{ENTRY}: {name!r} is {size} bytes, larger than a step makes")
    path = entry_dir / name
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise DamagedEntry(f"{name}: not a plain file")
    if size is not None and st.st_size != size:
        raise DamagedEntry(f"{name}: {st.st_size} bytes, the entry says {size}")
    return CachedFile(port, path, media_type, digest, size)
