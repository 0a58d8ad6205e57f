"""The orchestrator: `autointerp investigate` -- from a task in words to a validated, linked report.

    from autointerp.investigate import investigate, InvestigateSettings
"""

from .api import InvestigateSettings, InvestigationResult, investigate, investigation_id
from .circuit import backup_heads, evaluate_circuit, final_attention
from .prose import check_prose

__all__ = ["investigate", "InvestigateSettings", "InvestigationResult", "investigation_id", "evaluate_circuit",
           "backup_heads", "final_attention", "check_prose"]
