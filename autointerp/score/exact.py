"""Exact simulation: an explanation that carries a machine-readable rule (core.rules) is
simulated by code, with no LLM: 10 where the rule fires, 0 elsewhere.

The baseline's token list is read literally (`rule_from_text`): 10 on a listed token, 0
elsewhere; the part after "often before" names output tokens and is not simulated.

**Score definition.** The exact simulation score is the same pooled Pearson r as the LLM
simulation score (score.metrics.pooled_correlation), computed from the rule's 0/10 values; it is
deterministic, so its interval comes from the same bootstrap over records.
"""

from __future__ import annotations

from typing import Sequence

from ..core.rules import RULE_VERSION, Rule, rule_from_text
from .simulate import Simulation

__all__ = ["ExactSimulator", "Rule", "rule_from_text", "RULE_VERSION"]


class ExactSimulator:
    """Simulates an explanation by its rule (given, or read from the text); None when it has none."""

    method = "exact"
    scorer = "exact"

    class _T:
        hash = RULE_VERSION
        name = "exact"

    template = _T()

    def simulate(self, explanation: str, records: Sequence, rule: Rule | dict | None = None) -> Simulation | None:
        r = Rule.model_validate(rule) if isinstance(rule, dict) else rule or rule_from_text(explanation)
        if r is None:
            return None
        return Simulation(method=self.method, scorer=self.scorer, template_hash=RULE_VERSION,
                          expected=[r.values(rec.tokens) for rec in records])

