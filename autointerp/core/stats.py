"""Small statistics every stage shares (numpy only): the percentile bootstrap, ranks, Spearman's
rho, summary statistics, and the normalised logit-difference gap with its one rule for a zero gap.

Zero-gap rule (gap_divisor): a clean-vs-corrupt gap smaller than GAP_EPS = 1e-6 in absolute value
is no gap. Effects are then reported raw (divided by 1) and marked not normalised; a ratio that
has no raw reading (circuit faithfulness) is None.
"""

from __future__ import annotations

from typing import Callable, Sequence

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


def bootstrap_indices(sizes: int | Sequence[int], n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, sum(sizes)] resampling indices, drawn in one call from a numpy Generator seeded
    with `seed` (the same draws, in the same order, as n_boot successive draws of one resample).
    An int n draws n indices from range(n) with replacement; several sizes are strata: each row
    draws sizes[0] from the first block, then sizes[1] from the next, ..., indices addressing the
    blocks laid end to end (so every resample keeps each stratum's size)."""
    rng = np.random.default_rng(seed)
    if isinstance(sizes, (int, np.integer)):
        return rng.integers(0, sizes, size=(n_boot, sizes))
    sizes = [int(k) for k in sizes]
    high = np.concatenate([np.full(k, k) for k in sizes])
    offset = np.concatenate([np.full(k, o) for k, o in zip(sizes, np.cumsum([0] + sizes[:-1]))])
    return rng.integers(0, high, size=(n_boot, len(high))) + offset


def bootstrap(stat: Callable[[np.ndarray], Sequence[float | None]], sizes: int | Sequence[int], *,
              n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float] | tuple[None, None]:
    """The one percentile bootstrap: (1 - alpha) interval of `stat` over resamples.

    stat takes the [n_boot, n] index matrix of bootstrap_indices(sizes, n_boot, seed) and returns
    one value per resample (a vectorised statistic does all rows at once; per_resample wraps one
    that takes a row). A resample whose value is None or not finite (the statistic is undefined
    there) is left out; (None, None) when none is left: a degenerate sample has no interval, never
    [x, x] from nothing."""
    v = stat(bootstrap_indices(sizes, n_boot, seed))
    vals = np.asarray(v if isinstance(v, np.ndarray) else [np.nan if x is None else x for x in v], dtype=float)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (None, None)
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def per_resample(f: Callable[[np.ndarray], float | None]) -> Callable[[np.ndarray], list[float | None]]:
    """A bootstrap statistic from a function of one resample's indices (a row)."""
    return lambda idx: [f(row) for row in idx]
