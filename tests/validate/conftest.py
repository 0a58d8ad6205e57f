"""A tiny mined store: tiny_gpt2 (tests/conftest.py) mined over a small corpus of the tiny
vocabulary, and helpers to pick a neuron whose top tokens come from mining."""

from __future__ import annotations

import random
from collections import Counter

import pytest


def write_corpus(path, words, n_lines: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = sorted(words)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 16))) for _ in range(n_lines)]
    path.write_text("\n\n".join(lines) + "\n")
    return str(path)


def peak_token_purity(ex) -> tuple[float, str]:
    """(share of top records whose peak token is the most common peak token, that token)."""
    peaks = Counter()
    for r in ex.top:
        i = max(range(len(r.acts)), key=lambda j: r.acts[j])
        peaks[r.tokens[i].strip()] += 1
    tok, c = peaks.most_common(1)[0]
    return c / max(1, len(ex.top)), tok


@pytest.fixture(scope="module")
def mined(tmp_path_factory, tiny_gpt2):
    """(store, hm, run_id) for tiny_gpt2, layer 2 mined on ~6k tokens."""
    from autointerp.mine import mine
    from autointerp.store import Store

    d = tmp_path_factory.mktemp("validate")
    words = [w for w in tiny_gpt2.tokenizer.get_vocab() if not w.startswith("<")]
    corpus = write_corpus(d / "corpus.txt", words)
    store = Store(d / "t.db")
    rid = mine(tiny_gpt2, store, corpus=corpus, n_tokens=6144, context_len=24, layers=[2], top_k=12, n_quantiles=5,
               per_quantile=2, n_random=16, batch_size=32, progress=False)
    return store, tiny_gpt2, rid
