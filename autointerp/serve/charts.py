"""Geometry of the unit page's server-side SVG charts (drawn by templates/charts.html; no script).

- histogram: the unit's activation density, from the mining run's histogram (unit_stats.hist:
  HIST_BINS equal-width bins over [min, max] of every token of a uniform sample of contexts).
  For SAE latents the bar height is log10(1 + count), as SAE-Vis draws a latent's density (most
  tokens are 0, which would flatten every other bar), and the zero bin is marked.
- logit_bars: the tokens the unit promotes (right, orange) and suppresses (left, blue) through
  the unembedding, bar length = |direct logit effect| on one scale."""

from __future__ import annotations

import math

from ..core.palette import NEG_HEX
from .render import fnum

POS_FILL, NEG_FILL, BAR_FILL, ZERO_FILL = "#fb8c00", NEG_HEX, "#607d8b", "#b0bec5"


def _n(x: float) -> float:
    return round(x, 1)


def histogram(hist: dict | None, log: bool = False, frac_active: float | None = None,
              width: int = 420, height: int = 150) -> dict | None:
    """Bars of the activation histogram, or None when the unit has none (not mined, or dead)."""
    if not hist or not hist.get("counts") or not hist.get("edges") or not sum(hist["counts"]):
        return None
    edges, counts = hist["edges"], hist["counts"]
    x0, x1, ytop, y0 = 46.0, width - 24.0, 8.0, height - 30.0
    hval = [math.log10(1 + c) if log else float(c) for c in counts]
    top = max(hval) or 1.0
    bw = (x1 - x0) / len(counts)
    bars = []
    for i, (c, hv) in enumerate(zip(counts, hval)):
        h = (y0 - ytop) * hv / top
        zero = edges[i] <= 0 <= edges[i + 1]
        bars.append({"x": _n(x0 + i * bw + 0.5), "y": _n(y0 - h), "w": _n(max(bw - 1, 0.5)), "h": _n(h), "count": c,
                     "fill": ZERO_FILL if zero and log else BAR_FILL,
                     "tip": f"{edges[i]:.3g} to {edges[i + 1]:.3g}: {c} token(s)"})
    ticks = [{"x": _n(x0), "label": f"{edges[0]:.3g}"}, {"x": _n(x1), "label": f"{edges[-1]:.3g}"}]
    if edges[0] < 0 < edges[-1]:
        zx = x0 + (x1 - x0) * (0 - edges[0]) / (edges[-1] - edges[0])
        if min(zx - x0, x1 - zx) > 24:
            ticks.append({"x": _n(zx), "label": "0"})
    n = int(hist.get("sample_tokens") or sum(counts))
    scale = "log10(1 + count)" if log else "count"
    dens = f"; active on {frac_active:.2%} of all mined tokens" if frac_active is not None else ""
    return {"width": width, "height": height, "x0": x0, "x1": x1, "y0": y0, "ytop": ytop, "bars": bars,
            "xticks": ticks, "ymax_label": f"{max(counts):,}" if not log else f"{max(counts):,}",
            "caption": f"activation density: {n:,} tokens of a uniform sample of contexts, {len(counts)} bins, "
                       f"bar height {scale}{dens}"}


def logit_bars(promoted: list, suppressed: list, k: int = 10, width: int = 420) -> dict | None:
    """Up to k promoted and k suppressed tokens as horizontal bars around a centre line."""
    pro, sup = [(str(t), float(w)) for t, w in promoted[:k]], [(str(t), float(w)) for t, w in suppressed[:k]]
    if not pro and not sup:
        return None
    vmax = max([abs(w) for _, w in pro + sup] + [1e-12])
    row, xmid, half = 15, width / 2, width / 2 - 70
    n = max(len(pro), len(sup))
    bars = []
    for side, items in (("promoted", pro), ("suppressed", sup)):
        for i, (t, w) in enumerate(items):
            ln = half * abs(w) / vmax
            y = 4 + i * row
            label = t if len(t) <= 14 else t[:13] + "…"
            if side == "promoted":
                bars.append({"side": side, "x": _n(xmid), "y": y, "w": _n(ln), "h": row - 3, "fill": POS_FILL,
                             "token": t, "weight": w, "label": label, "tx": _n(xmid + ln + 3), "anchor": "start"})
            else:
                bars.append({"side": side, "x": _n(xmid - ln), "y": y, "w": _n(ln), "h": row - 3, "fill": NEG_FILL,
                             "token": t, "weight": w, "label": label, "tx": _n(xmid - ln - 3), "anchor": "end"})
    return {"width": width, "height": 4 + n * row + 18, "xmid": xmid, "bars": bars,
            "caption": f"direct logit effect through the unembedding (largest |effect| {fnum(vmax, '.3f')}); "
                       f"top {len(pro)} promoted, top {len(sup)} suppressed"}
