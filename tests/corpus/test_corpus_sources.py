"""Corpus sources and fixed-length contexts."""

from __future__ import annotations

import json

import pytest

from autointerp.corpus import iter_contexts, iter_texts, layout_for, open_source
from autointerp.errors import DatasetError, UsageError

pytest.importorskip("gensim")


def test_gensim_wiki_is_clean_prose():
    docs = list(iter_texts("gensim-wiki"))
    assert 90 <= len(docs) <= 110
    joined = "\n".join(docs)
    for markup in ("#REDIRECT", "'''", "[[", "{{", "==References==", "<ref"):
        assert markup not in joined
    assert "Achilles" in joined


def test_gensim_news():
    docs = list(iter_texts("gensim-news"))
    assert len(docs) == 300 and all(d.strip() for d in docs)


def test_txt_dir_jsonl(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("second file\n")
    (tmp_path / "d" / "a.txt").write_text("first file\nline two\n")
    (tmp_path / "d" / "skip.md").write_text("not text\n")
    assert list(iter_texts(str(tmp_path / "d"))) == ["first file\nline two\n", "second file\n"]
    (tmp_path / "one.txt").write_text("hello\nworld\n")
    assert list(iter_texts(str(tmp_path / "one.txt"))) == ["hello\nworld\n"]
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"body": "alpha"}) + "\n\n" + json.dumps({"body": "beta", "id": 2}) + "\n")
    assert list(iter_texts(str(p), text_field="body")) == ["alpha", "beta"]


def test_big_txt_is_read_in_pieces(tmp_path):
    p = tmp_path / "big.txt"
    lines = [f"line {i} of a long file\n" for i in range(6000)]
    p.write_text("".join(lines))
    pieces = list(open_source(str(p)).pieces())
    assert len(pieces) > 1 and [e for _, e in pieces].count(True) == 1 and pieces[-1][1]
    assert "".join(t for t, _ in pieces) == "".join(lines)


def test_malformed_jsonl_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:3: not valid JSON"):
        list(iter_texts(str(p)))
    p.write_text('{"text": "fine"}\n{"body": "x"}\n')
    with pytest.raises(DatasetError, match=r":2: no 'text' field \(fields: body\)"):
        list(iter_texts(str(p)))


def test_unknown_corpus_and_hf_without_datasets(tmp_path):
    with pytest.raises(UsageError, match="unknown corpus"):
        open_source(str(tmp_path / "nope"))
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="datasets"):
            open_source("hf:wikitext")


def test_contexts_fixed_length_bos_deterministic(tiny_gpt2, tmp_path):
    tok = tiny_gpt2.tokenizer
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"text": "the cat sat on the mat . " * 5}) + "\n" for _ in range(10)))
    lay = layout_for(tok, 16)
    assert lay.bos_id == tok.bos_token_id and lay.first_pos == 1
    ctxs = list(iter_contexts(tok, str(p), 16))
    assert len(ctxs) == (10 * (7 * 5 + 1)) // 15     # 7 words x 5 + a separator per document
    assert all(len(c) == 16 and c[0] == tok.bos_token_id for c in ctxs)
    assert tok.eos_token_id in sum(ctxs, [])          # documents are separated
    assert list(iter_contexts(tok, str(p), 16)) == ctxs
    assert list(iter_contexts(tok, str(p), 16, start=5, limit=3)) == ctxs[5:8]
