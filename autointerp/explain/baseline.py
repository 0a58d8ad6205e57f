"""The non-LLM baseline explanation: built from the data alone, scored by the same scorers, so
every LLM explanation's score has a reference point."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence


def _display(tok: str) -> str:
    return tok.strip() or repr(tok)


def top_active_tokens(records: Sequence, unit_max: float, *, frac: float = 0.5, n: int = 5) -> list[tuple[str, int]]:
    """The tokens most often active in `records` (act >= frac * unit_max, and each record's peak
    token), compared case-insensitively with surrounding spaces stripped. Ties: the larger
    summed activation first, then alphabetical. Returns [(token, count)]."""
    counts: Counter[str] = Counter()
    mass: dict[str, float] = defaultdict(float)
    shown: dict[str, str] = {}
    for r in records:
        if not r.tokens:
            continue
        peak = max(range(len(r.acts)), key=lambda i: r.acts[i])
        for i, (t, a) in enumerate(zip(r.tokens, r.acts)):
            if i == peak or (unit_max > 0 and a >= frac * unit_max):
                k = _display(t).lower()
                counts[k] += 1
                mass[k] += float(a)
                shown.setdefault(k, _display(t))
    ranked = sorted(counts, key=lambda k: (-counts[k], -mass[k], k))
    return [(shown[k], counts[k]) for k in ranked[:n]]


def _quote_list(words: Sequence[str]) -> str:
    q = [f'"{w}"' for w in words]
    if len(q) <= 1:
        return "".join(q)
    return ", ".join(q[:-1]) + " and " + q[-1]


def baseline_explanation(records: Sequence, unit_max: float, promoted: Sequence = (), *,
                         n_tokens: int = 5, n_promoted: int = 3) -> str:
    """A noun phrase like: the tokens "cat", "dog" and "mouse", often before "food" or "ate".
    records: the train split's top records; promoted: [(token, weight)] most promoted first."""
    toks = [t for t, _ in top_active_tokens(records, unit_max, n=n_tokens)]
    text = f"the tokens {_quote_list(toks)}" if toks else "no particular tokens"
    prom = []
    for p in promoted:
        t = _display(p[0] if isinstance(p, (list, tuple)) else p)
        if t not in prom:
            prom.append(t)
        if len(prom) >= n_promoted:
            break
    if prom:
        text += ", often before " + " or ".join(f'"{t}"' for t in prom)
    return text
