"""Small statistics every stage shares (numpy only): ranks, Spearman's rho, and the normalised
logit-difference gap with its one rule for a zero gap.

Zero-gap rule (gap_divisor): a clean-vs-corrupt gap smaller than GAP_EPS = 1e-6 in absolute value
is no gap. Effects are then reported raw (divided by 1) and marked not normalised; a ratio that
has no raw reading (circuit faithfulness) is None.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

GAP_EPS = 1e-6


def gap_divisor(clean: float, corrupt: float) -> tuple[float, bool]:
    """(what to divide an effect by, whether it is normalised): clean - corrupt, or 1.0 when the
    gap is below GAP_EPS (the zero-gap rule above)."""
    g = clean - corrupt
    return (g, True) if abs(g) >= GAP_EPS else (1.0, False)


def normalised(x: float, lo: float, hi: float) -> float | None:
    """(x - lo) / (hi - lo), or None when hi - lo is below GAP_EPS (no gap to measure against)."""
    g, ok = gap_divisor(hi, lo)
    return (x - lo) / g if ok else None


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=float)
    _, inv = np.unique(x, return_inverse=True)
    sums = np.bincount(inv, weights=r)
    counts = np.bincount(inv)
    return (sums / counts)[inv]


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties; pairs with a NaN dropped); None with
    fewer than 3 pairs or when either side is constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def summary(values: Sequence[float | None]) -> dict:
    """n, mean, median, quartiles (linear interpolation, as statistics.quantiles 'inclusive'),
    min and max of the values that are not None; every statistic None when there are none."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    a = np.sort(x)
    if not a.size:
        return {"n": 0, "mean": None, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"n": int(a.size), "mean": float(x.mean()), "median": float(med), "q1": float(q1), "q3": float(q3),
            "min": float(a[0]), "max": float(a[-1])}
