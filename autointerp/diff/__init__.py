"""The model-diff face: `autointerp diff A B` composes the compare/ stage, the explain pipeline
and the store (see api.py). It holds no science: the metrics live in autointerp.compare."""

from .api import DiffResult, DiffSettings, diff_id, diff_models, explain_side

__all__ = ["DiffResult", "DiffSettings", "diff_id", "diff_models", "explain_side"]
