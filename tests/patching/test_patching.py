"""Patching on the tiny random models: identities that must hold exactly (up to float error)."""

from __future__ import annotations

import pytest
import torch

from autointerp.patching import (activation_patching, attribution_patching, components_for, direct_logit_attribution,
                                 path_patching, patch)
from autointerp.patching.core import prepare
from autointerp.patching.dla import logit_direction
from autointerp.models.hooked import patch_value
from autointerp.store import Store
from autointerp.tasks.items import Dataset

from .helpers import items, same_items


def _ld(hm, texts, its, hooks_for=None):
    """Mean logit diff computed the plain way: one prompt at a time, full logits."""
    out = []
    for i, (t, it) in enumerate(zip(texts, its)):
        ids, mask = hm.tokenize([t])
        run = hm.forward(ids, mask, hooks=hooks_for(i) if hooks_for else None)
        a = hm.token_id(it.answer)
        w = hm.token_id(it.wrong)
        out.append(float(run.logits[0, -1, a] - run.logits[0, -1, w]))
    return sum(out) / len(out)


def test_clean_equals_corrupt_gives_zero(tiny):
    for what in ("heads", "resid", "mlp"):
        r = activation_patching(tiny, same_items(), what, batch_size=2)
        assert not r.normalised
        assert max(abs(x["effect"]) for x in r.results) < 1e-4


@pytest.mark.parametrize("direction,target", [("denoising", 1.0), ("noising", -1.0)])
def test_patching_all_of_resid_gives_one(tiny, direction, target):
    r = activation_patching(tiny, items(), "resid", per_position=False, direction=direction, batch_size=3)
    assert r.normalised and abs(r.clean_logit_diff - r.corrupt_logit_diff) > 1e-3
    assert len(r.results) == tiny.n_layers
    for x in r.results:
        assert x["effect"] == pytest.approx(target, abs=2e-3)


def test_resid_per_position_outside_the_edit_is_zero(tiny):
    its = items(1)
    r = activation_patching(tiny, its, "resid", batch_size=1)
    clean_ids, _ = tiny.tokenize([its[0].clean])
    corr_ids, _ = tiny.tokenize([its[0].corrupt])
    differs = {int(p) for p in (clean_ids[0] != corr_ids[0]).nonzero()}
    for x in r.results:
        if x["layer"] == 0 and x["position"] not in differs:
            assert abs(x["effect"]) < 1e-3


def test_head_effect_equals_manual_rerun(tiny):
    its = items()
    L, h = 1, 2
    r = activation_patching(tiny, its, "heads", batch_size=2, max_batch=8)
    got = r.effects()[(f"L{L}/H{h}", None)]
    clean_z = [tiny.forward(*tiny.tokenize([it.clean]), cache=[f"blocks.{L}.attn.z"]).cache[f"blocks.{L}.attn.z"]
               for it in its]
    clean = _ld(tiny, [it.clean for it in its], its)
    corrupt = _ld(tiny, [it.corrupt for it in its], its)
    patched = _ld(tiny, [it.corrupt for it in its], its,
                  hooks_for=lambda i: {f"blocks.{L}.attn.z": patch_value(clean_z[i], heads=h)})
    assert r.clean_logit_diff == pytest.approx(clean, abs=1e-4)
    assert r.corrupt_logit_diff == pytest.approx(corrupt, abs=1e-4)
    assert got == pytest.approx((patched - corrupt) / (clean - corrupt), abs=1e-3)


@pytest.mark.parametrize("what", ["heads", "mlp"])
def test_batched_equals_one_per_forward(tiny, what):
    kw = {}
    a = activation_patching(tiny, items(3), what, batch_size=3, max_batch=24, **kw)
    b = activation_patching(tiny, items(3), what, batch_size=3, one_per_forward=True, **kw)
    ea, eb = a.effects(), b.effects()
    assert ea.keys() == eb.keys()
    assert a.settings["forwards"] < b.settings["forwards"]
    assert max(abs(ea[k] - eb[k]) for k in ea) < 1e-3


@pytest.mark.parametrize("what", ["heads", "mlp", "attn"])
def test_attribution_agrees_in_sign_on_large_effects(tiny, what):
    act = activation_patching(tiny, items(), what, batch_size=5)
    att = attribution_patching(tiny, items(), what, batch_size=5)
    ea, eb = act.effects(), att.effects()
    big = max(abs(v) for v in ea.values())
    checked = 0
    for k, v in ea.items():
        if abs(v) >= 0.3 * big:
            assert (v > 0) == (eb[k] > 0), (k, v, eb[k])
            checked += 1
    assert checked >= 1
    assert att.clean_logit_diff == pytest.approx(act.clean_logit_diff, abs=1e-4)


