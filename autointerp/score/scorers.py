"""Scorers: each takes an explanation and a unit's records and returns score records.

One protocol, one record. A scorer has `kinds` (the score kinds it returns), `identity()` (what
its stored key must include) and `score(text, splits, unit_max, control=...)`. It never touches
the store; the pipeline keys and stores what it returns.

    simulation   pooled Pearson r of the LLM-simulated vs true activations on the test split
                 (Bills et al. 2023; score.metrics.pooled_correlation), + top-only, random-only
    simulation_exact   the same r from an exact, code-run simulation of the explanation's rule
                 (score.exact); only for explanations that carry a rule (the baseline does)
    detection / fuzzing   balanced accuracy of the judge's yes/no calls (delphi; score.classify)

Every score comes with its **control**: the same scorer on the same records with a mismatched
explanation (score.controls), and the **margin** score - control with a paired bootstrap
interval. For the exact scorer, whose control cannot be a text, the control pairs each record's
simulated values with another record's true values (a circular shift within top and within
random records): what the rule earns without knowing where in a record the unit fires.

A score that carries no information is stored as value None with a `reason`, never as a number:
a judge that answers the same for every item ("constant judge"), a simulation that is constant
("constant simulation"), or one whose output was mostly unparseable ("unparseable").
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import BaseModel

from .classify import classification_score, detection_items, fuzzing_items
from .exact import ExactSimulator, Rule
from .metrics import (auroc, balanced_accuracy, paired_balanced_accuracy_margin, paired_corr_margin, pooled_correlation,
                      simulation_scores)
from .splits import records_hash

MAX_BAD_FRAC = 0.2   # more unparseable values than this fraction: the score is null


class ScoreValue(BaseModel):
    """A score of some kind: its value (None: undefined) with its interval and sample size."""
    kind: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None


class ScoreRecord(ScoreValue):
    scorer: str | None = None
    template_hash: str | None = None
    control: float | None = None          # the control's score on the same records
    margin: float | None = None           # value - control
    margin_low: float | None = None
    margin_high: float | None = None
    reason: str | None = None             # why value is None
    details: Any = None

    @property
    def chance(self) -> bool | None:
        """True when the margin's interval includes 0 (cannot be told from the control)."""
        if self.margin_low is None or self.margin_high is None:
            return None
        return self.margin_low <= 0.0 <= self.margin_high


def _constant(sim: Sequence[Sequence[float]]) -> bool:
    flat = [v for r in sim for v in r]
    return not flat or max(flat) - min(flat) < 1e-9


