"""Scoring math: correlation scores (neuron-explainer), bootstrap intervals, balanced accuracy.

Pure numpy; no model, no store. Every score's definition is written next to its code.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.stats import bootstrap, per_resample

# An LLM's scores are "calibrated" when the lower end of its simulation AUROC's 95% interval on
# planted units (autointerp calibrate) is at least this; below it they are printed as uncalibrated.
CALIBRATED_AUROC_LOW = 0.7


def is_calibrated(auroc_low: float | None) -> bool:
    return auroc_low is not None and auroc_low >= CALIBRATED_AUROC_LOW


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r of two equal-length sequences; None when undefined (fewer than two values, or
    either side constant)."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.shape} vs {b.shape}")
    if a.size < 2:
        return None
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den <= 1e-12 * max(1.0, float(np.abs(a).max() * np.abs(b).max())) or not np.isfinite(den):
        return None
    return float(np.clip((a * b).sum() / den, -1.0, 1.0))


def pooled_correlation(true: Sequence[Sequence[float]], sim: Sequence[Sequence[float]]) -> float:
    """THE simulation score (Bills et al. 2023, neuron-explainer's `score_from_simulation` with
    `correlation_score`): concatenate the true activations of every token of every scored record
    into one vector, the simulated (expected-value) activations into another, and take Pearson's
    correlation of the two. Records are pooled, not averaged, so a record with large true
    activations weighs more than a quiet one, and the score rewards getting the *scale across
    records* right (a random record should be predicted near 0, a top record high).

    Correlation is invariant to affine maps of either side, so raw true activations and 0..10
    simulated values can be compared directly. When either pooled vector is constant (e.g. the
    simulator predicted the same value everywhere) the correlation is undefined and the score is
    0.0: a constant prediction carries no information."""
    if len(true) != len(sim):
        raise ValueError("true and simulated lists differ in length")
    for t, s in zip(true, sim):
        if len(t) != len(s):
            raise ValueError(f"a record has {len(t)} true and {len(s)} simulated activations")
    if not true:
        return 0.0
    r = pearson(np.concatenate([np.asarray(t, float) for t in true]), np.concatenate([np.asarray(s, float) for s in sim]))
    return 0.0 if r is None else r


def per_record_correlations(true, sim) -> list[float | None]:
    """Pearson's r within each record (None where undefined, e.g. a constant record)."""
    return [pearson(t, s) for t, s in zip(true, sim)]


def _suff(true, sim) -> np.ndarray:
    """Per record: (n, sum x, sum y, sum xx, sum yy, sum xy) of true x and simulated y [n_rec, 6]."""
    rows = []
    for t, e in zip(true, sim):
        x = np.asarray(t, np.float64)
        y = np.asarray(e, np.float64)
        rows.append((x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()))
    return np.asarray(rows, np.float64).reshape(-1, 6)


