"""Mining follows the unit-kind registry: the residual-stream dimensions that tests/dummy_unit_kind.py
registers in one module (L1/R7 = dimension 7 of blocks.1.resid_post) are mined by the generic
per-hook state with no mining code of their own, on a tiny random Llama into a real SQLite store:
their top records are the true top activations (a plain forward pass), show sees them, a sharded
mine merges to the single run, a run killed mid-way resumes to the same records, and --units takes
comma-separated lists. Also: neurons mined beside SAE latents in chunks are kept."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch

from autointerp.mine import find_run, load_exemplars, mine
from autointerp.mine import miner as miner_mod
from autointerp.models.sae import SAE
from autointerp.store import Store

from tinykit import mine_killed, run_cli, run_ids, save_model_dir, word_corpus

pytestmark = pytest.mark.usefixtures("dummy_extensions")   # the dummy kind, registered for this module only

ARGS = dict(context_len=16, top_k=4, n_quantiles=3, per_quantile=2, n_random=3, batch_size=5, progress=False)
N_CTX = 37
D_MODEL = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus") / "c.txt", 20)


@pytest.fixture(scope="module")
def mined(tiny_llama, corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "s.db"
    rid = mine(tiny_llama, Store(path), corpus, n_tokens=16 * N_CTX, units="resids", layers=[0, 2], **ARGS)
    return path, rid


def _resid(hm, st, rid, L):
    """blocks.L.resid_post over the run's contexts, from a plain forward pass: [n_ctx, text positions, d_model]."""
    ids, fp = run_ids(st, rid)
    out = hm.forward(ids, None, cache=[f"blocks.{L}.resid_post"], return_logits=False)
    return out.cache[f"blocks.{L}.resid_post"][:, fp:].float()


def _records(path, rid):
    c = sqlite3.connect(path)
    try:
        return c.execute("select unit, kind, bin, ctx_idx, max_act, acts, extra from records where run_id = ? "
                         "order by unit, kind, bin, ctx_idx", [rid]).fetchall()
    finally:
        c.close()


def _unit_stats(path, rid):
    c = sqlite3.connect(path)
    try:
        return c.execute("select unit, layer, max_act, frac_active, hist_json, mean_act, std_act from unit_stats "
                         "where run_id = ? order by unit", [rid]).fetchall()
    finally:
        c.close()


def test_resid_top_records_are_the_true_top_activations(tiny_llama, mined):
    path, rid = mined
    st = Store(path)
    run = st.get_mining_run(rid)
    assert run["status"] == "done" and run["settings"]["units"] == "resids" and run["n_done"] == N_CTX
    assert run["stats"]["n_units"] == 2 * D_MODEL
    units = {r["unit"] for r in st.query("select unit from unit_stats where run_id = ?", [rid])}
    assert units == {f"L{L}/R{i}" for L in (0, 2) for i in range(D_MODEL)}          # resids only, no neuron
    for L in (0, 2):
        acts = _resid(tiny_llama, st, rid, L)
        ctx_max = acts.amax(dim=1)                                                 # [n_ctx, d_model]
        for i in (0, 7, 63):
            ex = load_exemplars(st, rid, f"L{L}/R{i}")
            want = ctx_max[:, i].topk(4)
            np.testing.assert_allclose([r.max_act for r in ex.top], want.values.tolist(), rtol=1e-5, atol=1e-6)
            assert [r.bin for r in ex.top] == [0, 1, 2, 3]
            for r in ex.top + ex.quantiles + ex.random:
                assert r.max_act == pytest.approx(float(ctx_max[r.ctx_idx, i]), rel=1e-5, abs=1e-6)
                np.testing.assert_allclose(r.acts, acts[r.ctx_idx, :, i].numpy(), rtol=2e-3, atol=2e-3)
            top = {r.ctx_idx for r in ex.top}
            assert len(ex.random) == 3 and len(ex.quantiles) == 6
            assert not top & {r.ctx_idx for r in ex.random + ex.quantiles}
            x = acts[:, :, i].reshape(-1).double()
            assert ex.stats.max_act == pytest.approx(float(x.max()), rel=1e-5)
            assert ex.stats.mean_act == pytest.approx(float(x.mean()), rel=1e-5, abs=1e-7)
            assert ex.stats.std_act == pytest.approx(float(x.std(correction=0)), rel=1e-5)
            assert ex.stats.frac_active == pytest.approx(float((x > 0).double().mean()))
            assert ex.promoted == []                                                # resids store no logit effects
    assert find_run(st, "tiny-llama", unit="L2/R5").id == rid
    assert find_run(st, "tiny-llama", unit="L1/R5") is None and find_run(st, "tiny-llama", unit="L0/N5") is None