class SimulationScorer:
    """LLM simulation (or any simulator with .simulate(text, records) -> Simulation)."""

    kinds = ("simulation", "simulation_top", "simulation_random")

    def __init__(self, simulator, *, n_boot: int = 1000, seed: int = 0, max_bad_frac: float = MAX_BAD_FRAC):
        self.simulator = simulator
        self.n_boot, self.seed, self.max_bad_frac = n_boot, seed, max_bad_frac
        self._memo: dict = {}

    def identity(self) -> tuple:
        s = self.simulator
        return ("simulation", s.scorer, s.method, s.template.hash, self.n_boot, self.seed, self.max_bad_frac)

    def simulate(self, text: str, records: Sequence):
        key = (text, records_hash(records))
        if key not in self._memo:
            self._memo[key] = self.simulator.simulate(text, records)
        return self._memo[key]

    def score(self, text: str, splits, unit_max: float, *, control: str | None = None) -> list[ScoreRecord]:
        test = splits.test
        sim = self.simulate(text, test)
        true = [list(map(float, r.acts)) for r in test]
        kinds = ["top"] * len(splits.test_top) + ["random"] * len(splits.test_random)
        n_tok = sum(len(t) for t in true)
        common = dict(scorer=sim.scorer, template_hash=sim.template_hash)
        reason = None
        if n_tok and sim.n_bad > self.max_bad_frac * n_tok:
            reason = f"unparseable: {sim.n_bad} of {n_tok} simulated values could not be read"
        elif _constant(sim.expected):
            reason = "constant simulation: the same value at every token"
        sc = simulation_scores(true, sim.expected, kinds, n_boot=self.n_boot, seed=self.seed)
        details = {
            "definition": "Pearson r of simulated vs true activations, all test tokens pooled",
            "method": sim.method, "n_bad": sim.n_bad, "n_tokens": n_tok,
            "records": [{"ctx_idx": r.ctx_idx, "kind": r.kind, "bin": getattr(r, "bin", 0), "split": k,
                         "tokens": list(r.tokens), "true": t, "simulated": [round(v, 4) for v in e], "r": pr}
                        for r, k, t, e, pr in zip(test, kinds, true, sim.expected, sc["per_record"])],
        }
        ctl = {}
        if control is not None and reason is None:
            csim = self.simulate(control, test)
            c_ok = not _constant(csim.expected) and not (n_tok and csim.n_bad > self.max_bad_frac * n_tok)
            c_val = pooled_correlation(true, csim.expected) if c_ok else 0.0
            m, lo, hi = paired_corr_margin(true, sim.expected, csim.expected, n_boot=self.n_boot, seed=self.seed)
            ctl = {"control": c_val, "margin": m, "margin_low": lo, "margin_high": hi}
            details["control"] = {"text": control, "simulated": [[round(v, 4) for v in e] for e in csim.expected],
                                  "n_bad": csim.n_bad}
        if reason is not None:
            main = ScoreRecord(kind="simulation", value=None, n=len(test), reason=reason, details=details, **common)
        else:
            main = ScoreRecord(kind="simulation", value=sc["all"], ci_low=sc["ci"][0], ci_high=sc["ci"][1], n=len(test),
                               details=details, **common, **ctl)
        nt, nr = len(splits.test_top), len(splits.test_random)
        null = reason is not None
        return [main,
                ScoreRecord(kind="simulation_top", value=None if null else sc["top"], n=nt, reason=reason, **common),
                ScoreRecord(kind="simulation_random", value=None if null else sc["random"], n=nr, reason=reason, **common)]


class ExactScorer:
    """Exact simulation of an explanation's rule (score.exact); returns [] when it has none."""

    kinds = ("simulation_exact",)

    def __init__(self, *, n_boot: int = 1000, seed: int = 0):
        self.simulator = ExactSimulator()
        self.n_boot, self.seed = n_boot, seed

    def identity(self) -> tuple:
        return ("simulation_exact", self.simulator.template.hash, self.n_boot, self.seed)

    def score(self, text: str, splits, unit_max: float, *, control: str | None = None,
              rule: Rule | dict | None = None) -> list[ScoreRecord]:
        test = splits.test
        sim = self.simulator.simulate(text, test, rule=rule)
        if sim is None:
            return []
        true = [list(map(float, r.acts)) for r in test]
        kinds = ["top"] * len(splits.test_top) + ["random"] * len(splits.test_random)
        common = dict(kind="simulation_exact", scorer="exact", template_hash=sim.template_hash, n=len(test))
        details = {"definition": "Pearson r of the rule's 0/10 values vs true activations, all test tokens pooled",
                   "rule": (rule.model_dump(exclude_defaults=True) if isinstance(rule, Rule) else rule)
                   if rule is not None else "read from the text",
                   "simulated": [[int(v) for v in e] for e in sim.expected]}
        if _constant(sim.expected):
            return [ScoreRecord(value=None, reason="constant simulation: the rule fires nowhere (or everywhere) "
                                "on the test records", details=details, **common)]
        sc = simulation_scores(true, sim.expected, kinds, n_boot=self.n_boot, seed=self.seed)
        # control: each record's simulated values against the next record's true values (same kind)
        shifted = list(sim.expected)
        for part in ("top", "random"):
            idx = [i for i, k in enumerate(kinds) if k == part]
            if len(idx) > 1:
                for a, b in zip(idx, idx[1:] + idx[:1]):
                    shifted[a] = sim.expected[b] if len(sim.expected[b]) == len(true[a]) else sim.expected[a]
        c_val = pooled_correlation(true, shifted)
        m, lo, hi = paired_corr_margin(true, sim.expected, shifted, n_boot=self.n_boot, seed=self.seed)
        details["control"] = "each record's simulation paired with the next record's true activations"
        return [ScoreRecord(value=sc["all"], ci_low=sc["ci"][0], ci_high=sc["ci"][1], control=c_val, margin=m,
                            margin_low=lo, margin_high=hi, details=details, **common)]


