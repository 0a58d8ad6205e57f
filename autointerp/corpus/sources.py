"""Text sources: where the corpus text comes from.

A source spec (the `--corpus` flag) is one of:
    gensim-wiki        (default, offline) the English Wikipedia sample inside gensim's test data:
                       107 articles, redirects dropped, wiki markup removed
    gensim-news        the 300 news articles of gensim's lee_background.cor
    PATH.txt           a text file (one document)
    DIR                every *.txt below a directory (sorted; one document per file)
    PATH.jsonl         JSON lines; the text is the field `text_field` (default "text")
    hf:NAME[:CONFIG][@SPLIT]   a Hugging Face dataset (streamed; needs the `datasets` package)

`open_source(spec)` returns a `Source`; `source.pieces()` yields `(text, end_of_document)` pieces
in a fixed order, so the same spec always gives the same text stream (long files are read in
pieces so memory stays flat). `iter_texts(spec)` yields whole documents.
"""

from __future__ import annotations

import bz2
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import DatasetError, UsageError

DEFAULT_CORPUS = "gensim-wiki"
GENSIM_SOURCES = ("gensim-wiki", "gensim-news")
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_NEWS_FILE = "lee_background.cor"
_PIECE_CHARS = 1 << 16  # plain text files are tokenised in pieces of about this many characters

Piece = tuple[str, bool]  # (text, this piece ends a document)


@dataclass
class Source:
    spec: str                        # as given (normalised for paths)
    kind: str                        # gensim-wiki | gensim-news | txt | dir | jsonl | hf
    identity: dict[str, Any]         # what determines the text (for the corpus id)
    _pieces: Callable[[], Iterator[Piece]] = field(repr=False)

    def pieces(self) -> Iterator[Piece]:
        return self._pieces()

    def texts(self) -> Iterator[str]:
        buf: list[str] = []
        for text, end in self.pieces():
            buf.append(text)
            if end:
                yield "".join(buf)
                buf = []
        if buf:
            yield "".join(buf)


def iter_texts(spec: str = DEFAULT_CORPUS, text_field: str = "text") -> Iterator[str]:
    """The documents of a source, in order."""
    return open_source(spec, text_field).texts()


def open_source(spec: str | os.PathLike | None = None, text_field: str = "text") -> Source:
    spec = str(spec or DEFAULT_CORPUS)
    if spec == "gensim-wiki":
        path = _gensim_file(_WIKI_FILE)
        return Source(spec, spec, {"source": spec, "gensim": _gensim_version(), "clean": 1}, lambda: _wiki_pieces(path))
    if spec == "gensim-news":
        path = _gensim_file(_NEWS_FILE)
        return Source(spec, spec, {"source": spec, "gensim": _gensim_version()}, lambda: _news_pieces(path))
    if spec.startswith("hf:"):
        return _hf_source(spec, text_field)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DatasetError(f"corpus directory {path} holds no .txt files")
        ident = {"source": "dir", "path": str(path.resolve()),
                 "files": [[str(p.relative_to(path)), *_stamp(p)] for p in files]}
        return Source(str(path), "dir", ident, lambda: (pc for p in files for pc in _txt_pieces(p)))
    if path.is_file():
        if path.suffix.lower() in (".jsonl", ".ndjson") or path.name.lower().endswith((".jsonl.gz",)):
            ident = {"source": "jsonl", "path": str(path.resolve()), "stamp": _stamp(path), "field": text_field}
            return Source(str(path), "jsonl", ident, lambda: _jsonl_pieces(path, text_field))
        ident = {"source": "txt", "path": str(path.resolve()), "stamp": _stamp(path)}
        return Source(str(path), "txt", ident, lambda: _txt_pieces(path))
    raise UsageError(
        f"unknown corpus {spec!r}: use gensim-wiki, gensim-news, a .txt file, a directory of .txt files, "
        "a .jsonl file or hf:DATASET"
    )


# ----------------------------------------------------------------------------- gensim


def _gensim_file(name: str) -> Path:
    try:
        import gensim
    except ImportError:
        raise UsageError("the offline corpora gensim-wiki/gensim-news need gensim: pip install gensim") from None
    p = Path(gensim.__file__).parent / "test" / "test_data" / name
    if not p.is_file():
        raise DatasetError(f"gensim {gensim.__version__} does not ship {name}; use another --corpus")
    return p


def _gensim_version() -> str:
    import gensim

    return gensim.__version__


