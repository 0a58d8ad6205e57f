"""The neutral core every stage may import: content keys and packing, hook names, unit ids.

core imports nothing of the stages (only the standard library, numpy, pydantic and itself; the
error types it raises live in autointerp/errors.py, which is part of this ground and imports
nothing). Anything here must make sense without a model, a store or an LLM.
"""

from .hooks import FINAL_SITES, LAYER_SITES, SAE_SUFFIXES, act_name, canonical, hook_names, is_hook, parse_hook
from .keys import content_hash, pack_f16, pack_i32, unpack_f16, unpack_i32
from .units import UNIT_IN_TEXT_RE, UNIT_RE, Unit, layer_of

__all__ = [
    "FINAL_SITES", "LAYER_SITES", "SAE_SUFFIXES", "UNIT_IN_TEXT_RE", "UNIT_RE", "Unit", "act_name", "canonical",
    "content_hash",
    "hook_names", "is_hook", "layer_of", "pack_f16", "pack_i32", "parse_hook", "unpack_f16", "unpack_i32",
]
