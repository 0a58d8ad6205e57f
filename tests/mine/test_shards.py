"""Mine once, explain anywhere: a mine split into corpus shards (`mine --shard i/n`, each its own
store) and merged (`autointerp merge`) equals one run over the whole corpus: the same run id and
settings, the same top / quantile / random / top_attn records (every byte), the same contexts,
logit effects, histograms, max, min and counts, and mean / std to float64 rounding. Neurons,
heads and SAE latents, on a tiny random Llama; shard boundaries that cut batches; a corpus with
repeated documents, so that many scores tie; and the TopK state against brute force."""

from __future__ import annotations

import random
import sqlite3

import pytest
import torch

from autointerp.mine import mine
from autointerp.mine.state import TopK
from autointerp.models.sae import SAE
from autointerp.store import Store

from tinykit import WORDS, run_cli, save_model_dir

ARGS = dict(context_len=16, top_k=4, n_quantiles=3, per_quantile=2, n_random=3, batch_size=5, progress=False)
N_CTX = 41


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Documents drawn from 6 distinct lines: many identical contexts, so many scores tie exactly."""
    rng = random.Random(1)
    lines = [" ".join(rng.choice(WORDS) for _ in range(15)) for _ in range(6)]
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text("".join(rng.choice(lines) + "\n" for _ in range(120)))
    return str(p)


@pytest.fixture(scope="module")
def sae(tiny_llama):
    g = torch.Generator().manual_seed(5)
    d, n = tiny_llama.d_model, 80
    s = SAE(architecture="standard", W_enc=torch.randn(d, n, generator=g) * 5, b_enc=torch.full((n,), -1.0),
            W_dec=torch.randn(n, d, generator=g) / 10, b_dec=torch.zeros(d), hook="blocks.1.resid_post", name="rnd")
    yield s
    if tiny_llama.saes.get(s.hook) is s:      # mining attached it to the session's model: leave it as found
        tiny_llama.detach_sae(s)


def _rows(path, sql):
    c = sqlite3.connect(path)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


def _same_run(single, merged, rid, kinds=("top", "quantile", "random", "top_attn")):
    q = "select unit, kind, bin, ctx_idx, max_act, acts, extra from records where run_id = ? order by unit, kind, bin, ctx_idx"
    a, b = _rows(single, q.replace("?", f"'{rid}'")), _rows(merged, q.replace("?", f"'{rid}'"))
    assert len(a) > 0 and a == b
    assert {r[1] for r in a} == set(kinds)
    q = f"select unit, layer, max_act, frac_active, hist_json, mean_act, std_act from unit_stats where run_id = '{rid}' order by unit"
    a, b = _rows(single, q), _rows(merged, q)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x[:5] == y[:5]                                   # max, frac_active, histogram: exact
        for u, v in zip(x[5:], y[5:]):                          # mean, std: float64 summation order
            assert (u is None and v is None) or abs(u - v) <= 1e-12 * max(1.0, abs(u))
    for q in ("select corpus_id, idx, token_ids, tokens_json from contexts order by corpus_id, idx",
              "select model_id, unit, promoted_json, suppressed_json from unit_logits order by model_id, unit",
              "select id, model_id, corpus_id, settings_json, n_done, status from mining_runs order by id"):
        assert _rows(single, q) == _rows(merged, q)


def test_sharded_mine_merges_to_the_single_run(tiny_llama, sae, corpus, tmp_path, capsys):
    kw = dict(ARGS, n_tokens=16 * N_CTX, units="both", saes=[sae])
    single = tmp_path / "single.db"
    rid = mine(tiny_llama, Store(single), corpus, **kw)
    parts = []
    for i in (2, 0, 1):                                         # any order of workers
        p = tmp_path / f"mine-{i}.db"
        srid = mine(tiny_llama, Store(p), corpus, shard=(i, 3), **kw)
        row = Store(p).get_mining_run(srid)
        assert row["status"] == "shard" and row["n_done"] == [13, 14, 14][i] and Store(p).count_records(srid) == {}
        assert row["settings"]["shard"]["run_id"] == rid
        parts.append(p)
    merged = tmp_path / "merged.db"
    code, out, err = run_cli(capsys, "merge", *parts, "--into", merged)
    assert code == 0, err
    assert f"mining run {rid}: 3 corpus shards, {N_CTX} contexts" in out
    _same_run(single, merged, rid)
    # ties: the corpus repeats its documents, so some unit has equal top scores on different contexts
    tied = _rows(merged, f"select count(*) from (select unit, max_act from records where run_id = '{rid}' and kind = 'top' "
                         "group by unit, max_act having count(*) > 1)")[0][0]
    assert tied > 0
    # a second merge adds nothing and leaves the run as it is
    code, out, err = run_cli(capsys, "merge", *parts, "--into", merged)
    assert code == 0 and "already merged" in out
    _same_run(single, merged, rid)


def test_merge_refuses_a_missing_shard_and_writes_nothing(tiny_llama, corpus, tmp_path, capsys):
    kw = dict(ARGS, n_tokens=16 * 12, layers=[0])
    p = tmp_path / "m0.db"
    mine(tiny_llama, Store(p), corpus, shard=(0, 2), **kw)
    target = tmp_path / "out.db"
    code, out, err = run_cli(capsys, "merge", p, "--into", target)
    assert code != 0 and "shard(s) 1/2 missing (have 0)" in err and len(err.strip().splitlines()) == 1
    assert not target.exists()


def test_shard_cli_needs_tokens_and_runs(tiny_llama, corpus, tmp_path, capsys):
    mdir = save_model_dir(tiny_llama, tmp_path / "tiny")
    base = ["mine", "--model", mdir, "--device", "cpu", "--corpus", corpus, "--context-len", "16", "--layers", "0",
            "--top-k", "3", "--batch-size", "4"]
    code, out, err = run_cli(capsys, *base, "--tokens", "0", "--shard", "0/2", "--store", tmp_path / "x.db")
    assert code != 0 and "--shard needs --tokens" in err and not (tmp_path / "x.db").exists()
    code, out, err = run_cli(capsys, *base, "--tokens", "160", "--shard", "2/2", "--store", tmp_path / "x.db")
    assert code != 0 and "bad --shard" in err
    stores = []
    for i in range(2):
        stores.append(tmp_path / f"s{i}.db")
        code, out, err = run_cli(capsys, *base, "--tokens", "160", "--shard", f"{i}/2", "--store", stores[-1])
        assert code == 0, err
        assert f"shard {i}/2 of run" in out and "no records until `autointerp merge`" in out
    code, out, err = run_cli(capsys, *base, "--tokens", "160", "--store", tmp_path / "single.db")
    assert code == 0, err
    code, out, err = run_cli(capsys, "merge", *stores, "--into", tmp_path / "m.db")
    assert code == 0, err
    rid = _rows(tmp_path / "single.db", "select id from mining_runs")[0][0]
    _same_run(tmp_path / "single.db", tmp_path / "m.db", rid, kinds=("top", "random"))


def _brute(scores: torch.Tensor, k: int) -> list[list[tuple[float, int]]]:
    """Per unit the top k (score, context) by score descending, then context ascending."""
    out = []
    for row in scores.tolist():
        items = sorted(((v, c) for c, v in enumerate(row) if v != float("-inf")), key=lambda t: (-t[0], t[1]))
        out.append(items[:k])
    return out


def _kept(t: TopK) -> list[list[tuple[float, int]]]:
    order, valid = t.sorted()
    return [[(float(t.val[u, s]), int(t.idx[u, s])) for s, ok in zip(order[u].tolist(), valid[u].tolist()) if ok]
            for u in range(t.val.shape[0])]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_topk_is_the_top_under_the_total_order_for_any_batches_and_merges(seed):
    g = torch.Generator().manual_seed(seed)
    n, N, k = 30, 90, 5
    scores = torch.randint(0, 4, (n, N), generator=g).float()   # heavy ties
    scores[torch.rand(n, N, generator=g) < 0.3] = float("-inf")  # and contexts that never qualify (inactive latents)
    rows = torch.arange(N, dtype=torch.float16)[None, :, None].expand(n, N, 2).clone()

    def run(lo, hi, bs):
        t = TopK(n, k, 2, "cpu")
        for a in range(lo, hi, bs):
            b = min(hi, a + bs)
            t.update(scores[:, a:b], torch.arange(a, b), lambda c, r, a=a: (rows[r, a + c], None))
        return t

    want = _brute(scores, k)
    assert _kept(run(0, N, 7)) == want
    assert _kept(run(0, N, 1)) == want
    merged = run(50, N, 3).merge(run(0, 20, 4)).merge(run(20, 50, 11))      # shards merged in any order
    assert _kept(merged) == want
    merged.canonical()
    for u in range(n):                                                      # rows travel with their context
        for s in range(k):
            if merged.idx[u, s] >= 0:
                assert merged.rows[u, s, 0].item() == merged.idx[u, s].item()


def test_latent_chunks_give_the_records_of_one_pass(tiny_llama, sae, corpus, tmp_path):
    """Wide SAEs in bounded memory: latents mined in chunks (one pass each) = one pass over all."""
    kw = dict(ARGS, n_tokens=16 * 30, units="latents", saes=[sae])
    one, chunked = tmp_path / "one.db", tmp_path / "chunked.db"
    rid = mine(tiny_llama, Store(one), corpus, **kw)
    rid2 = mine(tiny_llama, Store(chunked), corpus, latent_chunk=30, **kw)     # 80 latents: 3 passes (30, 30, 20)
    assert rid2 == rid
    _same_run(one, chunked, rid, kinds=("top", "quantile", "random"))
    a, b = (Store(x).get_mining_run(rid)["stats"] for x in (one, chunked))
    assert b["latent_passes"] == 3 and a["latents"] == b["latents"] and a["n_units"] == b["n_units"] == 80