_TAIL_SECTIONS = re.compile(r"^=+\s*(see also|references|external links|further reading|notes|bibliography|sources|"
                            r"footnotes|citations)\s*=+\s*$", re.I | re.M)
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)


def clean_wiki(text: str) -> str:
    """Plain prose from a wiki page: gensim's filter_wiki, then bold/italic quotes, empty parentheses,
    the trailing reference sections and surplus blank lines removed; headings kept as lines."""
    from gensim.corpora.wikicorpus import filter_wiki

    t = filter_wiki(text)
    m = _TAIL_SECTIONS.search(t)
    if m:
        t = t[: m.start()]
    t = _HEADING.sub(lambda m: m.group(1), t)
    t = t.replace("'''", "").replace("''", "")
    t = re.sub(r"\(\s*(?:[,;:]\s*)+", "(", t)          # "(; , Akhilleus, )" -> "(Akhilleus)"
    t = re.sub(r"(?:\s*[,;:])+\s*\)", ")", t)
    t = re.sub(r"\s?\(\s*\)", "", t)
    t = re.sub(r"[ \t]+\n", "\n", t)
    t = re.sub(r"[ \t]{2,}", " ", t)
    t = re.sub(r"\n{3,}", "\n\n", t)
    return t.strip()


def _wiki_pieces(path: Path) -> Iterator[Piece]:
    from gensim.corpora.wikicorpus import extract_pages

    with bz2.open(path) as f:
        for _title, text, _pageid in extract_pages(f):
            if not text or text.lstrip()[:9].lower() == "#redirect":
                continue
            clean = clean_wiki(text)
            if len(clean) >= 200:  # stubs and disambiguation leftovers
                yield clean, True


def _news_pieces(path: Path) -> Iterator[Piece]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line, True


# ----------------------------------------------------------------------------- files


def _stamp(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def _txt_pieces(path: Path) -> Iterator[Piece]:
    """One document per file, read in pieces that end at a line break."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from None
    with f:
        buf: list[str] = []
        size = 0
        pending: str | None = None
        for line in f:
            buf.append(line)
            size += len(line)
            if size >= _PIECE_CHARS:
                if pending is not None:
                    yield pending, False
                pending, buf, size = "".join(buf), [], 0
        rest = "".join(buf)
        if pending is not None:
            if rest:
                yield pending, False
                yield rest, True
            else:
                yield pending, True
        elif rest.strip():
            yield rest, True


def _jsonl_pieces(path: Path, text_field: str) -> Iterator[Piece]:
    opener = (lambda: __import__("gzip").open(path, "rt", encoding="utf-8")) if path.name.endswith(".gz") else \
        (lambda: open(path, encoding="utf-8"))
    with opener() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object with a {text_field!r} field, "
                                   f"got {type(obj).__name__}")
            if text_field not in obj:
                keys = ", ".join(list(obj)[:8]) or "none"
                raise DatasetError(f"{path}:{lineno}: no {text_field!r} field (fields: {keys}); use --text-field")
            text = obj[text_field]
            if not isinstance(text, str):
                raise DatasetError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
            if text.strip():
                yield text, True


# ----------------------------------------------------------------------------- Hugging Face datasets


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    rest = spec[3:]
    split = "train"
    if "@" in rest:
        rest, split = rest.rsplit("@", 1)
    name, _, config = rest.partition(":")
    if not name:
        raise UsageError(f"bad corpus {spec!r}: use hf:NAME, hf:NAME:CONFIG or hf:NAME:CONFIG@SPLIT")
    return name, config or None, split


def _hf_source(spec: str, text_field: str) -> Source:
    name, config, split = _parse_hf(spec)
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UsageError(f"corpus {spec!r} needs the Hugging Face `datasets` package: pip install datasets "
                         "(or use gensim-wiki, a .txt/.jsonl file or a directory)") from None

    def pieces() -> Iterator[Piece]:
        import datasets

        try:
            ds = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as e:  # hub unreachable, unknown name, ...
            raise DatasetError(f"cannot load Hugging Face dataset {name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        for i, row in enumerate(ds):
            if text_field not in row:
                raise DatasetError(f"{spec} row {i}: no {text_field!r} field (fields: {', '.join(list(row)[:8])}); use --text-field")
            text = row[text_field]
            if isinstance(text, str) and text.strip():
                yield text, True

    return Source(spec, "hf", {"source": "hf", "name": name, "config": config, "split": split, "field": text_field}, pieces)