def test_neurons_patching_and_attribution(tiny):
    comps = components_for(tiny, "neurons", 20, layer=1)[:16]
    act = activation_patching(tiny, items(3), "neurons", components=comps, batch_size=3)
    att = attribution_patching(tiny, items(3), "neurons", components=comps, batch_size=3)
    assert len(act.results) == len(att.results) == 16
    assert all(r["component"].startswith("L1/N") for r in act.results)


def test_path_patching_last_layer_to_logits_equals_activation(tiny):
    last = tiny.n_layers - 1
    senders = [f"L{last}/H{h}" for h in range(tiny.n_heads)]
    pp = path_patching(tiny, items(), "logits", senders=senders, freeze_mlps=False, batch_size=5)
    act = activation_patching(tiny, items(), "heads", layers=[last], batch_size=5)
    ep, ea = pp.effects(), act.effects()
    for s in senders:
        assert ep[(s, None)] == pytest.approx(ea[(s, None)], abs=1e-3)


def test_path_patching_to_receiver_queries_equals_manual(tiny):
    its = items(2)
    S, R = (0, 1), (1, 3)              # sender L0/H1 -> receiver L1/H3 query
    pp = path_patching(tiny, its, [f"L{R[0]}/H{R[1]}:q"], senders=[f"L{S[0]}/H{S[1]}"], batch_size=2)
    got = pp.results[0]["effect"]
    data = prepare(tiny, its, 2)
    b = data.batches[0]
    z0, m0, q1 = "blocks.0.attn.z", "blocks.0.mlp.out", f"blocks.{R[0]}.attn.q"
    clean = tiny.forward(b.clean, b.mask, cache=[z0])
    corr = tiny.forward(b.corrupt, b.mask, cache=[z0, m0])
    # step 1: sender patched, MLP0 frozen -> receiver's q
    step1 = tiny.forward(b.corrupt, b.mask, cache=[q1], hooks={
        z0: patch_value(clean.cache[z0], heads=S[1]), m0: patch_value(corr.cache[m0])})
    # step 2: only the receiver's q replaced
    step2 = tiny.forward(b.corrupt, b.mask, hooks={q1: patch_value(step1.cache[q1], heads=R[1])})
    rows = torch.arange(2)

    def ld(logits):
        return float((logits[rows, b.last, b.ans] - logits[rows, b.last, b.wrong]).mean())

    lc, lx = ld(clean.logits), ld(corr.logits)
    assert got == pytest.approx((ld(step2.logits) - lx) / (lc - lx), abs=1e-3)


def test_dla_decomposes_the_logit_diff(tiny_llama):
    """RMSNorm, no biases: embedding + all heads + all neurons = the clean logit difference."""
    hm = tiny_llama
    its = items()
    heads = direct_logit_attribution(hm, its, "heads")
    neurons = direct_logit_attribution(hm, its, "neurons")
    data = prepare(hm, its, 32)
    b = data.batches[0]
    last = f"blocks.{hm.n_layers - 1}.resid_post"
    run = hm.forward(b.clean, b.mask, cache=["blocks.0.resid_pre", last, "ln_final.out"], return_logits=False)
    g = logit_direction(hm, b, run.cache[last], run.cache["ln_final.out"])
    emb = float((run.cache["blocks.0.resid_pre"][torch.arange(b.size), b.last] * g).sum(-1).mean())
    total = emb + sum(r["effect"] for r in heads.results) + sum(r["effect"] for r in neurons.results)
    assert total == pytest.approx(heads.clean_logit_diff, abs=1e-3)
    assert len(heads.results) == hm.n_layers * hm.n_heads


def test_patch_api_stores_and_reuses(tiny, tmp_path):
    store = Store(tmp_path / "s.db")
    from autointerp.tasks.api import dataset_hash

    ds = Dataset(name="t", task="test", source="import", items=items())
    store.put_model(tiny.spec, tiny.info())
    store.put_dataset("t", "test", "import", ds.items, model_id=tiny.spec, hash=dataset_hash(ds.items))
    r1 = patch(store, tiny, ds, "heads", "activation", batch_size=5)
    r2 = patch(store, tiny, ds, "heads", "activation", batch_size=5)
    assert not r1.reused and r2.reused and r1.run_id == r2.run_id
    assert r1.effects() == pytest.approx(r2.effects())
    at = patch(store, tiny, ds, "heads", "attribution", batch_size=5)
    assert at.settings["rank_correlation_with_activation"] is not None
    assert len(store.list_patch_runs("t")) == 2
    d = patch(store, tiny, ds, "heads", "dla")
    p = patch(store, tiny, ds, method="path", receivers="logits")
    assert d.what == "dla_heads" and p.what == "path"
    assert len(store.list_patch_runs("t")) == 4
