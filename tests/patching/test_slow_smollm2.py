"""The real packaged SmolLM2-135M: built-in IOI validated, acceptance counts add up, head patching runs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from autointerp.errors import ModelSpecError
    from autointerp.models.hooked import HookedModel

    try:
        return HookedModel.load("smollm2-135m", device="cpu", progress=False)
    except ModelSpecError as e:
        pytest.skip(f"SmolLM2 not installed: {e}")


def test_ioi_on_smollm2(smollm2, tmp_path):
    from autointerp.patching import patch
    from autointerp.store import Store
    from autointerp.tasks import make_dataset

    store = Store(tmp_path / "s.db")
    ds = make_dataset(store, smollm2, "ioi", n=16, margin=1.0)
    st = ds.stats
    assert st["candidates"] == st["accepted"] + sum(st["rejected"].values())
    assert st["kept"] == ds.n_items and ds.n_items >= 8            # SmolLM2 does IOI on most items
    assert all(it.clean_logit_diff > 0 and it.clean_logit_diff - it.corrupt_logit_diff >= 1.0 for it in ds.items)
    small = ds.model_copy(update={"items": ds.items[:4]})
    res = patch(store, smollm2, small, "heads", "activation", layers=[smollm2.n_layers - 1], batch_size=4)
    assert len(res.results) == smollm2.n_heads
    assert res.clean_logit_diff > res.corrupt_logit_diff
    assert store.get_patch_run(run_id=res.run_id)["what"] == "heads"
