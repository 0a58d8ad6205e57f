"""Mining: exemplars and per-unit statistics, streamed (miner.py), read back as typed records
(records.py, which needs no model or tokenizer); trace.py is the storeless first look.

Imports are lazy so that reading records does not import torch/transformers machinery."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "mine": "miner", "parse_layers": "miner", "run_key": "miner", "DEFAULT_TOKENS": "miner",
    "ActivationRecord": "records", "UnitExemplars": "records", "UnitStats": "records", "MiningRun": "records",
    "load_exemplars": "records", "find_run": "records", "get_run": "records",
    "direct_logit_effects": "logits", "neuron_logit_effects": "logits",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'autointerp.mine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)