class ClassificationScorer:
    """Detection or fuzzing (delphi) with a yes/no judge (score.classify.YesNoJudge)."""

    def __init__(self, judge, task: str, *, frac: float = 0.25, n_spare: int = 4, n_boot: int = 1000, seed: int = 0,
                 max_bad_frac: float = MAX_BAD_FRAC):
        self.judge, self.task = judge, task
        self.kinds = (task,)
        self.frac, self.n_spare, self.n_boot, self.seed, self.max_bad_frac = frac, n_spare, n_boot, seed, max_bad_frac
        self._memo: dict = {}

    def identity(self) -> tuple:
        return (self.task, self.judge.scorer, self.judge.template.hash, self.frac, self.n_spare, self.n_boot, self.seed,
                self.max_bad_frac)

    def items(self, splits, unit_max: float):
        pool = splits.test + list(splits.spare[: self.n_spare])
        if self.task == "detection":
            return detection_items(pool, unit_max, frac=self.frac, sparse=splits.sparse)
        return fuzzing_items(pool, unit_max, frac=self.frac, seed=self.seed, sparse=splits.sparse)

    def _p(self, text, items):
        key = (text, tuple((it.ctx_idx, it.label, it.text) for it in items))
        if key not in self._memo:
            self._memo[key] = self.judge.p_yes(text, [it.text for it in items])
        return self._memo[key]

    def score(self, text: str, splits, unit_max: float, *, control: str | None = None) -> list[ScoreRecord]:
        items = self.items(splits, unit_max)
        if not items:
            return []
        p, bad = self._p(text, items)
        sc = classification_score(items, p, n_boot=self.n_boot, seed=self.seed)
        details = {"auroc": sc["auroc"], "n_pos": sc["n_pos"], "n_bad": bad,
                   "active": "act > 0 (sparse latent)" if splits.sparse else f"act >= {self.frac} x unit max",
                   "definition": "balanced accuracy of p(yes) > 0.5 against the labels",
                   "items": [{"ctx_idx": it.ctx_idx, "label": it.label, "p_yes": round(pi, 4), "marked": it.marked}
                             for it, pi in zip(items, p)]}
        common = dict(kind=self.task, n=sc["n"], scorer=self.judge.scorer, template_hash=self.judge.template.hash)
        preds = {pi > 0.5 for pi in p}
        if bad > self.max_bad_frac * len(items):
            return [ScoreRecord(value=None, reason=f"unparseable: {bad} of {len(items)} answers were neither yes nor no",
                                details=details, **common)]
        if len(preds) == 1:
            return [ScoreRecord(value=None, reason=f"constant judge: answered {'yes' if preds.pop() else 'no'} to all "
                                f"{len(items)} items", details=details, **common)]
        ctl = {}
        if control is not None:
            cp, cbad = self._p(control, items)
            c_const = len({pi > 0.5 for pi in cp}) == 1
            c_val = 0.5 if c_const else balanced_accuracy([it.label for it in items], [pi > 0.5 for pi in cp])
            labels = [it.label for it in items]
            m, lo, hi = paired_balanced_accuracy_margin(labels, [pi > 0.5 for pi in p], [pi > 0.5 for pi in cp],
                                                        n_boot=self.n_boot, seed=self.seed)
            ctl = {"control": c_val, "margin": m, "margin_low": lo, "margin_high": hi}
            details["control"] = {"text": control, "p_yes": [round(x, 4) for x in cp], "n_bad": cbad,
                                  "auroc": auroc([it.label for it in items], cp)}
        return [ScoreRecord(value=sc["value"], ci_low=sc["ci"][0], ci_high=sc["ci"][1], details=details, **common, **ctl)]
