"""Causal validation of explanations: generated probes (new inputs, code-built minimal pairs and
LLM-written texts) and interventions (zero/mean ablation, counterfactual patching) on the hooked
subject model. See api.py; the definitions are in probes.py and intervene.py."""

from .api import KINDS, ExplanationValidation, ValidateSettings, ValidationResult, validate_explanation
from .intervene import InterventionResult, ModeEffect, intervene
from .probes import Probe, ProbeScores, code_probes, llm_probes, parse_explanation, probe_scores, run_probes

__all__ = ["KINDS", "ExplanationValidation", "ValidateSettings", "ValidationResult", "validate_explanation",
           "InterventionResult", "ModeEffect", "intervene", "Probe", "ProbeScores", "code_probes", "llm_probes",
           "parse_explanation", "probe_scores", "run_probes"]
