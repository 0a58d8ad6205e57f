"""A 2-layer GPT-2 with an induction circuit planted in its weights, and a copying task for it.

Residual subspaces: A (token identity), P (position), B (previous token, written by L0/H0).
    L0/H0  previous-token head: attends from p to p-1 and copies that token's A into B.
    L1/H0  induction head: query = current token (A), key = previous token (B); it attends to the
           position right after an earlier occurrence of the current token and writes that
           token's A (which the tied unembedding reads): it predicts the token that followed.
The other heads (L0/H1-3, L1/H1-3) get small random weights (distractors); MLPs are zero.

Task: "w1 w2 ... w8 w_i" -> w_{i+1}; corrupt = the first w_i replaced by a word not in the
prompt (the induction head then has nothing to find); wrong = the token after another word.
The planted circuit is L0/H0 -> L1/H0 (through L1/H0's keys) -> logits.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch


def toy_model(noise: float = 0.3, seed: int = 0):
    from tinykit import tiny_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    from autointerp.models import HookedModel

    tok = tiny_tokenizer()
    V, NP, H, DH = len(tok), 40, 4, 40
    A, P, Bs = 0, V, V + NP
    D = H * DH
    cfg = GPT2Config(vocab_size=V, n_positions=NP, n_embd=D, n_layer=2, n_head=H, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=2, eos_token_id=1)
    m = GPT2LMHeadModel(cfg).eval()
    s, c = 9.0, 2.0
    g = torch.Generator().manual_seed(seed)
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
        W0 = m.transformer.h[0].attn.c_attn.weight          # [D, 3D]: q | k | v, head h = columns [h*DH, (h+1)*DH)
        for p in range(NP - 1):
            W0[P + p, p] = c
            W0[P + p, D + p + 1] = c
        for t in range(V):
            W0[A + t, 2 * D + t] = 1.0
            m.transformer.h[0].attn.c_proj.weight[t, Bs + t] = 1.0
        W1 = m.transformer.h[1].attn.c_attn.weight
        for t in range(V):
            W1[A + t, t] = c
            W1[Bs + t, D + t] = c
            W1[A + t, 2 * D + t] = 1.0
            m.transformer.h[1].attn.c_proj.weight[t, A + t] = 3.0       # write the attended token's identity
        # distractor heads 1..3 of both layers: small random q/k/v/o
        for blk in m.transformer.h:
            for h in range(1, H):
                cols = torch.cat([torch.arange(h * DH, (h + 1) * DH) + o for o in (0, D, 2 * D)])
                blk.attn.c_attn.weight[:, cols] = noise * torch.randn(D, len(cols), generator=g) / D ** 0.5
                blk.attn.c_proj.weight[h * DH:(h + 1) * DH] = noise * torch.randn(DH, D, generator=g) / DH ** 0.5
    m.requires_grad_(False)
    return HookedModel(m, tok, spec="toy-induction")


WORDS = "cat dog sat mat ran park big small red blue house tree mary john went store gave drink".split()


def toy_items(n: int = 24, length: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        ws = rng.sample(WORDS, length + 1)
        seq, spare = ws[:length], ws[length]
        i = rng.randrange(0, length - 1)
        j = rng.choice([k for k in range(length - 1) if k != i])
        clean = seq + [seq[i]]
        corrupt = list(seq)
        corrupt[i] = spare
        corrupt = corrupt + [seq[i]]
        out.append({"clean": " ".join(clean), "corrupt": " ".join(corrupt), "answer": " " + seq[i + 1],
                    "wrong": " " + seq[j + 1]})
    return out


def write_items(path: Path, n: int = 24, seed: int = 0) -> Path:
    path.write_text("".join(json.dumps(it) + "\n" for it in toy_items(n, seed=seed)))
    return path
