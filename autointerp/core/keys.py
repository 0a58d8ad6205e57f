"""Content keys and array packing: how the pipeline names a piece of work by what went into it,
and how float/int vectors are stored as bytes. Shared by every stage (and by store/, which
only persists them)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def content_hash(*parts: Any) -> str:
    """A stable short hash of JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def pack_f16(values) -> bytes:
    return np.asarray(values, dtype="<f2").tobytes()


def unpack_f16(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


def pack_i32(values) -> bytes:
    return np.asarray(values, dtype="<i4").tobytes()


def unpack_i32(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i4")
