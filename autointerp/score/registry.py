"""The scorers, registered by name: every list of scorers (the pipeline, calibrate, the CLI's
--scorers, the batch plan and estimate, the printed labels) reads SCORERS.

A scorer is one `register_scorer(ScorerSpec(...))`: its name (as --scorers takes it), the score
kinds it writes (the first is its headline kind), a label per kind, the prompt templates it may
load, the unit kinds it applies to (None: all), and a factory building the scorer object
(score/scorers.py's protocol: kinds, identity(), score(text, splits, unit_max, control=...)).
tests/dummy_scorer.py adds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UsageError


@dataclass(frozen=True)
class ScorerSpec:
    name: str                                   # --scorers NAME
    kinds: tuple[str, ...]                      # score kinds it writes; kinds[0] is its headline score
    labels: dict[str, str]                      # kind -> the label printed before its score line
    factory: Callable[..., Any]                 # factory(llm, opts) -> scorer; opts: n_boot, seed, simulator, ...
    templates: tuple[str, ...] = ()             # prompt templates it may load (batch job keys hash them)
    unit_kinds: frozenset[str] | None = None    # UnitKind names it applies to; None: every kind
    needs_llm: bool = True                      # an LLM scorer: skipped without an LLM, its AUROC is calibrated
    usage: str | None = None                    # the batch estimate's group for its LLM calls (simulate, judge)
    rule: bool = False                          # score() takes the explanation's rule (exact simulation)
    default: bool = True                        # in the default --scorers
    meta: dict = field(default_factory=dict)

    def applies_to(self, kind: str | None) -> bool:
        return kind is None or self.unit_kinds is None or kind in self.unit_kinds

    def headline(self, records):
        """Its headline score among the score records it wrote (kinds[0]), or None."""
        return next((r for r in records if r.kind in self.kinds[:1]), None)

    def build(self, llm, opts):
        """The scorer object, or None when it needs an LLM and there is none."""
        if self.needs_llm and llm is None:
            return None
        return self.factory(llm, opts)


SCORERS: dict[str, ScorerSpec] = {}


def register_scorer(spec: ScorerSpec) -> ScorerSpec:
    SCORERS[spec.name] = spec
    return spec


def scorer_names() -> tuple[str, ...]:
    return tuple(SCORERS)


def default_scorers() -> tuple[str, ...]:
    return tuple(n for n, s in SCORERS.items() if s.default)


def check_scorers(names) -> None:
    """One UsageError line for an unknown scorer name."""
    bad = [s for s in names if s not in SCORERS]
    if bad:
        raise UsageError(f"--scorers: unknown scorer {bad[0]!r}: use {', '.join(SCORERS)}")


def score_labels() -> dict[str, str]:
    """kind -> label of every registered scorer's kinds, in registry order."""
    return {k: v for s in SCORERS.values() for k, v in s.labels.items()}


def llm_score_kinds() -> dict[str, str]:
    """headline kind -> scorer name of the LLM scorers (those a calibration and a chance line speak of)."""
    return {s.kinds[0]: s.name for s in SCORERS.values() if s.needs_llm}


def scorer_of(kind: str) -> ScorerSpec | None:
    """The registered scorer that writes this score kind (None: a kind no scorer writes, e.g.
    validate's probe_auc)."""
    return next((s for s in SCORERS.values() if kind in s.kinds), None)


def headline_kinds() -> tuple[str, ...]:
    return tuple(s.kinds[0] for s in SCORERS.values())


def all_templates() -> tuple[str, ...]:
    return tuple(t for s in SCORERS.values() for t in s.templates)


# ---- the built-in scorers ------------------------------------------------------------------------
def _simulation(llm, opts):
    from .scorers import SimulationScorer
    from .simulate import get_simulator

    return SimulationScorer(get_simulator(llm, getattr(opts, "simulator", "auto")), n_boot=opts.n_boot, seed=opts.seed)


def _exact(llm, opts):
    from .scorers import ExactScorer

    return ExactScorer(n_boot=opts.n_boot, seed=opts.seed)


def _classification(task: str):
    def factory(llm, opts):
        from .classify import YesNoJudge
        from .scorers import ClassificationScorer

        return ClassificationScorer(YesNoJudge(llm, task), task, frac=getattr(opts, "active_frac", 0.25),
                                    n_spare=opts.n_spare, n_boot=opts.n_boot, seed=opts.seed)
    return factory


register_scorer(ScorerSpec(
    "simulation", ("simulation", "simulation_top", "simulation_random"),
    {"simulation": "simulation r", "simulation_top": "  top-only r", "simulation_random": "  random-only r"},
    _simulation, templates=("simulate_all_at_once", "simulate_json"), usage="simulate"))
register_scorer(ScorerSpec(
    "exact", ("simulation_exact",), {"simulation_exact": "exact sim. r"}, _exact, needs_llm=False, rule=True))
register_scorer(ScorerSpec(
    "detection", ("detection",), {"detection": "detection bal.acc"}, _classification("detection"),
    templates=("detection", "detection_chat"), usage="judge"))
register_scorer(ScorerSpec(
    "fuzzing", ("fuzzing",), {"fuzzing": "fuzzing bal.acc"}, _classification("fuzzing"),
    templates=("fuzzing", "fuzzing_chat"), usage="judge"))
