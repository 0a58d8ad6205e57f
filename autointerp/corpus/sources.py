"""Text sources: where the corpus text comes from.

A source spec (the `--corpus` flag) is one of:
    gensim             (default, shuffled) gensim-wiki and gensim-news documents together
    gensim-wiki        (offline) the English Wikipedia sample inside gensim's test data:
                       107 articles, redirects dropped, wiki markup removed
    gensim-news        the 300 news articles of gensim's lee_background.cor
    PATH.txt           a text file (one document)
    DIR                every *.txt below a directory (sorted; one document per file)
    PATH.jsonl         JSON lines; the text is the field `text_field` (default "text")
    hf:NAME[:CONFIG][@SPLIT]   a Hugging Face dataset (streamed; needs the `datasets` package)

optionally followed by options, URL-query style: `SPEC?shuffle=SEED&doc_chars=N` (any order;
`buffer=N` for hf), e.g. `gensim?shuffle=0&doc_chars=4000`:
    shuffle=SEED   documents in an order permuted by random.Random(SEED) (gensim*, dir: the
                   document list; jsonl: an index of line offsets, read in permuted order; hf:
                   datasets' streaming shuffle with a buffer of `buffer` rows, default 10000;
                   txt, one document: no effect)
    doc_chars=N    each document is cut to its first N characters (at a word boundary), so one
                   long article cannot fill a small token budget
The options are part of the source's identity (and so of the corpus id); a spec without options
is read in file order, as before. `DEFAULT_CORPUS` is the shuffled, capped mix.

`open_source(spec)` returns a `Source`; `source.pieces()` yields `(text, end_of_document)` pieces
in a fixed order, so the same spec always gives the same text stream. Memory stays flat: long
files and long lines are read and tokenised in bounded pieces; a JSONL line (one JSON document
that must be parsed whole) over MAX_LINE_BYTES is refused with its file:line.
`iter_texts(spec)` yields whole documents.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import os
import random
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.lines import bounded_lines, decode_utf8, json_lines
from ..errors import DatasetError, UsageError

DEFAULT_CORPUS = "gensim?shuffle=0&doc_chars=4000"
GENSIM_SOURCES = ("gensim", "gensim-wiki", "gensim-news")
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_NEWS_FILE = "lee_background.cor"
_PIECE_CHARS = 1 << 16  # plain text files are tokenised in pieces of about this many characters
_CHUNK_CHARS = 1 << 20  # a longer line (txt) or document text (jsonl, hf) is split into pieces of at most this
MAX_LINE_BYTES = 16 << 20  # a JSONL line longer than this is refused
HF_SHUFFLE_BUFFER = 10_000
_OPTIONS = ("shuffle", "buffer", "doc_chars")

Piece = tuple[str, bool]  # (text, this piece ends a document)


@dataclass
class Source:
    spec: str                        # as given (normalised for paths; options in canonical order)
    format: str                      # gensim | gensim-wiki | gensim-news | txt | dir | jsonl | hf
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


def parse_spec(spec: str) -> tuple[str, dict[str, int]]:
    """'BASE?shuffle=0&doc_chars=4000' -> ('BASE', {'shuffle': 0, 'doc_chars': 4000})."""
    base, q, query = spec.rpartition("?")
    if not q or not query or "=" not in query or os.path.exists(spec):
        return spec, {}
    opts: dict[str, int] = {}
    for part in query.split("&"):
        key, eq, val = part.partition("=")
        key = key.strip()
        if key not in _OPTIONS:
            raise UsageError(f"bad corpus {spec!r}: unknown option {key!r} (use {', '.join(_OPTIONS)})")
        try:
            v = int(val)
        except ValueError:
            raise UsageError(f"bad corpus {spec!r}: {key} must be an integer, got {val!r}") from None
        if v < 0 or (key != "shuffle" and v < 1):
            raise UsageError(f"bad corpus {spec!r}: {key} must be {'>= 0' if key == 'shuffle' else '>= 1'}")
        opts[key] = v
    return base, opts


def format_spec(base: str, shuffle: int | None = None, doc_chars: int | None = None, buffer: int | None = None) -> str:
    opts = [f"{k}={v}" for k, v in (("shuffle", shuffle), ("buffer", buffer), ("doc_chars", doc_chars)) if v is not None]
    return base + ("?" + "&".join(opts) if opts else "")


def open_source(spec: str | os.PathLike | None = None, text_field: str = "text", shuffle: int | None = None,
                doc_chars: int | None = None) -> Source:
    """The source named by `spec`; `shuffle`/`doc_chars` (when given) override the spec's options."""
    base, opts = parse_spec(str(spec or DEFAULT_CORPUS))
    if shuffle is not None:
        opts["shuffle"] = int(shuffle)
    if doc_chars is not None:
        if int(doc_chars) < 1:
            raise UsageError("doc_chars must be at least 1")
        opts["doc_chars"] = int(doc_chars)
    seed, cap, buffer = opts.get("shuffle"), opts.get("doc_chars"), opts.get("buffer")
    if buffer is not None and not base.startswith("hf:"):
        raise UsageError(f"bad corpus {spec!r}: buffer= is for hf: datasets only")
    src = _open_base(base, text_field, seed, buffer)
    if src.format == "txt":
        seed = None                        # one document: nothing to permute
    if seed is not None:
        src.identity["shuffle"] = seed
        if src.format == "hf":
            src.identity["buffer"] = buffer or HF_SHUFFLE_BUFFER
    if cap is not None:
        src.identity["doc_chars"] = cap
        inner = src._pieces
        src._pieces = lambda: _cap_docs(inner(), cap)
    src.spec = format_spec(src.spec, seed, cap, buffer if src.format == "hf" and seed is not None else None)
    return src


