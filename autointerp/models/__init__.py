"""Subject models: loading (packaged aliases, GGUF, local dirs, hub ids) and the hooked model."""

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
    "load_model", "packaged_models", "patch_value", "resolve_device", "resolve_dtype", "resolve_spec",
]
