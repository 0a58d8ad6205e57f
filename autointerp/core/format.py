"""Records shown to an LLM (core: pure, imports no stage): normalisation to 0..10, `token<TAB>activation` lines, highlighting.

Pure functions over records (anything with .tokens, .acts, .max_act, .ctx_idx, .kind: the
ActivationRecord of autointerp.mine.records).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

MAX_NORMALIZED = 10


def normalise(acts: Sequence[float], max_act: float) -> list[int]:
    """Activations as integers 0..10 relative to the unit's max (neuron-explainer's convention):
    round(10 * act / max_act), rounding halves up, negatives -> 0, values above max -> 10.
    A unit whose max is <= 0 (never positive) shows all zeros."""
    if not max_act or max_act <= 0 or not math.isfinite(max_act):
        return [0] * len(acts)
    out = []
    for a in acts:
        a = float(a)
        if not math.isfinite(a) or a <= 0:
            out.append(0)
            continue
        out.append(min(MAX_NORMALIZED, int(math.floor(MAX_NORMALIZED * a / max_act + 0.5))))
    return out


def show_token(tok: str) -> str:
    """A token made safe for one `token<TAB>value` line: newlines, tabs and carriage returns are
    escaped so a record stays one line per token."""
    return tok.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") or "<empty>"


def window(tokens: Sequence[str], acts: Sequence[float], size: int | None, *, before_frac: float = 0.75) -> tuple[int, int]:
    """The [start, end) token span of at most `size` tokens around the record's max activation,
    most of it before the max (context a causal LM saw). size None or >= len: the whole record."""
    n = len(tokens)
    if size is None or size >= n:
        return 0, n
    peak = max(range(n), key=lambda i: acts[i])
    start = max(0, min(peak - int(size * before_frac), n - size))
    return start, start + size


def format_record(tokens: Sequence[str], values: Sequence[int | str]) -> str:
    """`token<TAB>value` lines, one per token (values already normalised, or 'unknown')."""
    return "\n".join(f"{show_token(t)}\t{v}" for t, v in zip(tokens, values))


def format_records(records: Iterable, max_act: float, *, window_size: int | None = None,
                   start: str = "<start>", end: str = "<end>") -> str:
    """Records for the explainer: each between <start>/<end> lines, activations normalised by the
    unit's max, each cut to `window_size` tokens around its peak."""
    blocks = []
    for r in records:
        s, e = window(r.tokens, r.acts, window_size)
        vals = normalise(r.acts[s:e], max_act)
        blocks.append(f"{start}\n{format_record(r.tokens[s:e], vals)}\n{end}")
    return "\n".join(blocks)


def nonzero_summary(records: Iterable, max_act: float, *, window_size: int | None = None) -> str:
    """neuron-explainer's second listing: only the (token, value) pairs with value > 0, so the
    explainer sees the active tokens without the zeros."""
    lines = []
    for r in records:
        s, e = window(r.tokens, r.acts, window_size)
        for t, v in zip(r.tokens[s:e], normalise(r.acts[s:e], max_act)):
            if v > 0:
                lines.append(f"{show_token(t)}\t{v}")
    return "\n".join(lines)


def highlight(tokens: Sequence[str], marked: Iterable[int], left: str = "<<", right: str = ">>") -> str:
    """The record's text with the marked token positions wrapped in << >> (adjacent marked tokens
    share one pair), delphi's fuzzing/detection display."""
    marked = set(marked)
    out, inside = [], False
    for i, t in enumerate(tokens):
        if i in marked and not inside:
            # put the opening mark after leading whitespace so the token itself is wrapped
            stripped = t.lstrip(" ")
            out.append(t[: len(t) - len(stripped)] + left + stripped)
            inside = True
        elif i not in marked and inside:
            out.append(right + t)
            inside = False
        else:
            out.append(t)
    if inside:
        out.append(right)
    return "".join(out)


def unit_max_of(ex) -> float:
    """A unit's max activation over the mined corpus (its stats), else over its records: the
    scale every 0..10 normalisation and every active threshold uses."""
    st = ex.stats
    get = (lambda k: st.get(k)) if isinstance(st, dict) else (lambda k: getattr(st, k, None))
    m = (get("max_act") or get("max")) if st is not None else None
    if m is None or m <= 0:
        recs = list(ex.top or []) + list(ex.quantiles or []) + list(ex.random or [])
        m = max((float(r.max_act) for r in recs), default=0.0)
    return float(m)