def _open_base(spec: str, text_field: str, seed: int | None, buffer: int | None) -> Source:
    if spec in GENSIM_SOURCES:
        parts = ["gensim-wiki", "gensim-news"] if spec == "gensim" else [spec]
        ident: dict[str, Any] = {"source": spec, "gensim": _gensim_version()}
        if spec == "gensim":
            ident["parts"] = parts
        if spec != "gensim-news":
            ident["clean"] = 1
        paths = {p: _gensim_file(_WIKI_FILE if p == "gensim-wiki" else _NEWS_FILE) for p in parts}

        def pieces() -> Iterator[Piece]:
            if seed is None:
                for p in parts:
                    yield from (_wiki_pieces(paths[p]) if p == "gensim-wiki" else _news_pieces(paths[p]))
                return
            docs = [d for p in parts for d in (_wiki_docs(paths[p]) if p == "gensim-wiki" else _news_docs(paths[p]))]
            for i in _permutation(len(docs), seed):
                yield docs[i], True

        return Source(spec, spec, ident, pieces)
    if spec.startswith("hf:"):
        return _hf_source(spec, text_field, seed, buffer)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DatasetError(f"corpus directory {path} holds no .txt files")
        ident = {"source": "dir", "path": str(path.resolve()),
                 "files": [[str(p.relative_to(path)), *_stamp(p)] for p in files]}
        order = files if seed is None else [files[i] for i in _permutation(len(files), seed)]
        return Source(str(path), "dir", ident, lambda: (pc for p in order for pc in _txt_pieces(p)))
    if path.is_file():
        if path.suffix.lower() in (".jsonl", ".ndjson") or path.name.lower().endswith((".jsonl.gz",)):
            if seed is not None and path.name.lower().endswith(".gz"):
                raise UsageError(f"corpus {path}: shuffle= needs an uncompressed .jsonl (a gzip file cannot seek)")
            ident = {"source": "jsonl", "path": str(path.resolve()), "stamp": _stamp(path), "field": text_field}
            return Source(str(path), "jsonl", ident, lambda: _jsonl_pieces(path, text_field, seed))
        ident = {"source": "txt", "path": str(path.resolve()), "stamp": _stamp(path)}
        return Source(str(path), "txt", ident, lambda: _txt_pieces(path))
    raise UsageError(
        f"unknown corpus {spec!r}: use gensim, gensim-wiki, gensim-news, a .txt file, a directory of .txt files, "
        "a .jsonl file or hf:DATASET (options: ?shuffle=SEED&doc_chars=N)"
    )


