"""Head detectors: attention-pattern scores for every head, the "head wiki".

On a batch of sequences [BOS] r r (r = random tokens, length T, repeated once):
    previous_token   mean attention from each position to the one before it
    duplicate_token  mean attention from a second-half position to the same token's first occurrence (q - T)
    induction        mean attention from a second-half position to the token after that first occurrence (q - T + 1)
    first_token      mean attention to position 0 (BOS: the usual "resting" position)
Scores are in [0, 1] (a perfect head scores 1).
"""

from __future__ import annotations

import torch

from ..core.hooks import act_name
from ..core.units import Unit

DETECTORS = ("induction", "previous_token", "duplicate_token", "first_token")


def repeated_random_tokens(hm, n_seqs: int = 16, seq_len: int = 24, seed: int = 0) -> tuple[torch.Tensor, int]:
    """([n_seqs, offset + 2*seq_len] ids, offset) with offset = 1 if a BOS token was prepended."""
    tok = hm.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or [])
    V = hm.vocab_size
    low = min(1000, V // 4)
    pool = torch.tensor([i for i in range(low, min(V, len(tok) if tok is not None else V)) if i not in special])
    g = torch.Generator().manual_seed(seed)
    r = pool[torch.randint(len(pool), (n_seqs, seq_len), generator=g)]
    ids = torch.cat([r, r], dim=1)
    bos = getattr(tok, "bos_token_id", None)
    if bos is not None:
        ids = torch.cat([torch.full((n_seqs, 1), bos), ids], dim=1)
    return ids.to(hm.device), int(bos is not None)


def scores_from_patterns(patterns: dict[int, torch.Tensor], offset: int, T: int) -> dict[str, dict[str, float]]:
    """{unit: {detector: score}} from per-layer patterns [b, H, q, k] of [BOS?] r r sequences."""
    out: dict[str, dict[str, float]] = {}
    q2 = torch.arange(offset + T, offset + 2 * T)          # second-half query positions
    for L, pat in patterns.items():
        pat = pat.float()
        P = pat.shape[-1]
        qs = torch.arange(max(1, offset + 1), P)
        prev = pat[:, :, qs, qs - 1].mean(dim=(0, 2))
        first = pat[:, :, torch.arange(1, P), 0].mean(dim=(0, 2))
        dup = pat[:, :, q2, q2 - T].mean(dim=(0, 2))
        qi = q2[:-1]                                        # the last position's successor is outside the sequence
        ind = pat[:, :, qi, qi - T + 1].mean(dim=(0, 2))
        for h in range(pat.shape[1]):
            out[Unit.head(L, h).id] = {"induction": round(float(ind[h]), 4), "previous_token": round(float(prev[h]), 4),
                                 "duplicate_token": round(float(dup[h]), 4), "first_token": round(float(first[h]), 4)}
    return out


@torch.no_grad()
def detect_heads(hm, *, n_seqs: int = 16, seq_len: int = 24, seed: int = 0, batch_size: int = 8,
                 ids: torch.Tensor | None = None, offset: int | None = None) -> dict[str, dict[str, float]]:
    """Scores of every head for every detector (see module doc). `ids`/`offset` override the sequences."""
    if ids is None:
        ids, offset = repeated_random_tokens(hm, n_seqs, seq_len, seed)
    T = (ids.shape[1] - (offset or 0)) // 2
    names = [act_name("attn.pattern", L) for L in range(hm.n_layers)]
    sums: dict[int, torch.Tensor] = {}
    for s in range(0, ids.shape[0], batch_size):
        chunk = ids[s:s + batch_size]
        run = hm.forward(chunk, torch.ones_like(chunk), cache=names, return_logits=False)
        for L in range(hm.n_layers):
            p = run.cache[names[L]].float().sum(0, keepdim=True)
            sums[L] = p if L not in sums else sums[L] + p
    pats = {L: p / ids.shape[0] for L, p in sums.items()}
    return scores_from_patterns(pats, offset or 0, T)


def role(scores: dict[str, float], threshold: float = 0.4) -> str:
    """The detector a head scores highest on, if above threshold (first_token needs 0.9: most heads rest there)."""
    best, val = max(((d, scores.get(d, 0.0)) for d in DETECTORS if d != "first_token"), key=lambda x: x[1])
    if val >= threshold:
        return best
    if scores.get("first_token", 0.0) >= 0.9:
        return "first_token"
    return ""
