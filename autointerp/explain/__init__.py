"""Explain units: prompts from records, best-of-k, the non-LLM baseline; explain_unit/show_unit.

    from autointerp.explain import explain_unit, show_unit
"""

from .api import ExplainResult, ExplainSettings, explain_exemplars, explain_unit, show_unit

__all__ = ["explain_unit", "show_unit", "explain_exemplars", "ExplainResult", "ExplainSettings"]
