"""Per-unit record splits: train (shown to the explainer), calibration (picks the best of k
explanations) and test (scores it), disjoint and deterministic.

Disjoint means no *context* is in two splits (a context mined both as a top and as a random
record of the unit counts once), so a test record's text was never shown to the explainer nor used
to choose the explanation.
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict

from ..core.keys import content_hash
from ..core.units import Unit


class SplitSizes(BaseModel):
    n_train: int = 6          # top records shown to the explainer
    n_calib: int = 2          # calibration: n_calib top + n_calib random records
    n_test: int = 5           # test: n_test top + n_test random records


class Splits(BaseModel):
    """Records of one unit, split. calib_* and test_* are 1:1 top:random (shrunk together when
    one kind runs short)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    train: list[Any]
    calib_top: list[Any]
    calib_random: list[Any]
    test_top: list[Any]
    test_random: list[Any]
    spare: list[Any] = []     # quantile records of contexts in no other split (detection/fuzzing)
    sparse: bool = False      # an SAE latent (exactly 0 when off): detection/fuzzing count any act > 0 as active

    @property
    def calibration(self) -> list[Any]:
        return self.calib_top + self.calib_random

    @property
    def test(self) -> list[Any]:
        return self.test_top + self.test_random

    def ctx_sets(self) -> dict[str, set[int]]:
        return {
            "train": {r.ctx_idx for r in self.train},
            "calibration": {r.ctx_idx for r in self.calibration},
            "test": {r.ctx_idx for r in self.test},
            "spare": {r.ctx_idx for r in self.spare},
        }


def _dedupe(records: Sequence) -> list:
    seen: set[int] = set()
    out = []
    for r in records:
        if r.ctx_idx not in seen:
            seen.add(r.ctx_idx)
            out.append(r)
    return out


def split_records(unit: str, top: Sequence, random: Sequence, quantiles: Sequence = (),
                  sizes: SplitSizes | None = None) -> Splits:
    """Split one unit's records.

    Top records (ranked by max activation) are dealt to train/test/calibration in a fixed cycle
    (train, test, train, calibration, ...) so each split gets strong and weaker records rather than
    train taking the strongest; a split whose quota is full is skipped. Test and calibration then
    take as many random records, from contexts no dealt top record uses, in a deterministic
    per-unit order (sorted by a hash of unit and context index); when too few are left, the
    calibration and then the test quota shrink so both stay 1:1. Quantile records of still-unused contexts go to
    `spare`."""
    sizes = sizes or SplitSizes()
    tops = _dedupe(sorted(top, key=lambda r: (-float(r.max_act), r.ctx_idx)))
    rands = _dedupe(sorted(random, key=lambda r: content_hash(unit, r.ctx_idx)))
    # Deal the top records; random records then come from contexts no *dealt* top record uses (on a
    # small corpus every context can be a top record). When too few are left for 1:1, shrink the
    # calibration quota first, then the test quota, and deal again.
    n_test, n_calib = sizes.n_test, sizes.n_calib
    while True:
        dealt = _deal(tops, {"train": sizes.n_train, "test": n_test, "calib": n_calib})
        used = {r.ctx_idx for rs in dealt.values() for r in rs}
        avail = [r for r in rands if r.ctx_idx not in used]
        nt, nc = len(dealt["test"]), len(dealt["calib"])
        if len(avail) >= nt + nc or (nt == 0 and nc == 0):
            break
        if nc > 0:
            n_calib = nc - 1
        else:
            n_test = nt - 1
    test_random = avail[:nt]
    calib_random = avail[nt:nt + nc]
    used |= {r.ctx_idx for r in test_random + calib_random}
    spare = [r for r in _dedupe(quantiles) if r.ctx_idx not in used]
    return Splits(train=dealt["train"], calib_top=dealt["calib"], calib_random=calib_random,
                  test_top=dealt["test"], test_random=test_random, spare=spare, sparse=Unit.is_id(unit)
                  and Unit.parse(unit).record.sparse)


def _deal(tops: list, quota: dict[str, int]) -> dict[str, list]:
    """Top records (strongest first) dealt in the cycle train, test, train, calib, skipping full splits."""
    dealt: dict[str, list] = {k: [] for k in quota}
    cycle = ["train", "test", "train", "calib"]
    i = 0
    for r in tops:
        for j in range(len(cycle)):
            name = cycle[(i + j) % len(cycle)]
            if len(dealt[name]) < quota[name]:
                dealt[name].append(r)
                i = (i + j + 1) % len(cycle)
                break
        else:
            break
    return dealt


def records_hash(records: Sequence) -> str:
    """A content hash of records (context, kind, bin and the activations themselves)."""
    return content_hash([(r.ctx_idx, r.kind, getattr(r, "bin", 0), [round(float(a), 4) for a in r.acts]) for r in records])
