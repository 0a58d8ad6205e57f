"""Head detectors find heads built by hand: a previous-token head (L0/H0) and an induction head (L1/H0)."""

from __future__ import annotations

import torch

from autointerp.models import HookedModel
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
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tinykit import tiny_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer()
    V, NP, H, DH = len(tok), 40, 4, 40
    A, P, Bs = 0, V, V + NP
    D = H * DH
    assert Bs + V <= D
    cfg = GPT2Config(vocab_size=V, n_positions=NP, n_embd=D, n_layer=2, n_head=H, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=2, eos_token_id=1)
    m = GPT2LMHeadModel(cfg).eval()
    s, c = 9.0, 2.0
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for blk in m.transformer.h:
            blk.ln_1.weight.fill_(1.0)
            blk.ln_2.weight.fill_(1.0)
        m.transformer.ln_f.weight.fill_(1.0)
        for t in range(V):
            m.transformer.wte.weight[t, A + t] = s
        for p in range(NP):
            m.transformer.wpe.weight[p, P + p] = s
        # c_attn weight: [D, 3D] (Conv1D: x @ W); head 0 uses columns [0, DH) of each of q, k, v
        W0 = m.transformer.h[0].attn.c_attn.weight
        for p in range(NP - 1):
            W0[P + p, p] = c                    # q: position p -> e_p
            W0[P + p, D + p + 1] = c            # k: position p -> e_{p+1}
        for t in range(V):
            W0[A + t, 2 * D + t] = 1.0          # v: token t -> e_t
            m.transformer.h[0].attn.c_proj.weight[t, Bs + t] = 1.0   # head dim t -> B_t
        W1 = m.transformer.h[1].attn.c_attn.weight
        for t in range(V):
            W1[A + t, t] = c                    # q: current token
            W1[Bs + t, D + t] = c               # k: previous token
            W1[A + t, 2 * D + t] = 1.0
    m.requires_grad_(False)
    return HookedModel(m, tok, spec="hand-induction")


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
