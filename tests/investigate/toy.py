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


def toy_model(noise: float = 0.3, seed: int = 0):
    from tinykit import induction_gpt2

    return induction_gpt2(noise, seed, spec="toy-induction")


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