def _r_of(S: np.ndarray) -> np.ndarray:
    """Pooled Pearson r from summed sufficient statistics [..., 6]: NaN where the true side is
    constant (undefined), 0 where only the simulated side is (pooled_correlation's convention)."""
    n, sx, sy, sxx, syy, sxy = np.moveaxis(S, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vx = sxx - sx * sx / n
        vy = syy - sy * sy / n
        cov = sxy - sx * sy / n
        tol_x = 1e-10 * np.maximum(1.0, sxx)
        tol_y = 1e-10 * np.maximum(1.0, syy)
        r = cov / np.sqrt(np.clip(vx, 0, None) * np.clip(vy, 0, None))
    r = np.where(vy <= tol_y, 0.0, r)
    r = np.where(vx <= tol_x, np.nan, r)
    return np.clip(r, -1.0, 1.0)


def _counts(idx: np.ndarray) -> np.ndarray:
    """[n_boot, n] resampling counts from [n_boot, n] resampling indices: row b counts how often
    each record was drawn."""
    n_boot, n = idx.shape
    W = np.zeros((n_boot, n))
    np.add.at(W, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
    return W


def bootstrap_ci(true, sim, *, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float] | tuple[None, None]:
    """A percentile bootstrap (1 - alpha) interval of `pooled_correlation` over *records*: draw
    len(records) records with replacement (numpy Generator seeded with `seed`), recompute the pooled
    correlation, repeat n_boot times, take the alpha/2 and 1 - alpha/2 quantiles. Records, not
    tokens, are resampled because tokens within a record are not independent. (Computed from
    per-record sufficient statistics, so a resample costs one matrix product; a resample whose true
    activations are constant has no correlation and is left out.) (None, None) when no resample
    has one: a degenerate sample has no interval, never [0.00, 0.00]."""
    n = len(true)
    if n == 0:
        return (None, None)
    S = _suff(true, sim)
    return bootstrap(lambda idx: _r_of(_counts(idx) @ S), n, n_boot=n_boot, seed=seed, alpha=alpha)


def paired_corr_margin(true, sim_a, sim_b, *, n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """The margin pooled_r(true, sim_a) - pooled_r(true, sim_b) of two simulations of the SAME
    records, with a paired percentile bootstrap interval (one resample of records for both
    sides). (margin, lo, hi); None when undefined (constant true activations)."""
    n = len(true)
    if n == 0:
        return None, None, None
    Sa, Sb = _suff(true, sim_a), _suff(true, sim_b)
    m = _r_of(Sa.sum(0)) - _r_of(Sb.sum(0))
    if not np.isfinite(m):
        return None, None, None

    def diff(idx):
        W = _counts(idx)
        return _r_of(W @ Sa) - _r_of(W @ Sb)
    return (float(m), *bootstrap(diff, n, n_boot=n_boot, seed=seed, alpha=alpha))


def simulation_scores(true, sim, kinds: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """All correlation scores of one simulation of a test split.

    true/sim: per-record lists of activations; kinds: per-record 'top' or 'random'.
    Returns {'all': r, 'ci': (lo, hi), 'top': r_top, 'random': r_random, 'per_record': [...]},
    'top'/'random' being the pooled correlation on that part alone (None if the part is empty)."""
    kinds = list(kinds)
    out: dict = {"all": pooled_correlation(true, sim), "ci": bootstrap_ci(true, sim, n_boot=n_boot, seed=seed)}
    for part in ("top", "random"):
        idx = [i for i, k in enumerate(kinds) if k == part]
        out[part] = pooled_correlation([true[i] for i in idx], [sim[i] for i in idx]) if idx else None
    out["per_record"] = per_record_correlations(true, sim)
    return out


def balanced_accuracy(labels: Sequence[bool], preds: Sequence[bool]) -> float:
    """(true-positive rate + true-negative rate) / 2, delphi's detection/fuzzing score: 0.5 is
    chance whatever the class balance, 1.0 perfect. With only one class present it is that
    class's rate."""
    y = np.asarray(labels, bool)
    p = np.asarray(preds, bool)
    if y.shape != p.shape:
        raise ValueError("labels and predictions differ in length")
    rates = []
    if y.any():
        rates.append(float((p & y).sum() / y.sum()))
    if (~y).any():
        rates.append(float((~p & ~y).sum() / (~y).sum()))
    return float(np.mean(rates)) if rates else 0.0


def _balanced_accuracy_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """balanced_accuracy of every row of [b, n] labels and predictions at once (the same
    arithmetic, so the same floats: each present class's rate, their mean)."""
    pos = y.sum(axis=1)
    neg = y.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (p & y).sum(axis=1) / pos
        tnr = (~p & ~y).sum(axis=1) / neg
    both = (tpr + tnr) / 2
    return np.where((pos > 0) & (neg > 0), both, np.where(pos > 0, tpr, np.where(neg > 0, tnr, 0.0)))


def bootstrap_balanced_accuracy(labels, preds, *, n_boot: int = 1000, seed: int = 0,
                                alpha: float = 0.05) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of `balanced_accuracy` over items (seeded; all resamples in
    one array: the same draws, in the same order, as one draw of n items per resample); (None,
    None) without items."""
    y = np.asarray(labels, bool)
    p = np.asarray(preds, bool)
    n = len(y)
    if n == 0:
        return (None, None)
    return bootstrap(lambda idx: _balanced_accuracy_rows(y[idx], p[idx]), n, n_boot=n_boot, seed=seed, alpha=alpha)


def paired_balanced_accuracy_margin(labels, preds_a, preds_b, *, n_boot: int = 1000, seed: int = 0,
                                    alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """paired_margin with balanced accuracy as the statistic (detection/fuzzing against their
    control), every resample at once: the same margin and interval as
    paired_margin(stat, ...) gives, without a Python loop over resamples."""
    y = np.asarray(labels, bool)
    a = np.asarray(preds_a, bool)
    b = np.asarray(preds_b, bool)
    n = len(y)
    if n == 0:
        return None, None, None
    m = balanced_accuracy(y, a) - balanced_accuracy(y, b)
    return (float(m), *bootstrap(lambda idx: _balanced_accuracy_rows(y[idx], a[idx]) - _balanced_accuracy_rows(y[idx], b[idx]),
                                 n, n_boot=n_boot, seed=seed, alpha=alpha))


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count half); None with one class only."""
    y = np.asarray(labels, bool)
    s = np.asarray(scores, float)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))


def paired_margin(stat, a: Sequence, b: Sequence, *, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """The margin stat(a) - stat(b) of two scorings of the SAME units (records or items), and its
    paired percentile bootstrap (1 - alpha) interval: one resample of unit indices is applied to
    both sides, so what the two share (the records) cancels. `stat` takes a list of per-unit
    entries and returns a number or None; a resample where either side is None is skipped.
    Returns (margin, lo, hi), all None when the margin itself is undefined."""
    sa, sb = stat(list(a)), stat(list(b))
    if sa is None or sb is None:
        return None, None, None
    def diff(idx):
        x, y = stat([a[i] for i in idx]), stat([b[i] for i in idx])
        return None if x is None or y is None else x - y
    return (float(sa - sb), *bootstrap(per_resample(diff), len(a), n_boot=n_boot, seed=seed, alpha=alpha))


def bootstrap_auroc(labels: Sequence[bool], scores: Sequence[float], groups: Sequence | None = None, *,
                    n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """AUROC of scores (positives: labels True) and its percentile bootstrap interval. With
    `groups` (e.g. the planted unit each score belongs to), whole groups are resampled, since
    the scores of one unit's true explanation and decoys share records."""
    y = np.asarray(labels, bool)
    s = np.asarray(scores, float)
    a = auroc(y, s)
    if a is None or len(np.unique(s)) < 2:     # one class, or one score for all: 0.5 [0.50, 0.50] says nothing
        return None, None, None
    g = np.asarray(groups if groups is not None else range(len(y)))
    uniq = list(dict.fromkeys(g.tolist()))
    members = [np.nonzero(g == u)[0] for u in uniq]

    def of(pick):
        idx = np.concatenate([members[i] for i in pick])
        return auroc(y[idx], s[idx])
    return (a, *bootstrap(per_resample(of), len(uniq), n_boot=n_boot, seed=seed, alpha=alpha))
