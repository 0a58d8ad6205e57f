"""core/stats.py: the one Spearman, zero-gap rule and summary helper (issue 22)."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest

from autointerp.core.stats import GAP_EPS, gap_divisor, normalised, ranks, spearman, summary


def test_summary_matches_the_statistics_module():
    rng = random.Random(1)
    for n in (1, 2, 3, 7, 50):
        v = [rng.uniform(-1, 1) for _ in range(n)]
        s = summary(v + [None])
        q = statistics.quantiles(v, n=4, method="inclusive") if n > 1 else [v[0]] * 3
        assert s["n"] == n and s["mean"] == pytest.approx(statistics.fmean(v), abs=1e-12)
        assert (s["q1"], s["median"], s["q3"]) == pytest.approx((q[0], statistics.median(v), q[2]), abs=1e-12)
        assert (s["min"], s["max"]) == (min(v), max(v))
    assert summary([None]) == {"n": 0, "mean": None, "median": None, "q1": None, "q3": None, "min": None, "max": None}


def test_spearman_ties_nans_and_degenerate_samples():
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, float("nan"), 4], [1, 2, 0, 4]) == pytest.approx(1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_one_zero_gap_rule():
    assert gap_divisor(3.0, 1.0) == (2.0, True)
    assert gap_divisor(1.0, 1.0 - GAP_EPS / 2) == (1.0, False)       # no gap: raw effects, marked not normalised
    assert normalised(1.5, 1.0, 2.0) == 0.5 and normalised(1.5, 1.0, 1.0) is None
