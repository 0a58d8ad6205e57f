"""Character spans shared by two tokenisations of one text, so models with different tokenizers
can be compared on the same units of text.

A model's log-probability of a piece of text is exact (chain rule) only over whole tokens, so a
span is cut only where *both* tokenizers have a token boundary. Boundaries are compared after
snapping each token's start forward past whitespace: GPT-2/Llama tokens such as " cat" start at
the space, SentencePiece's "▁cat" may report the 'c', and both mean "a word starts here".
Whitespace-only tokens ("\\n\\n") snap onto the next word and so join its span, in both models.

    spans = common_spans("the cat sat.", offs_a, offs_b)
    sums_a = span_sums(spans, offs_a, "the cat sat.", logp_a)

Each span has (start, end) in snapped coordinates and a display text that keeps the leading
whitespace (" cat"), like a GPT-2 token. A token belongs to the span containing its snapped start;
a span's log p is the sum of its tokens' log p (conditioned on the same text before it in both
models). The last span ends where the shorter tokenisation ends, if the other ends a token there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Span:
    start: int          # snapped start (first non-space character)
    end: int            # snapped start of the next span (or the common end of the text covered)
    text: str           # display text: from the whitespace before `start` to the one before `end`


def snap(text: str, i: int) -> int:
    """i moved forward past whitespace (to the first non-space character at or after i)."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


def _ws_start(text: str, i: int, floor: int) -> int:
    """i moved back over the whitespace before it, but not below floor."""
    while i > floor and text[i - 1].isspace():
        i -= 1
    return i


def common_spans(text: str, offs_a: Sequence[tuple[int, int]], offs_b: Sequence[tuple[int, int]]) -> list[Span]:
    """The finest spans whose both ends are token boundaries of both tokenisations (see module doc)."""
    if not offs_a or not offs_b:
        return []
    sa = {snap(text, s) for s, _ in offs_a}
    sb = {snap(text, s) for s, _ in offs_b}
    limit = min(max(e for _, e in offs_a), max(e for _, e in offs_b))
    bounds = sorted(b for b in sa & sb if b < limit)
    if limit in {e for _, e in offs_a} and limit in {e for _, e in offs_b}:   # both tokenisations end a token there
        bounds.append(limit)
    out = []
    for k in range(len(bounds) - 1):
        s, e = bounds[k], bounds[k + 1]
        lo = _ws_start(text, s, bounds[k - 1] if k else 0) if k else 0
        hi = _ws_start(text, e, s)
        out.append(Span(s, e, text[lo:hi] if k else text[:hi]))
    return out


def span_sums(spans: Sequence[Span], offs: Sequence[tuple[int, int]], text: str, values: Sequence[float]) -> list[float]:
    """Per span, the sum of `values` (one per token, e.g. log p) of the tokens whose snapped start
    lies in the span; tokens outside every span are left out."""
    sums = [0.0] * len(spans)
    if not spans:
        return sums
    starts = [sp.start for sp in spans]
    import bisect

    for (s, _), v in zip(offs, values):
        p = snap(text, s)
        k = bisect.bisect_right(starts, p) - 1
        if 0 <= k < len(spans) and p < spans[k].end:
            sums[k] += float(v)
    return sums
