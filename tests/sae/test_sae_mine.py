"""SAE latents mined in the miner's one pass, checked against a brute-force encode; a trained
TopK SAE (the trainer's SAELens files loaded back) and a random transcoder share one run and one
store; a latent is explained and scored through the pipeline with the fake LLM of tests/explain."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.core.units import Unit
from autointerp.errors import UnitError, UsageError
from autointerp.mine import load_exemplars, mine
from autointerp.mine.records import get_run
from autointerp.mine.sae_train import train_topk
from autointerp.models.sae import SAE, load_sae
from autointerp.store import Store

from tinykit import run_ids, word_corpus

CTX = 32
MINE = dict(n_tokens=CTX * 96, context_len=CTX, top_k=8, n_quantiles=4, per_quantile=2, n_random=6, batch_size=16,
            progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus") / "c.txt", 160)


@pytest.fixture(scope="module")
def trained(tiny_llama, corpus, tmp_path_factory):
    sae, report = train_topk(tiny_llama, "blocks.1.resid_post", 256, k=8, n_tokens=CTX * 120, corpus=corpus,
                             context_len=CTX, minibatch=64, lr=3e-3, name="l1-topk")
    d = sae.save(tmp_path_factory.mktemp("sae") / "l1-topk", model_name=tiny_llama.spec)
    return load_sae(d), report


@pytest.fixture(scope="module")
def transcoder(tiny_llama, tmp_path_factory):
    g = torch.Generator().manual_seed(3)
    d, n = tiny_llama.d_model, 96
    tc = SAE(architecture="jumprelu_transcoder", W_enc=torch.randn(d, n, generator=g) / 4, b_enc=torch.zeros(n),
             W_dec=torch.randn(n, d, generator=g) / 10, b_dec=torch.zeros(d), threshold=torch.full((n,), 0.5),
             hook="blocks.1.mlp.in", hook_out="blocks.1.hook_mlp_out", name="tc1")
    return load_sae(tc.save(tmp_path_factory.mktemp("tc") / "tc1"))


@pytest.fixture(scope="module")
def mined(tiny_llama, corpus, trained, transcoder, tmp_path_factory):
    st = Store(tmp_path_factory.mktemp("s") / "s.db")
    sae = trained[0]
    rid = mine(tiny_llama, st, corpus, units="latents", saes=[sae, transcoder], **MINE)
    return st, rid


def _brute(hm, st, rid, sae):
    ids, fp = run_ids(st, rid)
    x = hm.forward(ids, cache=[sae.hook], return_logits=False)[sae.hook]
    return sae.encode(x)[:, fp:]                                     # [n_ctx, p, d_sae]


def test_trainer_reports_and_writes_what_the_loader_reads(trained):
    sae, rep = trained
    assert sae.architecture == "topk" and sae.k == 8 and sae.d_sae == 256 and sae.hook == "blocks.1.resid_post"
    assert rep["explained_variance"] > 0.5 and rep["l0"] <= 8 and 0 <= rep["dead_frac"] < 0.5
    assert rep["loss_last"] < rep["loss_first"]


@pytest.mark.parametrize("which", ["sae", "transcoder"])
def test_mined_latents_equal_a_brute_force_encode(tiny_llama, mined, trained, transcoder, which):
    st, rid = mined
    sae = trained[0] if which == "sae" else transcoder
    z = _brute(tiny_llama, st, rid, sae)
    mx = z.amax(dim=1)                                               # [n_ctx, d_sae]
    fired = (mx > 0).sum(0)
    checked = 0
    for i in [int(j) for j in torch.argsort(fired, descending=True)[:6]]:
        ex = load_exemplars(st, rid, Unit.latent(1, i, sae.name))
        tol = 2e-3 * max(1.0, float(mx[:, i].max()))                 # float16 rows; near-ties may swap places
        want = mx[:, i].sort(descending=True).values[: min(8, int(fired[i]))]
        assert len(ex.top) == len(want) and np.allclose([r.max_act for r in ex.top], want.numpy(), atol=tol)
        for r in ex.top:
            assert np.allclose(r.acts, z[r.ctx_idx, :, i].numpy(), atol=tol)
        top = {r.ctx_idx for r in ex.top}
        assert all(r.max_act > 0 for r in ex.quantiles) and not top & {r.ctx_idx for r in ex.quantiles}
        assert len(ex.random) == 6 and not top & {r.ctx_idx for r in ex.random}
        want_freq = float((z[:, :, i] > 0).double().mean())
        assert abs(ex.stats.frac_active - want_freq) < 1e-9
        checked += 1
    assert checked == 6
    dead = [d for d in get_run(st, rid).stats["latents"] if d["sae"] == sae.name][0]
    assert dead["dead"] == int((fired == 0).sum()) and dead["d_sae"] == sae.d_sae
    assert abs(dead["l0"] - float((z > 0).sum(-1).float().mean())) < 1e-3
    never = int(torch.nonzero(fired == 0)[0]) if (fired == 0).any() else None
    if never is not None:                                            # a dead latent has no top records at all
        assert load_exemplars(st, rid, Unit.latent(1, never, sae.name)).top == []


def test_output_token_effect_is_W_dec_through_the_unembedding(tiny_llama, mined, trained):
    st, rid = mined
    sae = trained[0]
    ex = load_exemplars(st, rid, Unit.latent(1, 5, sae.name))
    eff = (sae.W_dec[5] * tiny_llama.ln_final_scale.float()) @ tiny_llama.W_U.float()
    top = eff.topk(10).indices.tolist()
    assert [t for t, _ in ex.promoted] == tiny_llama.to_str_tokens(torch.tensor(top))
    assert abs(ex.promoted[0][1] - float(eff.max())) < 1e-3


def test_saes_share_a_store_by_content_id(mined, trained, transcoder, tiny_llama, corpus):
    st, rid = mined
    rows = {r["name"]: r for r in st.saes(tiny_llama.spec)}
    assert set(rows) == {"l1-topk", "tc1"}
    assert rows["tc1"]["hook"] == "blocks.1.mlp.in" and rows["tc1"]["hook_out"] == "blocks.1.mlp.out"
    assert rows["l1-topk"]["id"] == trained[0].id and rows["l1-topk"]["architecture"] == "topk"
    assert st.get_sae("l1-topk")["d_sae"] == 256
    run = get_run(st, rid)
    assert run.covers("L1/F3@tc1") and not run.covers("L1/F3@other") and not run.covers("L1/N3")
    assert not run.covers("L1/F96@tc1")
    assert mine(tiny_llama, st, corpus, units="latents", saes=[trained[0], transcoder], **MINE) == rid   # done: same id
    other = SAE(architecture="standard", W_enc=torch.zeros(64, 4), b_enc=torch.zeros(4), W_dec=torch.zeros(4, 64),
                b_dec=torch.zeros(64), hook="blocks.0.resid_post", name="l1-topk")
    with pytest.raises(UsageError, match="already has a different SAE named 'l1-topk'"):
        st.put_sae(other.info() | {"id": "f" * 24}, tiny_llama.spec, {})
    with pytest.raises(UnitError, match="was not mined"):
        load_exemplars(st, rid, "L1/F3@nope")


def _fake_llm():
    p = Path(__file__).resolve().parents[1] / "explain" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_explain_conftest", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FakeLLM


def test_a_latent_is_explained_and_scored_through_the_pipeline(mined, trained, tiny_llama):
    from autointerp.pipeline import explain_unit, show_unit

    st, rid = mined
    sae = trained[0]
    z_rank = sorted(range(sae.d_sae), key=lambda i: -(st.get_unit_stats(rid, Unit.latent(1, i, sae.name).id)
                                                      or {}).get("frac_active", 0) or 0)
    u = Unit.latent(1, z_rank[0], sae.name)
    llm = _fake_llm()(replies=('the tokens "cat" and "dog"',))
    res = explain_unit(st, u, model_spec=tiny_llama.spec, llm=llm, hm=tiny_llama, run_id=rid, k=1)
    assert res.unit == u.id and res.run_id == rid and res.explanation.text == 'the tokens "cat" and "dog"'
    assert res.explanation.scores["simulation"].n > 0 and "detection" in res.explanation.scores
    assert res.max_act > 0 and res.promoted
    info = show_unit(st, tiny_llama.spec, u.id)
    assert [e["text"] for e in info["explanations"]] == [res.explanation.text]
    assert st.query("select count(*) as n from explanations where unit = ?", [u.id])[0]["n"] == 2   # LLM + baseline
