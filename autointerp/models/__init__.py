"""Subject models: loading (packaged aliases, GGUF, local dirs, hub ids) and the hooked model."""

from .adapters import decoder_of, final_logit_softcap_of, max_context_of, norm_kind_of, softcap
from .hooked import LAYER_POINTS, HookedModel, Run, SliceHook, ablate, patch_value
from .loader import (
    DEFAULT_MODEL,
    PACKAGED,
    ResolvedSpec,
    load_model,
    packaged_models,
    resolve_device,
    resolve_dtype,
    resolve_spec,
)

__all__ = [
    "DEFAULT_MODEL", "PACKAGED", "LAYER_POINTS", "HookedModel", "ResolvedSpec", "Run", "SliceHook", "ablate",
    "decoder_of", "final_logit_softcap_of", "load_model", "max_context_of", "norm_kind_of", "packaged_models",
    "patch_value", "resolve_device", "resolve_dtype", "resolve_spec", "softcap",
]