def _permutation(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _cut(text: str, n: int) -> str:
    """The first n characters of text, ending at a word boundary when one is in the second half."""
    if len(text) <= n:
        return text
    head = text[:n]
    if not text[n].isspace():
        m = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
        if m >= n // 2:
            head = head[:m]
    return head.rstrip()


def _cap_docs(pieces: Iterator[Piece], cap: int) -> Iterator[Piece]:
    """Each document cut to its first `cap` characters."""
    used, skipping = 0, False
    for text, end in pieces:
        if skipping:
            if end:
                skipping = False
            continue
        if used + len(text) > cap:
            yield _cut(text, cap - used), True
            used, skipping = 0, not end
            continue
        yield text, end
        used = 0 if end else used + len(text)


def _split_long(text: str, end: bool = True) -> Iterator[Piece]:
    """A document text as pieces of at most about _CHUNK_CHARS characters, cut before whitespace
    (one piece when it is shorter), so the tokeniser never sees a huge string."""
    while len(text) > _CHUNK_CHARS:
        k = _split_point(text, _CHUNK_CHARS)
        yield text[:k], False
        text = text[k:]
    yield text, end


def _split_point(text: str, n: int) -> int:
    """An index <= n to cut text at: before the last whitespace of text[n//2:n], else n."""
    m = max(text.rfind(c, n // 2, n) for c in " \n\t")
    return m if m > 0 else n


# ----------------------------------------------------------------------------- gensim


def _gensim_file(name: str) -> Path:
    try:
        import gensim
    except ImportError:
        raise UsageError("the offline corpora gensim/gensim-wiki/gensim-news need gensim: pip install gensim") from None
    p = Path(gensim.__file__).parent / "test" / "test_data" / name
    if not p.is_file():
        raise DatasetError(f"gensim {gensim.__version__} does not ship {name}; use another --corpus")
    return p


def _gensim_version() -> str:
    try:
        import gensim
    except ImportError:
        raise UsageError("the offline corpora gensim/gensim-wiki/gensim-news need gensim: pip install gensim") from None
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


@functools.lru_cache(maxsize=2)
def _wiki_docs(path: Path) -> tuple[str, ...]:
    """All cleaned articles (about 3 MB; read once per process, for shuffling)."""
    return tuple(t for t, _ in _wiki_pieces(path))


def _news_pieces(path: Path) -> Iterator[Piece]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line, True


def _news_docs(path: Path) -> list[str]:
    return [t for t, _ in _news_pieces(path)]


# ----------------------------------------------------------------------------- files


def _stamp(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def _bounded_lines(f) -> Iterator[str]:
    """The lines of a text file, a line longer than _CHUNK_CHARS as several chunks cut before
    whitespace: nothing longer than about 1.5 x _CHUNK_CHARS is ever held."""
    carry = ""
    while True:
        s = f.readline(_CHUNK_CHARS)
        if not s:
            if carry:
                yield carry
            return
        s, carry = carry + s, ""
        if len(s) >= _CHUNK_CHARS and not s.endswith("\n"):
            k = _split_point(s, len(s))
            s, carry = s[:k], s[k:]
        yield s


def _txt_pieces(path: Path) -> Iterator[Piece]:
    """One document per file, read in pieces that end at a line break (or, inside a very long
    line, before whitespace)."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from None
    with f:
        buf: list[str] = []
        size = 0
        pending: str | None = None
        for line in _bounded_lines(f):
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


def _too_long(path: Path, lineno: int) -> DatasetError:
    return DatasetError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES >> 20} MB; split the document over "
                        "several lines (or use a .txt file, which is read in pieces)")


def _jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) in file order; lines over MAX_LINE_BYTES are refused without being read whole."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, _pos, raw in bounded_lines(f, MAX_LINE_BYTES, lambda n: _too_long(path, n)):
            yield lineno, _decode(raw, path, lineno)


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    return decode_utf8(raw, f"{path}:{lineno}")


def _jsonl_index(path: Path) -> tuple[array, array]:
    """(byte offsets, line numbers) of the non-empty lines: one pass, memory O(lines)."""
    offs, nums = array("q"), array("q")
    with open(path, "rb") as f:
        for lineno, pos, raw in bounded_lines(f, MAX_LINE_BYTES, lambda n: _too_long(path, n)):
            if raw.strip():
                offs.append(pos)
                nums.append(lineno)
    return offs, nums


def _jsonl_shuffled(path: Path, seed: int) -> Iterator[tuple[int, str]]:
    offs, nums = _jsonl_index(path)
    with open(path, "rb") as f:
        for i in _permutation(len(offs), seed):
            f.seek(offs[i])
            yield nums[i], _decode(f.readline(MAX_LINE_BYTES + 1), path, nums[i])


def _jsonl_pieces(path: Path, text_field: str, seed: int | None = None) -> Iterator[Piece]:
    lines = _jsonl_lines(path) if seed is None else _jsonl_shuffled(path, seed)
    for lineno, obj in json_lines(lines, lambda n: f"{path}:{n}"):
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object with a {text_field!r} field, "
                               f"got {type(obj).__name__}")
        if text_field not in obj:
            keys = ", ".join(list(obj)[:8]) or "none"
            raise DatasetError(f"{path}:{lineno}: no {text_field!r} field (fields: {keys}); use --text-field")
        text = obj[text_field]
        if not isinstance(text, str):
            raise DatasetError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
        del obj
        if text.strip():
            yield from _split_long(text)


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


def _hf_source(spec: str, text_field: str, seed: int | None = None, buffer: int | None = None) -> Source:
    name, config, split = _parse_hf(spec)
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UsageError(f"corpus {spec!r} needs the Hugging Face `datasets` package: pip install datasets "
                         "(or use gensim, a .txt/.jsonl file or a directory)") from None

    def pieces() -> Iterator[Piece]:
        import datasets

        try:
            ds = datasets.load_dataset(name, config, split=split, streaming=True)
            if seed is not None:
                ds = ds.shuffle(seed=seed, buffer_size=buffer or HF_SHUFFLE_BUFFER)
        except Exception as e:  # hub unreachable, unknown name, ...
            raise DatasetError(f"cannot load Hugging Face dataset {name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        for i, row in enumerate(ds):
            if text_field not in row:
                raise DatasetError(f"{spec} row {i}: no {text_field!r} field (fields: {', '.join(list(row)[:8])}); use --text-field")
            text = row[text_field]
            if isinstance(text, str) and text.strip():
                yield from _split_long(text)

    return Source(spec, "hf", {"source": "hf", "name": name, "config": config, "split": split, "field": text_field}, pieces)
