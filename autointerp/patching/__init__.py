"""Patching on the hooked model: activation (batched), attribution, path patching, direct logit
attribution, head detectors, circuit tests (faithfulness, completeness, backup heads).
Metric and normalisation: see core.py.

    from autointerp.patching import patch, activation_patching, attribution_patching, path_patching
"""

from .activation import activation_patching
from .api import METHODS, PatchReport, head_wiki, patch, patch_report
from .attribution import attribution_patching, rank_correlation
from .circuit import backup_heads, evaluate_circuit, final_attention
from .core import DIRECTIONS, WHATS, Component, PatchResult, component_named, components_for, components_named
from .detectors import DETECTORS, detect_heads, role
from .dla import direct_logit_attribution
from .edge_search import Circuit, acdc, auto_circuit_json, find_circuit, prune_to_target
from .edges import EdgeGraph, EdgeScores, circuit_logit_diff, eap_scores, exact_edge_scores
from .path import path_patching

__all__ = ["patch", "patch_report", "PatchReport", "head_wiki", "activation_patching", "attribution_patching", "path_patching",
           "direct_logit_attribution", "detect_heads", "rank_correlation", "role", "PatchResult", "Component",
           "components_for", "component_named", "components_named", "evaluate_circuit", "backup_heads",
           "final_attention", "METHODS", "WHATS", "DIRECTIONS", "DETECTORS", "EdgeGraph", "EdgeScores", "eap_scores",
           "exact_edge_scores", "circuit_logit_diff", "find_circuit", "prune_to_target", "acdc", "auto_circuit_json",
           "Circuit"]
