"""Records built from the shapes of autointerp.mine.records (no model, no mining)."""

import pytest

try:
    from autointerp.mine.records import ActivationRecord
except ImportError:  # mine/ not landed yet: the same shape
    from pydantic import BaseModel

    class ActivationRecord(BaseModel):
        ctx_idx: int
        kind: str
        bin: int = 0
        tokens: list[str]
        acts: list[float]
        max_act: float


def make_rec(ctx_idx, tokens, acts, kind="top", bin=0):
    return ActivationRecord(ctx_idx=ctx_idx, kind=kind, bin=bin, tokens=list(tokens), acts=[float(a) for a in acts],
                            max_act=float(max(acts)))


@pytest.fixture
def rec():
    return make_rec
