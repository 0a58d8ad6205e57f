"""Mining against brute force on tiny random models: top records, true activations (manual HF
hook), quantile/random disjointness, stats, resume, idempotence, logits, heads."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from autointerp.mine import find_run, load_exemplars, mine, parse_layers
from autointerp.mine import miner as miner_mod
from autointerp.store import Store

from tinykit import WORDS, mine_killed, word_corpus

ARGS = dict(context_len=16, top_k=4, n_quantiles=3, per_quantile=2, n_random=3, batch_size=5, progress=False)
N_TOKENS = 16 * 40          # 40 contexts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus") / "c.txt", 20)


@pytest.fixture(scope="module")
def mined_llama(tiny_llama, corpus, tmp_path_factory):
    st = Store(tmp_path_factory.mktemp("s") / "s.db")
    rid = mine(tiny_llama, st, corpus, n_tokens=N_TOKENS, units="both", **ARGS)
    return st, rid


def _inputs(st, rid):
    run = st.get_mining_run(rid)
    ctx = st.get_contexts(run["corpus_id"])
    n = run["n_done"]
    return torch.tensor(np.stack([ctx[i]["token_ids"] for i in range(n)]).astype(np.int64)), run["settings"]["first_pos"]


def _brute_neurons(hm, ids, L, fp):
    run = hm.forward(ids, None, cache=[f"blocks.{L}.mlp.post"], return_logits=False)
    return run.cache[f"blocks.{L}.mlp.post"][:, fp:].float()        # [n_ctx, p, d_mlp]


def test_parse_layers():
    assert parse_layers(None, 4) == [0, 1, 2, 3]
    assert parse_layers("0-2,3", 4) == [0, 1, 2, 3]
    assert parse_layers("2,0", 4) == [0, 2]
    from autointerp.errors import UsageError
    with pytest.raises(UsageError):
        parse_layers("7", 4)
    with pytest.raises(UsageError):
        parse_layers("x", 4)


def test_top_records_are_the_top(tiny_llama, mined_llama):
    st, rid = mined_llama
    ids, fp = _inputs(st, rid)
    assert ids.shape == (40, 16) and fp == 1
    for L in (0, 2):
        acts = _brute_neurons(tiny_llama, ids, L, fp)
        ctx_max = acts.amax(dim=1)                                   # [n_ctx, d]
        for n in (0, 7, 50, 95):
            ex = load_exemplars(st, rid, f"L{L}/N{n}")
            want_v = ctx_max[:, n].topk(4).values
            # the values are the top 4 (contexts may tie: the first text token sees only BOS + itself)
            np.testing.assert_allclose([r.max_act for r in ex.top], want_v.tolist(), rtol=1e-5, atol=1e-6)
            assert [r.bin for r in ex.top] == [0, 1, 2, 3] and len({r.ctx_idx for r in ex.top}) == 4
            for r in ex.top:
                assert r.max_act == pytest.approx(float(ctx_max[r.ctx_idx, n]), rel=1e-5, abs=1e-7)
            for r in ex.top:
                np.testing.assert_allclose(r.acts, acts[r.ctx_idx, :, n].numpy(), rtol=2e-3, atol=1e-4)
                assert len(r.tokens) == len(r.acts) == 15 and len(r.input_ids) == 16


def test_true_activations_equal_a_manual_hf_hook(tiny, corpus, tmp_path):
    """Record activations equal the input of the HF down projection, captured with a plain hook."""
    st = Store(tmp_path / "s.db")
    rid = mine(tiny, st, corpus, n_tokens=16 * 10, layers=[1], **ARGS)
    hf = tiny.model
    down = hf.transformer.h[1].mlp.c_proj if tiny.family == "gpt2" else hf.model.layers[1].mlp.down_proj
    got = {}
    h = down.register_forward_hook(lambda m, inp, out: got.__setitem__("x", inp[0].detach()))
    try:
        for n in (3, 11):
            ex = load_exemplars(st, rid, f"L1/N{n}")
            for r in ex.top + ex.random + ex.quantiles:
                with torch.no_grad():
                    hf(input_ids=torch.tensor([r.input_ids]))
                np.testing.assert_allclose(r.acts, got["x"][0, ex.first_pos:, n].numpy(), rtol=2e-3, atol=1e-4)
    finally:
        h.remove()


def test_quantile_and_random_records(tiny_llama, mined_llama):
    st, rid = mined_llama
    ids, fp = _inputs(st, rid)
    acts = _brute_neurons(tiny_llama, ids, 1, fp)
    for n in range(0, 96, 7):
        ex = load_exemplars(st, rid, f"L1/N{n}")
        top = {r.ctx_idx for r in ex.top}
        rnd = [r.ctx_idx for r in ex.random]
        qua = [r.ctx_idx for r in ex.quantiles]
        assert len(rnd) == 3 and len(set(rnd)) == 3
        assert len(qua) == 6 and len(set(qua)) == 6                  # reservoir holds 3 + 2*3*2 = 15 of 40
        assert not (set(rnd) & set(qua)) and not (top & set(rnd)) and not (top & set(qua))
        bins = [r.bin for r in ex.quantiles]
        assert sorted(bins) == [0, 0, 1, 1, 2, 2]
        # bins are ordered by max activation
        for b in (0, 1):
            lo = max(r.max_act for r in ex.quantiles if r.bin == b)
            hi = min(r.max_act for r in ex.quantiles if r.bin == b + 1)
            assert lo <= hi
        for r in ex.random + ex.quantiles:
            assert r.max_act == pytest.approx(float(acts[r.ctx_idx, :, n].max()), rel=1e-5, abs=1e-6)
            np.testing.assert_allclose(r.acts, acts[r.ctx_idx, :, n].numpy(), rtol=2e-3, atol=1e-4)


def test_stats(tiny_llama, mined_llama):
    st, rid = mined_llama
    ids, fp = _inputs(st, rid)
    acts = _brute_neurons(tiny_llama, ids, 2, fp).reshape(-1, tiny_llama.d_mlp).double()
    for n in (0, 5, 95):
        s = load_exemplars(st, rid, f"L2/N{n}").stats
        x = acts[:, n]
        assert s.max_act == pytest.approx(float(x.max()), rel=1e-5)
        assert s.mean_act == pytest.approx(float(x.mean()), rel=1e-5, abs=1e-8)
        assert s.std_act == pytest.approx(float(x.std(correction=0)), rel=1e-5)
        assert s.frac_active == pytest.approx(float((x > 0).double().mean()))
        assert len(s.hist["counts"]) == 20 and len(s.hist["edges"]) == 21
        assert s.hist["edges"][0] == pytest.approx(float(x.min()), abs=1e-4)
        assert sum(s.hist["counts"]) == s.hist["sample_tokens"] == 15 * 15   # reservoir: 15 contexts x 15 tokens


def test_unit_logits_match_manual(tiny_llama, mined_llama):
    st, rid = mined_llama
    hm = tiny_llama
    for L, n in ((0, 1), (2, 40)):
        ex = load_exemplars(st, rid, f"L{L}/N{n}")
        eff = (hm.W_out(L)[n].float() * hm.ln_final_scale.float()) @ hm.W_U.float()
        top = eff.topk(10)
        assert [t for t, _ in ex.promoted] == hm.to_str_tokens(top.indices)
        np.testing.assert_allclose([w for _, w in ex.promoted], top.values.numpy(), atol=1e-4)
        bot = eff.topk(10, largest=False)
        assert [t for t, _ in ex.suppressed] == hm.to_str_tokens(bot.indices)


def test_heads(tiny_llama, mined_llama):
    st, rid = mined_llama
    hm = tiny_llama
    ids, fp = _inputs(st, rid)
    run = hm.forward(ids, None, cache=["blocks.1.attn.z", "blocks.1.attn.pattern"], return_logits=False)
    zn = run.cache["blocks.1.attn.z"][:, fp:].float().norm(dim=-1)           # [n, p, h]
    pat = run.cache["blocks.1.attn.pattern"][:, :, fp:, :].float()           # [n, h, p, P]
    attn_max = pat[..., 1:].amax(-1).permute(0, 2, 1)                        # [n, p, h]
    for h in range(hm.n_heads):
        ex = load_exemplars(st, rid, f"L1/H{h}")
        assert ex.promoted == [] and len(ex.top) == 4 and len(ex.top_attn) == 4 and len(ex.random) == 3
        np.testing.assert_allclose([r.max_act for r in ex.top], zn[:, :, h].amax(1).topk(4).values, rtol=1e-5)
        np.testing.assert_allclose([r.max_act for r in ex.top_attn], attn_max[:, :, h].amax(1).topk(4).values, rtol=1e-5)
        for r in ex.top:
            np.testing.assert_allclose(r.acts, zn[r.ctx_idx, :, h].numpy(), rtol=2e-3, atol=1e-4)
            q = int(np.argmax(r.acts))
            np.testing.assert_allclose(r.attn, pat[r.ctx_idx, h, q, fp:].numpy(), atol=1e-3)
            assert len(r.attn) == len(r.tokens) and sum(r.attn) <= 1.001
        for r in ex.top_attn:
            assert r.max_act == pytest.approx(float(attn_max[r.ctx_idx, :, h].max()), rel=1e-5)


def _all_records(st, rid):
    return st.query("select unit, kind, bin, ctx_idx, max_act, hex(acts) as a, hex(extra) as e from records "
                    "where run_id = ? order by unit, kind, bin, ctx_idx", [rid])


def test_resume_after_kill_gives_the_same_records(tiny_gpt2, corpus, tmp_path, monkeypatch):
    args = dict(ARGS, n_tokens=N_TOKENS, units="both", checkpoint_every=2)
    ref = Store(tmp_path / "ref.db")
    rid_ref = mine(tiny_gpt2, ref, corpus, **args)

    st = Store(tmp_path / "s.db")

    mine_killed(monkeypatch, tiny_gpt2, st, corpus, **args)
    row = st.query("select * from mining_runs")[0]
    assert row["status"] == "running" and row["n_done"] == 20 and row["state_path"]
    assert st.query("select count(*) as n from records")[0]["n"] == 0
    monkeypatch.setattr(miner_mod, "_after_batch", lambda n: None)

    seen = []
    monkeypatch.setattr(miner_mod, "_after_batch", lambda n: seen.append(n))
    rid = mine(tiny_gpt2, st, corpus, **args)
    assert rid == rid_ref and seen[0] == 25                            # continued from the checkpoint at 20
    got, want = _all_records(st, rid), _all_records(ref, rid_ref)
    assert len(got) == len(want) > 0 and got == want
    keys = [(r["unit"], r["kind"], r["bin"], r["ctx_idx"]) for r in got]
    assert len(keys) == len(set(keys))
    assert st.get_mining_run(rid)["stats"]["resumed_from"] == 20
    assert st.query("select count(*) as n from contexts")[0]["n"] == 40
    assert not list(tmp_path.glob(".s.db.mine-*"))                     # checkpoint removed when done


def test_rerun_of_a_finished_mine_is_a_noop(tiny_llama, corpus, mined_llama, monkeypatch):
    st, rid = mined_llama
    before = st.count_records(rid)
    monkeypatch.setattr(miner_mod, "_after_batch", lambda n: pytest.fail("a finished run was mined again"))
    assert mine(tiny_llama, st, corpus, n_tokens=N_TOKENS, units="both", **ARGS) == rid
    assert st.count_records(rid) == before
    assert find_run(st, "tiny-llama", unit="L1/H2").id == rid
    assert find_run(st, "tiny-llama", context_len=64) is None


def test_load_exemplars_needs_no_tokenizer(mined_llama):
    """In a fresh interpreter where transformers cannot even be imported."""
    st, rid = mined_llama
    code = ("import sys; sys.modules['transformers'] = None; sys.modules['tokenizers'] = None\n"
            "from autointerp.store import Store\nfrom autointerp.mine.records import load_exemplars\n"
            f"ex = load_exemplars(Store({str(st.path)!r}, readonly=True), {rid!r}, 'L1/N3')\n"
            "print(len(ex.top), ex.top[0].tokens[0], len(ex.promoted))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n_top, _tok, n_prom = out.stdout.split()
    assert n_top == "4" and n_prom == "10"


def test_mine_cli(tiny_llama, corpus, tmp_path):
    from click.testing import CliRunner

    from autointerp.cli import _load_commands, cli

    _load_commands()
    mdir = tmp_path / "tiny"
    tiny_llama.model.save_pretrained(mdir)
    tiny_llama.tokenizer.save_pretrained(mdir)
    db = tmp_path / "s.db"
    args = ["mine", "--model", str(mdir), "--device", "cpu", "--corpus", corpus, "--tokens", "320", "--context-len", "16",
            "--layers", "0-1", "--top-k", "3", "--batch-size", "8", "--store", str(db), "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_tokens"] == 320 and out["n_units"] == 2 * 96 and out["layers"] == [0, 1]
    assert out["records"]["top"] == 2 * 96 * 3
    r2 = CliRunner().invoke(cli, args)
    assert json.loads(r2.stdout)["run_id"] == out["run_id"]


def test_failed_run_is_marked_failed_then_resumes(tiny_gpt2, tmp_path):
    """A corpus that breaks mid-stream: the run is 'failed' (with the error), not left 'running';
    once the corpus is fixed, the same command finishes it."""
    from autointerp.errors import DatasetError

    p = tmp_path / "c.jsonl"
    good = [json.dumps({"text": " ".join(random.Random(i).choice(WORDS) for _ in range(40))}) for i in range(12)]
    p.write_text("\n".join(good[:6] + ['{"text": broken'] + good[6:]) + "\n")
    st = Store(tmp_path / "s.db")
    with pytest.raises(DatasetError, match=r"c\.jsonl:7: not valid JSON"):
        mine(tiny_gpt2, st, str(p), n_tokens=16 * 30, **ARGS)
    rows = st.query("select id, status, stats_json from mining_runs")
    assert len(rows) == 1 and rows[0]["status"] == "failed" and "not valid JSON" in rows[0]["stats_json"]
    assert find_run(st, tiny_gpt2.spec) is None
    p.write_text("\n".join(good) + "\n")          # fixed (a new file stamp: a new corpus id, a new run)
    rid = mine(tiny_gpt2, st, str(p), n_tokens=16 * 10, **ARGS)
    assert st.get_mining_run(rid)["status"] == "done"


def test_context_len_over_the_models_maximum_is_refused_before_writing(tiny_gpt2, corpus, tmp_path):
    from autointerp.errors import UsageError

    assert tiny_gpt2.max_context == 64
    st = Store(tmp_path / "s.db")
    before = st.counts()
    with pytest.raises(UsageError, match="longer than the model's maximum context of 64"):
        mine(tiny_gpt2, st, corpus, n_tokens=1024, context_len=65, progress=False)
    with pytest.raises(UsageError, match="at least 1"):
        mine(tiny_gpt2, st, corpus, n_tokens=-3, progress=False)
    assert st.counts() == before


def test_parse_layers_refuses_an_empty_list():
    from autointerp.errors import UsageError

    assert parse_layers(None, 4) == [0, 1, 2, 3] and parse_layers("all", 4) == [0, 1, 2, 3]
    for bad in ("", ",", " , "):
        with pytest.raises(UsageError, match="no layers"):
            parse_layers(bad, 4)


def test_nonneg_stats_update_equals_the_general_one():
    """SAE latents take Stats.update_nonneg (no copy of the sliced batch, min only where a unit
    never hit 0); it must give what the general update gives on the same positions, for
    always-on, dead and ordinary units, with and without a BOS position left out."""
    import torch

    from autointerp.mine.state import Stats

    g = torch.Generator().manual_seed(0)
    for fp in (0, 1):
        a, b = Stats(50, "cpu"), Stats(50, "cpu")
        for _ in range(4):
            z = torch.randn(3, 7, 50, generator=g).relu()
            z[:, :, :3] = torch.rand(3, 7, 3, generator=g) + 0.1     # always on: min > 0
            z[:, :, 3:6] = 0                                          # dead
            x = z[:, fp:, :]
            a.update(x, x.amax(1))
            b.update_nonneg(z, fp, x.amax(1))
        assert a.n == b.n == 4 * 3 * (7 - fp)
        for k in ("mean", "m2", "max", "min", "pos"):
            assert torch.allclose(getattr(a, k).double(), getattr(b, k).double(), atol=1e-6), k
        assert float(b.min[0]) > 0.1 - 1e-6 and float(b.min[10]) == 0.0 and int(b.pos[4]) == 0
