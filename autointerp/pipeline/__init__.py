"""The pipeline: composes the stages (mine -> explain -> score -> store) for one subject (a unit,
or a model diff's side: diff.py runs the compare/ stage first), and the scorer calibration on
planted units. The faces (cli/, batch/, investigate/, the Python API) call this; the stages never
call each other.

    from autointerp.pipeline import explain_unit, show_unit, diff_models
"""
from .diff import DiffResult, DiffSettings, diff_id, diff_models, explain_side
from .mine import MineResult, mine_corpus

from .neuron import (PIPELINE_VERSION, ExplainResult, ExplainSettings, explain_exemplars, explain_unit, find_or_mine,
                     make_llm, show_unit, unit_max_of)

__all__ = ["DiffResult", "DiffSettings", "diff_id", "diff_models", "explain_side", "MineResult", "mine_corpus", "PIPELINE_VERSION", "ExplainResult", "ExplainSettings", "explain_exemplars", "explain_unit", "find_or_mine",
           "make_llm", "show_unit", "unit_max_of"]
