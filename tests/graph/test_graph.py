"""Attribution graphs on tiny models with transcoders trained in the test: the completeness
identity holds exactly before pruning, a hand-computed edge matches, pruning keeps the stated
influence share, and bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch

from autointerp.errors import UsageError
from autointerp.graph import build_graph
from autointerp.graph.prune import find_threshold
from autointerp.mine.sae_train import train_transcoders
from autointerp.models.sae import SAEError
from autointerp.models.transcoders import TranscoderSet, model_fingerprint

from tinykit import run_cli_lines, save_model_dir, word_corpus

CTX = 32
PROMPT = "when mary and john went to the store john gave a drink to"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus") / "c.txt", 120)


def _tset(hm, corpus, layers=(0, 1, 2), skip=False):
    tcs, rep = train_transcoders(hm, list(layers), 64, l1=0.2, n_tokens=CTX * 32, corpus=corpus, context_len=CTX,
                                 minibatch=64, lr=3e-3, eval_contexts=8, skip=skip, name="tc")
    return TranscoderSet(name="tc", model=hm.spec, by_layer=tcs, report=rep, fingerprint=model_fingerprint(hm))


@pytest.fixture(scope="module")
def llama_set(tiny_llama, corpus):
    return _tset(tiny_llama, corpus)


@pytest.mark.parametrize("which", ["llama", "gpt2-skip-partial"])
def test_completeness_identity_is_exact_before_pruning(which, tiny_llama, tiny_gpt2, llama_set, corpus):
    hm, ts = (tiny_llama, llama_set) if which == "llama" else (tiny_gpt2, _tset(tiny_gpt2, corpus, (0, 2), skip=True))
    g = build_graph(hm, ts, PROMPT, max_logits=3)
    d = g.direct
    n_act = g.n_active
    assert n_act > 0 and len(d["contributions"]) == n_act + hm.n_layers * g.P + g.P   # every node, unpruned
    total = d["bias_terms"] + sum(c["contribution"] for c in d["contributions"])
    assert d["raw_logit"] == pytest.approx(total, rel=1e-3, abs=1e-5)
    assert d["relative_error"] < 1e-3
    # the raw logit is the real model's (not the replacement's), and the replacement reproduces it
    assert d["raw_logit"] == pytest.approx(float(hm.forward(torch.tensor([g.token_ids])).logits[0, -1, d["target_id"]]),
                                           abs=1e-5)
    if which != "llama":   # layer 1 has no transcoder: one error node per position, which carries its whole MLP
        assert sorted({c["layer"] for c in d["contributions"] if c["kind"] == "latent"}) == [0, 2]
        assert sum(1 for c in d["contributions"] if c["kind"] == "error" and c["layer"] == 1) == g.P
    # each logit row of the adjacency holds the same direct contributions (for the selected latents)
    A = g.adjacency
    row = A[g.n_nodes - len(g.logits)]
    by_key = {(c["layer"], c["pos"], c["latent"]): c["contribution"] for c in d["contributions"] if c["kind"] == "latent"}
    for j, (L, p, i, _) in enumerate(g.features):
        assert float(row[j]) == pytest.approx(by_key[(L, p, i)], abs=1e-6)
    # a DAG: a latent gets input only from earlier layers (or the embedding / errors of earlier layers)
    for j, (L, p, i, _) in enumerate(g.features):
        for k in torch.nonzero(A[j]).flatten().tolist():
            n = g.node(k)
            assert n["kind"] == "embedding" or n["layer"] < L and n["pos"] <= p


def test_a_last_layer_latent_edge_into_the_logit_is_the_hand_computed_one(tiny_llama, llama_set):
    """Last layer, last position: nothing but the final RMSNorm (frozen scale) and the unembedding lie
    between the latent and the logit: a * sum_k W_dec[i,k] w_k s W_U[t,k]."""
    hm, ts = tiny_llama, llama_set
    g = build_graph(hm, ts, PROMPT, max_logits=1)
    L, P = hm.n_layers - 1, g.P
    ids = torch.tensor([g.token_ids])
    run = hm.forward(ids, cache=["blocks.2.resid_post"])
    x = run["blocks.2.resid_post"][0, -1].float()
    norm = hm.adapter.final_norm()
    s = torch.rsqrt(x.pow(2).mean() + norm.variance_epsilon)
    t = g.logits[0]["token_id"]
    u = norm.weight.float() * s * hm.adapter.lm_head().weight[t].float()
    last = [(j, f) for j, f in enumerate(g.features) if f[0] == L and f[1] == P - 1]
    assert last
    for j, (_, _, i, a) in last:
        want = a * float(ts.by_layer[L].W_dec[i] @ u)
        assert float(g.adjacency[-1, j]) == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_pruning_keeps_the_stated_influence_share(tiny_llama, llama_set):
    for share in (0.5, 0.8):
        g = build_graph(tiny_llama, llama_set, PROMPT, node_share=share, edge_share=0.9)
        pr = g.pruning
        inf = pr["node_influence"]
        assert pr["node_influence_share_at_threshold"] >= share
        # and it is the smallest such set: without its least influential kept node, the share falls below
        thr = find_threshold(inf, share)
        above = inf[inf > thr].sum() / inf.sum()
        assert float(above) < share + 1e-9 or float(thr) == 0
        kept = pr["edge_mask"]
        assert kept.sum() > 0 and (g.adjacency[kept] != 0).all()
        # pruned nodes carry no edges; kept latents have inputs and outputs
        nm = pr["node_mask"]
        assert not kept[~nm].any() and not kept[:, ~nm].any()
        F = g.n_features
        for j in torch.nonzero(nm[:F]).flatten().tolist():
            assert kept[j].any() and kept[:, j].any()
        s = g.scores
        assert 0 <= s["completeness_score"] <= 1 and 0 <= s["replacement_score"] <= 1


def test_graph_cli_json_and_one_line_errors(tiny_llama, llama_set, corpus, tmp_path, capsys):
    m = str(save_model_dir(tiny_llama, tmp_path / "model"))
    tdir = llama_set.save(tmp_path / "set")
    common = ["--model", m, "--device", "cpu", "--store", tmp_path / "s.db"]
    code, out, err = run_cli_lines(["graph", PROMPT, "--transcoders", tdir, "--target", "mary", "--json", "--validate", 4,
                                    *common], capsys)
    assert code == 0, err
    d = json.loads(out)
    c = d["completeness"]
    assert c["target"] == "mary" and len(d["logits"]) == 1
    assert c["raw_logit"] == pytest.approx(c["bias_terms"] + sum(x["contribution"] for x in c["contributions"]), rel=1e-3)
    assert d["nodes"] and d["edges"] and 0 <= d["scores"]["completeness_score"] <= 1
    v = d["validation"]
    assert v["k"] == 4 and v["mae"] is not None and len(v["latents"]) == 4
    from autointerp.store import Store
    stored = Store(tmp_path / "s.db", readonly=True).get_graph(d["graph_id"])
    assert stored["validation"] == v and stored["target"] == "mary"
    n_graphs = len(Store(tmp_path / "s.db", readonly=True).list_graphs())
    # export: circuit-tracer's graph JSON (frontend/graph_models.py: Model = metadata, qParams, nodes, links)
    code, _, err = run_cli_lines(["export", "--what", "graph", "--graph", d["graph_id"], "--out", tmp_path / "g.json",
                                  "--store", tmp_path / "s.db"], capsys)
    assert code == 0, err
    ex = json.loads((tmp_path / "g.json").read_text())
    assert set(ex) == {"metadata", "qParams", "nodes", "links"} and ex["metadata"]["prompt"] == PROMPT
    node_fields = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx",
                   "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}
    assert all(set(n) == node_fields for n in ex["nodes"])
    ids = [n["node_id"] for n in ex["nodes"]]
    assert len(ids) == len(set(ids)) == len(stored["nodes"]) - sum(1 for n in stored["nodes"] if not n["kept"])
    assert ex["links"] and all(lk["source"] in ids and lk["target"] in ids for lk in ex["links"])
    logit = [n for n in ex["nodes"] if n["feature_type"] == "logit"]
    assert len(logit) == 1 and logit[0]["is_target_logit"] and logit[0]["layer"] == str(tiny_llama.n_layers + 1)
    assert sorted(n["ctx_idx"] for n in ex["nodes"] if n["feature_type"] == "embedding") == list(range(len(d["tokens"])))
    code, _, err = run_cli_lines(["export", "--what", "graph", "--store", tmp_path / "s.db"], capsys)
    assert code == 2 and "needs --graph" in err[-1]
    other = tmp_path / "other"
    TranscoderSet(name="o", model="x", by_layer=llama_set.by_layer, fingerprint="0" * 16).save(other)
    long_prompt = " ".join(["the"] * 80)
    for args, msg in (([long_prompt, "--transcoders", tdir], "longer than"),
                      ([PROMPT, "--transcoders", other], "trained on another model"),
                      ([PROMPT, "--transcoders", tdir, "--target", "mary john"], "not one token"),
                      ([PROMPT, "--transcoders", tmp_path / "model"], "no transcoder set there")):
        code, _, err = run_cli_lines(["graph", *args, *common], capsys)
        err = [ln for ln in err if not ln.startswith("Loading weights")]
        assert code == 2 and len(err) == 1 and msg in err[0], err
    assert len(Store(tmp_path / "s.db", readonly=True).list_graphs()) == n_graphs      # nothing stored on bad input


def test_demeaned_logits_keep_completeness_and_change_only_the_logit_rows(tiny_llama, llama_set):
    """demean_logits=True attributes logit - mean logit (circuit-tracer's target, its W_U columns
    less their mean): the identity holds for that quantity, latent rows are untouched, and each
    logit row is the raw row less the row of the mean logit (the same for every target)."""
    hm, ts = tiny_llama, llama_set
    raw = build_graph(hm, ts, PROMPT, max_logits=2, max_feature_nodes=10 ** 6)
    dm = build_graph(hm, ts, PROMPT, max_logits=2, max_feature_nodes=10 ** 6, demean_logits=True)
    assert dm.features == raw.features and [r["token_id"] for r in dm.logits] == [r["token_id"] for r in raw.logits]
    real = hm.forward(torch.tensor([dm.token_ids])).logits[0, -1].float()
    d = dm.direct
    assert d["logit"] == "demeaned" and raw.direct["logit"] == "raw"
    assert d["raw_logit"] == pytest.approx(float(real[d["target_id"]] - real.mean()), abs=1e-5)
    assert d["relative_error"] < 1e-3
    F = dm.n_features
    assert torch.allclose(dm.adjacency[:F], raw.adjacency[:F])
    diff = raw.adjacency[-2:] - dm.adjacency[-2:]          # the mean logit's row, twice
    assert diff.abs().max() > 1e-4 and torch.allclose(diff[0], diff[1], atol=1e-5)
