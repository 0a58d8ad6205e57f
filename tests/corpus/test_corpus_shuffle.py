"""Corpus options: document shuffling with a seed, a per-document cap, the gensim mix, the spec
syntax and corpus ids; contexts that know their documents; bounded memory on huge lines."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from autointerp.core.keys import content_hash
from autointerp.corpus import DEFAULT_CORPUS, corpus_id, iter_contexts, iter_texts, layout_for, open_source
from autointerp.corpus.sources import parse_spec
from autointerp.errors import DatasetError, UsageError

from tinykit import tiny_tokenizer

gensim = pytest.importorskip("gensim")


def _jsonl(tmp_path, n=30, name="docs.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps({"text": f"document number {i} ."}) + "\n" + ("\n" if i % 7 == 0 else "")
                         for i in range(n)))
    return p


def test_spec_syntax():
    assert parse_spec("gensim?shuffle=0&doc_chars=4000") == ("gensim", {"shuffle": 0, "doc_chars": 4000})
    assert parse_spec("gensim-wiki") == ("gensim-wiki", {})
    assert open_source("gensim-news?doc_chars=50&shuffle=2").spec == "gensim-news?shuffle=2&doc_chars=50"  # canonical
    assert open_source("gensim-news", shuffle=2, doc_chars=50).spec == "gensim-news?shuffle=2&doc_chars=50"
    for bad, msg in (("gensim?seed=1", "unknown option 'seed'"), ("gensim?shuffle=x", "must be an integer"),
                     ("gensim?doc_chars=0", "doc_chars must be >= 1"), ("gensim?buffer=5", "hf: datasets only")):
        with pytest.raises(UsageError, match=msg):
            open_source(bad)


def test_shuffle_is_deterministic_per_seed_and_a_permutation():
    plain = list(iter_texts("gensim-news"))
    a = list(iter_texts("gensim-news?shuffle=1"))
    assert a == list(iter_texts("gensim-news?shuffle=1"))          # same seed, same order
    b = list(iter_texts("gensim-news?shuffle=2"))
    assert a != b and a != plain                                   # seeds differ, and differ from file order
    assert sorted(a) == sorted(b) == sorted(plain)                 # the same documents


def test_unshuffled_ids_unchanged(tmp_path):
    """A spec without options has exactly the identity (so the corpus id) it had before options existed."""
    tok = tiny_tokenizer()
    lay = layout_for(tok, 16)
    news = open_source("gensim-news")
    assert news.identity == {"source": "gensim-news", "gensim": gensim.__version__}
    assert open_source("gensim-wiki").identity == {"source": "gensim-wiki", "gensim": gensim.__version__, "clean": 1}
    p = _jsonl(tmp_path)
    src = open_source(str(p))
    assert "shuffle" not in src.identity and "doc_chars" not in src.identity
    assert corpus_id(news, "m", lay) == content_hash("corpus-v1", news.identity, "m", 16, lay.bos_id, lay.sep_id)
    ids = {corpus_id(open_source(s), "m", lay) for s in ("gensim-news", "gensim-news?shuffle=0", "gensim-news?shuffle=1",
                                                         "gensim-news?shuffle=0&doc_chars=100")}
    assert len(ids) == 4                                           # every option changes the id


def test_jsonl_and_dir_shuffle(tmp_path):
    p = _jsonl(tmp_path)
    plain = list(iter_texts(str(p)))
    assert plain == [f"document number {i} ." for i in range(30)]
    s1 = list(iter_texts(f"{p}?shuffle=1"))
    assert s1 == list(iter_texts(f"{p}?shuffle=1")) and s1 != plain and sorted(s1) == sorted(plain)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": oops\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:4: not valid JSON"):   # line numbers survive the shuffle
        list(iter_texts(f"{bad}?shuffle=0"))
    d = tmp_path / "d"
    d.mkdir()
    for i in range(12):
        (d / f"{i:02d}.txt").write_text(f"file {i}\n")
    assert list(iter_texts(str(d))) == [f"file {i}\n" for i in range(12)]
    sd = list(iter_texts(f"{d}?shuffle=5"))
    assert sorted(sd) == sorted(iter_texts(str(d))) and sd != list(iter_texts(str(d)))
    one = tmp_path / "one.txt"
    one.write_text("just one document\n")
    assert open_source(f"{one}?shuffle=3").identity == open_source(str(one)).identity   # one document: no effect


def test_doc_chars_caps_each_document_at_a_word():
    full = list(iter_texts("gensim-news"))
    capped = list(iter_texts("gensim-news?doc_chars=200"))
    assert len(capped) == 300 and all(len(t) <= 200 for t in capped)
    assert sum(len(o) > 200 for o in full) > 100
    for t, orig in zip(capped, full):
        assert orig.startswith(t)
        if len(orig) > 200:
            assert orig[len(t)].isspace() and len(t) >= 100       # cut before a space, not inside a word
    long_docs = list(iter_texts("gensim-wiki?doc_chars=1000"))
    assert len(long_docs) == len(list(iter_texts("gensim-wiki"))) and max(map(len, long_docs)) <= 1000


def test_gensim_mix_holds_both():
    mix = list(iter_texts("gensim"))
    assert len(mix) == len(list(iter_texts("gensim-wiki"))) + 300
    assert mix[-300:] == list(iter_texts("gensim-news"))


def test_small_budget_spans_documents():
    """256 contexts of 64 tokens (explain's default budget): the default corpus spans many
    documents, the unshuffled wiki one or two."""
    tok = tiny_tokenizer()

    def n_docs(spec):
        return len({a for _, a, _ in iter_contexts(tok, spec, 64, limit=256, with_docs=True)})

    assert n_docs(DEFAULT_CORPUS) >= 10
    assert n_docs("gensim-wiki") <= 3
    assert n_docs("gensim?shuffle=0&doc_chars=4000") == n_docs(DEFAULT_CORPUS)


def test_contexts_with_docs_match_plain(tmp_path):
    tok = tiny_tokenizer()
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"text": " ".join(["the cat sat"] * (i + 1))}) + "\n" for i in range(12)))
    plain = list(iter_contexts(tok, str(p), 8))
    withd = list(iter_contexts(tok, str(p), 8, with_docs=True))
    assert [c for c, _, _ in withd] == plain
    firsts = [a for _, a, _ in withd]
    assert firsts == sorted(firsts) and firsts[0] == 0 and withd[-1][2] <= 11
    assert all(a <= b for _, a, b in withd)
    # document i has 3(i+1) tokens + a separator; the first context (7 body tokens) spans documents 0 and 1
    assert withd[0][1:] == (0, 1)


_MEM = textwrap.dedent("""
    import resource, sys, time
    sys.path.insert(0, {tests!r})
    from tinykit import tiny_tokenizer
    from autointerp.corpus import iter_contexts
    tok = tiny_tokenizer()
    list(iter_contexts(tok, {warm!r}, 16, limit=2))
    def vm():
        for ln in open("/proc/self/status"):
            if ln.startswith("VmSize:"):
                return int(ln.split()[1]) * 1024
    limit = vm() + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    t = time.time()
    try:
        n = len(list(iter_contexts(tok, {path!r}, 16, limit=4)))
        print("ok", n)
    except Exception as e:
        print("error", type(e).__name__, e)
""")


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_a_50mb_line_stays_in_bounded_memory(tmp_path, kind):
    """A 50 MB single line is not tokenised whole: txt is read in pieces, a JSONL line is refused
    with its file:line (one JSON document must be parsed whole), both within 1 GiB over baseline."""
    import os

    words = ("the cat sat on the mat . " * 8_000).encode()          # ~200 kB
    body = words * 256                                              # ~50 MB, no line break
    path = tmp_path / f"big.{kind}"
    with open(path, "wb") as f:
        if kind == "jsonl":
            f.write(b'{"text": "small first document"}\n{"text": "')
            f.write(body)
            f.write(b'"}\n')
        else:
            f.write(body)
    assert path.stat().st_size > 50_000_000
    warm = tmp_path / "warm.txt"
    warm.write_text("the cat sat on the mat . " * 20)
    tests = os.path.dirname(os.path.abspath(__file__)) + "/.."
    code = _MEM.format(tests=tests, warm=str(warm), path=str(path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    out = r.stdout.strip()
    if kind == "txt":
        assert out == "ok 4", (out, r.stderr[-500:])
    else:
        assert out.startswith("error DatasetError") and "big.jsonl:2: line longer than 16 MB" in out, (out, r.stderr[-500:])
