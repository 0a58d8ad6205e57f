"""The explain stage: LLM explanations from train records (best-of-k candidates, checked), and the
non-LLM baseline. Scoring is score/'s job; autointerp.pipeline composes them:

    from autointerp.pipeline import explain_unit, show_unit
"""

from .api import baseline_explanation, check_explanation, write_candidates

__all__ = ["baseline_explanation", "check_explanation", "write_candidates"]