def test_show_sees_the_mined_resids(tiny_llama, mined, capsys):
    path, rid = mined
    ex = load_exemplars(Store(path), rid, "L2/R7")
    code, out, err = run_cli(capsys, "show", "L2/R7", "--model", "tiny-llama", "--store", path, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["unit"] == "L2/R7" and info["stats"]["run_id"] == rid
    assert info["stats"]["max_act"] == pytest.approx(ex.stats.max_act)
    tops = [r for r in info["records"] if r["kind"] == "top"]
    assert [r["max_act"] for r in tops] == pytest.approx([r.max_act for r in ex.top])
    code, out, err = run_cli(capsys, "show", "L2/R64", "--model", "tiny-llama", "--store", path)
    assert code == 2 and "out of range (layer has resids 0..63)" in err and len(err.strip().splitlines()) == 1


def test_unit_lists_name_one_run(tiny_llama, corpus, tmp_path):
    """'resids,neurons' and 'neurons,resids' are one run (its units named canonically); 'neurons,heads'
    is the run 'both' names (the same id as before lists existed); the neurons' top records and
    statistics of a mixed run are those of a neurons-only run."""
    st = Store(tmp_path / "s.db")
    kw = dict(ARGS, n_tokens=16 * 12, layers=[1])
    mixed = mine(tiny_llama, st, corpus, units="resids,neurons", **kw)
    assert st.get_mining_run(mixed)["settings"]["units"] == "neurons,resids"
    assert st.get_mining_run(mixed)["stats"]["n_units"] == tiny_llama.d_mlp + D_MODEL
    assert mine(tiny_llama, st, corpus, units="neurons, resids", **kw) == mixed        # done: found, not redone
    both = mine(tiny_llama, st, corpus, units="both", **kw)
    assert mine(tiny_llama, st, corpus, units="heads,neurons", **kw) == both
    assert miner_mod.run_key(tiny_llama.spec, st.get_mining_run(both)["corpus_id"], 16, [1], 4, 3, 2, 3, "both",
                             16 * 12) == both
    only = mine(tiny_llama, st, corpus, units="neurons", **kw)
    q = "select unit, kind, bin, ctx_idx, max_act, acts from records where run_id = ? and kind = 'top' and unit like 'L1/N%' order by 1, 3"
    assert st.query(q, [mixed]) == st.query(q, [only]) != []
    q = "select unit, max_act, mean_act, frac_active from unit_stats where run_id = ? and unit like 'L1/N%' order by unit"
    assert st.query(q, [mixed]) == st.query(q, [only])
    assert st.query("select count(*) as n from unit_logits where unit like '%/R%'")[0]["n"] == 0
    from autointerp.errors import UsageError
    with pytest.raises(UsageError, match="bad units 'resids,nope': use neurons, heads, latents, resids, both"):
        mine(tiny_llama, st, corpus, units="resids,nope", **kw)
    with pytest.raises(UsageError, match="needs an SAE"):
        mine(tiny_llama, st, corpus, units="resids,latents", **kw)


def test_sharded_resid_mine_merges_to_the_single_run(tiny_llama, corpus, tmp_path, capsys):
    kw = dict(ARGS, n_tokens=16 * N_CTX, units="resids,heads", layers=[0, 1])
    single = tmp_path / "single.db"
    rid = mine(tiny_llama, Store(single), corpus, **kw)
    parts = []
    for i in (1, 0, 2):
        p = tmp_path / f"part-{i}.db"
        mine(tiny_llama, Store(p), corpus, shard=(i, 3), **kw)
        parts.append(p)
    merged = tmp_path / "merged.db"
    from autointerp.core.units import UNIT_KINDS, register_unit_kind
    resid = UNIT_KINDS.pop("resid")                # a process that does not know the kind: refused, nothing written
    try:
        code, out, err = run_cli(capsys, "merge", *parts, "--into", merged)
    finally:
        register_unit_kind(resid)
    assert code == 2 and "a unit kind not registered here" in err and len(err.strip().splitlines()) == 1
    assert not merged.exists()
    code, out, err = run_cli(capsys, "merge", *parts, "--into", merged)
    assert code == 0, err
    a, b = _records(single, rid), _records(merged, rid)
    assert len(a) > 0 and a == b
    assert {r[1] for r in a} == {"top", "quantile", "random", "top_attn"}
    assert {r[0].split("/")[1][0] for r in a} == {"R", "H"}
    a, b = _unit_stats(single, rid), _unit_stats(merged, rid)
    assert len(a) == len(b) == 2 * (D_MODEL + tiny_llama.n_heads)
    for x, y in zip(a, b):
        assert x[:5] == y[:5]                                  # max, frac_active, histogram: exact
        for u, v in zip(x[5:], y[5:]):                         # mean, std: float64 summation order
            assert abs(u - v) <= 1e-12 * max(1.0, abs(u))


def test_resume_after_kill_gives_the_same_resid_records(tiny_llama, corpus, tmp_path, monkeypatch):
    args = dict(ARGS, n_tokens=16 * N_CTX, units="resids", layers=[1, 2], checkpoint_every=2)
    ref = tmp_path / "ref.db"
    rid = mine(tiny_llama, Store(ref), corpus, **args)
    path = tmp_path / "s.db"
    st = Store(path)

    mine_killed(monkeypatch, tiny_llama, st, corpus, **args)
    row = st.get_mining_run(rid)
    assert row["status"] == "running" and row["n_done"] == 20
    ck = torch.load(row["state_path"], weights_only=False)
    assert sorted(ck["resids"]) == [1, 2] and "neurons" not in ck           # the kind's state under its plural
    seen = []
    monkeypatch.setattr(miner_mod, "_after_batch", seen.append)
    assert mine(tiny_llama, st, corpus, **args) == rid
    assert seen[0] == 25 and st.get_mining_run(rid)["stats"]["resumed_from"] == 20
    assert _records(path, rid) == _records(ref, rid) != []
    a, b = _unit_stats(path, rid), _unit_stats(ref, rid)
    assert [x[:5] for x in a] == [x[:5] for x in b]


def test_mine_cli_takes_the_registered_kind(tiny_llama, corpus, tmp_path, capsys):
    mdir = save_model_dir(tiny_llama, tmp_path / "tiny")
    db = tmp_path / "c.db"
    base = ["mine", "--model", mdir, "--device", "cpu", "--corpus", corpus, "--tokens", "320", "--context-len", "16",
            "--layers", "1", "--top-k", "3", "--batch-size", "8", "--store", db]
    code, out, err = run_cli(capsys, *base, "--units", "resids,neurons")
    assert code == 0, err
    assert f"layers 1, {tiny_llama.d_mlp} neurons + {D_MODEL} resids" in out
    code, out, err = run_cli(capsys, *base, "--units", "resids", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["units"] == "resids" and res["n_units"] == D_MODEL and res["records"]["top"] == D_MODEL * 3
    code, out, err = run_cli(capsys, *base[:-2], "--store", tmp_path / "x.db", "--units", "neurons,resid")
    assert code == 2 and "bad units 'neurons,resid'" in err and "resids" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()
    code, out, err = run_cli(capsys, "mine", "--help")
    assert "[neurons|heads|latents|resids|both][,...]" in out


def test_neurons_mined_beside_chunked_latents_are_kept(tiny_llama, corpus, tmp_path):
    """units='neurons' with an SAE in latent chunks: the first pass mines the neurons too, and their
    records, statistics and logit effects are stored as in one pass (not dropped with the chunk)."""
    g = torch.Generator().manual_seed(3)
    d, n = tiny_llama.d_model, 40
    sae = SAE(architecture="standard", W_enc=torch.randn(d, n, generator=g) * 5, b_enc=torch.full((n,), -1.0),
              W_dec=torch.randn(n, d, generator=g) / 10, b_dec=torch.zeros(d), hook="blocks.1.resid_post", name="rnd")
    try:
        kw = dict(ARGS, n_tokens=16 * 15, units="neurons", layers=[1], saes=[sae])
        one, chunked = tmp_path / "one.db", tmp_path / "chunked.db"
        rid = mine(tiny_llama, Store(one), corpus, **kw)
        assert mine(tiny_llama, Store(chunked), corpus, latent_chunk=15, **kw) == rid      # 3 passes
        a, b = _records(one, rid), _records(chunked, rid)
        assert {r[0].split("/")[1][0] for r in a} == {"N", "F"} and a == b
        assert [x[:5] for x in _unit_stats(one, rid)] == [x[:5] for x in _unit_stats(chunked, rid)]
        q = "select unit, promoted_json from unit_logits order by unit"
        assert Store(one).query(q) == Store(chunked).query(q) != []
    finally:
        if tiny_llama.saes.get(sae.hook) is sae:
            tiny_llama.detach_sae(sae)


def test_two_kinds_on_one_hook_point_are_both_fed(tiny_llama, corpus, tmp_path):
    """A second kind on resid_post (registered here, removed after): one forward feeds both states
    through the same hook point, and each stores the same values under its own ids."""
    from autointerp.core.units import UNIT_KINDS, UnitKind, register_unit_kind

    register_unit_kind(UnitKind("resid2", "Q", "resid2s", "resid_post", "d_model", intervene=False))
    try:
        st = Store(tmp_path / "s.db")
        rid = mine(tiny_llama, st, corpus, n_tokens=16 * 10, units="resid2s,resids", layers=[1], **ARGS)
        q = "select substr(unit, 5) as i, kind, bin, ctx_idx, max_act, acts from records where run_id = ? and unit like ? order by 1, 2, 3, 4"
        r, q2 = st.query(q, [rid, "L1/R%"]), st.query(q, [rid, "L1/Q%"])
        assert len(r) > 0 and [x for x in r if x["kind"] == "top"] == [x for x in q2 if x["kind"] == "top"]
        assert st.get_mining_run(rid)["settings"]["units"] == "resids,resid2s"
    finally:
        UNIT_KINDS.pop("resid2", None)


@pytest.mark.parametrize("unit", ["L1/R3", "L1/H2"])
def test_explain_mines_the_units_kind_on_a_fresh_store(tiny_llama, corpus, tmp_path, unit):
    """explain of a unit that no run covers mines its layer for its kind (not neurons), then explains
    it (baseline: no LLM) from those records."""
    from autointerp.pipeline import ExplainSettings, explain_unit
    from autointerp.score.splits import SplitSizes

    st = Store(tmp_path / "s.db")
    s = ExplainSettings(explainer="baseline", scorers=("exact",), n_boot=20,
                        sizes=SplitSizes(n_train=6, n_calib=1, n_test=4))
    res = explain_unit(st, unit, model_spec="tiny-llama", hm=tiny_llama, corpus=corpus, n_tokens=16 * 45, settings=s,
                       mine_kw=dict(context_len=16, top_k=12, n_random=10, n_quantiles=3, batch_size=8, progress=False))
    assert res.mined and res.baseline.scores["simulation_exact"].n > 0
    run = st.query("select settings_json from mining_runs")
    assert len(run) == 1 and json.loads(run[0]["settings_json"])["units"] == {"R": "resids", "H": "heads"}[unit[3]]


def test_a_checkpoint_in_the_old_layout_resumes(tiny_llama, corpus, tmp_path, monkeypatch):
    """The first checkpoint layout always had both "neurons" and "heads" (empty when not mined): a
    neurons run killed under it resumes to the records of an uninterrupted run."""
    args = dict(ARGS, n_tokens=16 * N_CTX, units="neurons", layers=[2], checkpoint_every=2)
    ref = tmp_path / "ref.db"
    rid = mine(tiny_llama, Store(ref), corpus, **args)
    path = tmp_path / "s.db"
    st = Store(path)

    mine_killed(monkeypatch, tiny_llama, st, corpus, **args)
    state = st.get_mining_run(rid)["state_path"]
    ck = torch.load(state, weights_only=False)
    assert set(ck) == {"version", "run_id", "n_done", "latents", "neurons"} and sorted(ck["neurons"]) == [2]
    torch.save({**ck, "heads": {}}, state)                     # as the first version wrote it
    monkeypatch.setattr(miner_mod, "_after_batch", lambda n: None)
    assert mine(tiny_llama, st, corpus, **args) == rid
    assert st.get_mining_run(rid)["stats"]["resumed_from"] == 20
    assert _records(path, rid) == _records(ref, rid) != []
