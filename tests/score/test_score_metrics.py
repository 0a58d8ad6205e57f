"""Scoring math against values computed by hand."""

import math

import numpy as np
import pytest

from autointerp.score.metrics import (auroc, balanced_accuracy, bootstrap_ci, pearson, per_record_correlations,
                                      pooled_correlation, simulation_scores)


def test_pearson_hand_computed():
    # x = 1,2,3 ; y = 1,3,2: means 2,2; dx = -1,0,1; dy = -1,1,0; sum dxdy = 1; |dx|^2 = 2, |dy|^2 = 2 -> r = 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([1], [2]) is None


def test_pooled_is_correlation_of_concatenation_not_mean_of_records():
    true = [[0, 0, 4], [0, 1]]
    sim = [[1, 0, 9], [0, 0]]
    # pooled: x = 0,0,4,0,1 (mean 1), y = 1,0,9,0,0 (mean 2)
    # dx = -1,-1,3,-1,0 ; dy = -1,-2,7,-2,-2 ; sum dxdy = 1+2+21+2+0 = 26
    # |dx|^2 = 1+1+9+1+0 = 12 ; |dy|^2 = 1+4+49+4+4 = 62 -> r = 26/sqrt(744)
    assert pooled_correlation(true, sim) == pytest.approx(26 / math.sqrt(744))
    # the second record alone has a constant simulation: undefined per record
    assert per_record_correlations(true, sim)[1] is None
    assert per_record_correlations(true, sim)[0] == pytest.approx(pearson([0, 0, 4], [1, 0, 9]))


def test_constant_simulation_scores_zero():
    assert pooled_correlation([[1, 2], [3]], [[5, 5], [5]]) == 0.0
    assert pooled_correlation([], []) == 0.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        pooled_correlation([[1, 2]], [[1]])


def test_simulation_scores_parts_and_ci():
    rng = np.random.default_rng(0)
    true = [rng.normal(size=8) for _ in range(6)]
    sim = [t + rng.normal(scale=0.5, size=8) for t in true]
    kinds = ["top"] * 3 + ["random"] * 3
    s = simulation_scores(true, sim, kinds, n_boot=300, seed=1)
    assert s["top"] == pytest.approx(pooled_correlation(true[:3], sim[:3]))
    assert s["random"] == pytest.approx(pooled_correlation(true[3:], sim[3:]))
    lo, hi = s["ci"]
    assert lo <= s["all"] <= hi and hi - lo > 0
    assert bootstrap_ci(true, sim, n_boot=300, seed=1) == s["ci"]  # seeded: reproducible
    assert len(s["per_record"]) == 6


def test_balanced_accuracy_hand_computed():
    # 3 positives, 1 caught: TPR 1/3; 1 negative, correct: TNR 1 -> (1/3 + 1) / 2
    assert balanced_accuracy([1, 1, 1, 0], [1, 0, 0, 0]) == pytest.approx(2 / 3)
    assert balanced_accuracy([1, 1, 0, 0], [1, 1, 1, 1]) == pytest.approx(0.5)  # always-yes is chance
    assert balanced_accuracy([1, 1], [1, 0]) == pytest.approx(0.5)


def test_auroc():
    assert auroc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert auroc([1, 0], [0.5, 0.5]) == 0.5
    assert auroc([1, 1], [0.1, 0.2]) is None


def test_degenerate_samples_have_no_interval():
    """No zero-width interval from a degenerate sample: null instead of [0.00, 0.00] / [0.50, 0.50]."""
    from autointerp.score.metrics import bootstrap_auroc, bootstrap_balanced_accuracy

    assert bootstrap_ci([], []) == (None, None)
    assert bootstrap_ci([[1.0, 1.0, 1.0]], [[0.2, 0.5, 0.1]]) == (None, None)   # constant truth: no r anywhere
    assert bootstrap_balanced_accuracy([], []) == (None, None)
    assert bootstrap_auroc([True, False, True, False], [0.3, 0.3, 0.3, 0.3]) == (None, None, None)
    a, lo, hi = bootstrap_auroc([True, False, True, False], [0.9, 0.1, 0.8, 0.2], n_boot=50)
    assert a == 1.0 and lo is not None


def test_vectorised_balanced_accuracy_bootstraps_equal_the_loops_bit_for_bit():
    """The bootstraps of detection/fuzzing draw every resample in one array (issue 24): the
    interval and the paired margin equal, float for float, the one-resample-at-a-time loops."""
    import numpy as np

    from autointerp.score.metrics import (balanced_accuracy, bootstrap_balanced_accuracy, paired_balanced_accuracy_margin,
                                          paired_margin)

    def loop_ci(y, p, n_boot, seed):
        rng = np.random.default_rng(seed)
        vals = np.empty(n_boot)
        for b in range(n_boot):
            idx = rng.integers(0, len(y), size=len(y))
            vals[b] = balanced_accuracy(y[idx], p[idx])
        lo, hi = np.quantile(vals, [0.025, 0.975])
        return float(lo), float(hi)

    def stat(rows):
        return balanced_accuracy([r[0] for r in rows], [r[1] for r in rows]) if rows else None

    g = np.random.default_rng(7)
    for n in (1, 2, 5, 13, 28):
        for trial in range(4):
            y = g.random(n) < (0.5 if trial else 1.0)          # trial 0: one class only
            a, b = g.random(n) < 0.6, g.random(n) < 0.4
            assert bootstrap_balanced_accuracy(y, a, n_boot=300, seed=trial) == loop_ci(y, a, 300, trial)
            want = paired_margin(stat, list(zip(y, a)), list(zip(y, b)), n_boot=300, seed=trial)
            assert paired_balanced_accuracy_margin(y, a, b, n_boot=300, seed=trial) == want
