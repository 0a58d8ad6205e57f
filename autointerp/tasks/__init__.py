"""Counterfactual datasets: built-in task generators, LLM-written pairs, validation, import/export.

    from autointerp.tasks import make_dataset, import_dataset, export_dataset, PairItem
"""

from .api import builtin_pairs, dataset_hash, export_dataset, get_dataset, import_dataset, make_dataset, resolve_dataset
from .builtin import BUILTIN_TASKS, builtin_name, generate_builtin
from .io import dumps, export_items, read_items
from .items import Dataset, PairItem
from .validate import REASONS, STRUCTURAL, final_logit_diffs, validate_items

__all__ = ["PairItem", "Dataset", "make_dataset", "import_dataset", "export_dataset", "get_dataset", "resolve_dataset",
           "builtin_pairs", "dataset_hash", "BUILTIN_TASKS", "builtin_name", "generate_builtin", "dumps", "export_items",
           "read_items", "REASONS", "STRUCTURAL", "final_logit_diffs", "validate_items"]
