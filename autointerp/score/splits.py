"""Per-unit record splits: train (shown to the explainer), calibration (picks the best of k
explanations) and test (scores it), disjoint and deterministic.

Disjoint means no *context* is in two splits (a context mined both as a top and as a random
record of the unit counts once), so a test record's text was never shown to the explainer nor used
to choose the explanation.
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict

from ..store.base import content_hash


class SplitSizes(BaseModel):
    n_train: int = 8          # top records shown to the explainer
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
    take as many random records, from contexts not already used, in a deterministic per-unit order
    (sorted by a hash of unit and context index). Quantile records of still-unused contexts go to
    `spare`."""
    sizes = sizes or SplitSizes()
    tops = _dedupe(sorted(top, key=lambda r: -float(r.max_act)))
    rands = _dedupe(sorted(random, key=lambda r: content_hash(unit, r.ctx_idx)))
    top_ctx = {r.ctx_idx for r in tops}
    rands = [r for r in rands if r.ctx_idx not in top_ctx]

    # 1:1 top:random for test and calibration: random records cap the top quotas (test first)
    n_test = min(sizes.n_test, len(rands))
    n_calib = min(sizes.n_calib, len(rands) - n_test)
    quota = {"train": sizes.n_train, "test": n_test, "calib": n_calib}
    dealt: dict[str, list] = {"train": [], "test": [], "calib": []}
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
    # if top records ran short, keep 1:1 by trimming the random side to match
    n_test, n_calib = len(dealt["test"]), len(dealt["calib"])
    test_random = rands[:n_test]
    calib_random = rands[n_test:n_test + n_calib]
    used = {r.ctx_idx for rs in dealt.values() for r in rs} | {r.ctx_idx for r in test_random + calib_random}
    spare = [r for r in _dedupe(quantiles) if r.ctx_idx not in used]
    return Splits(train=dealt["train"], calib_top=dealt["calib"], calib_random=calib_random,
                  test_top=dealt["test"], test_random=test_random, spare=spare)


def records_hash(records: Sequence) -> str:
    """A content hash of records (context, kind, bin and the activations themselves)."""
    return content_hash([(r.ctx_idx, r.kind, getattr(r, "bin", 0), [round(float(a), 4) for a in r.acts]) for r in records])
