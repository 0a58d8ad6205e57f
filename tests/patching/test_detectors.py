"""Head detectors find heads built by hand: a previous-token head (L0/H0) and an induction head (L1/H0)."""

from __future__ import annotations

from autointerp.patching import detect_heads, role
from autointerp.patching.detectors import repeated_random_tokens
from autointerp.store import Store
from autointerp.patching.api import head_wiki


def induction_model():
    """A 2-layer GPT-2 whose weights implement induction by hand.

    Residual subspaces: A (token identity, one dim per token), P (position, one dim per position),
    B (the previous token's identity, written by L0/H0). L0/H0: query = position p, key = position
    p' + 1, so each position attends to the one before; it copies that token's A into B.
    L1/H0: query = current token (A), key = previous token (B): it attends to the position right
    after an earlier occurrence of the current token -- an induction head. MLPs and other heads are 0.
    """
    from tinykit import induction_gpt2

    return induction_gpt2(noise=0.0, spec="hand-induction")


def test_detectors_find_the_hand_built_heads(tmp_path):
    hm = induction_model()
    ids, offset = repeated_random_tokens(hm, n_seqs=8, seq_len=12, seed=1)
    assert offset == 1 and ids.shape == (8, 25)
    scores = detect_heads(hm, n_seqs=8, seq_len=12, seed=1)
    ind = {u: s["induction"] for u, s in scores.items()}
    prev = {u: s["previous_token"] for u, s in scores.items()}
    assert max(ind, key=ind.get) == "L1/H0" and ind["L1/H0"] > 0.5
    assert max(prev, key=prev.get) == "L0/H0" and prev["L0/H0"] > 0.8
    assert role(scores["L1/H0"]) == "induction"
    assert role(scores["L0/H0"]) == "previous_token"
    # stored once, reused
    store = Store(tmp_path / "s.db")
    w1 = head_wiki(store, hm, n_seqs=8, seq_len=12, seed=1)
    assert store.get_head_scores(hm.spec) == w1
    assert len(w1) == hm.n_layers * hm.n_heads


def test_detectors_on_random_models_are_in_range(tiny):
    scores = detect_heads(tiny, n_seqs=4, seq_len=8)
    assert len(scores) == tiny.n_layers * tiny.n_heads
    for s in scores.values():
        assert all(0.0 <= v <= 1.0 + 1e-6 for v in s.values())
