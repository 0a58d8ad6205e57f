"""Edge-level circuits: the graph, EAP against exact edge patching on a planted circuit, circuit
runs, GQA (a k/v edge into one query head changes only that head), pruning, ACDC, store, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tinykit import run_cli, save_model_dir
import torch

from autointerp.errors import AutointerpError, DatasetError, UsageError
from autointerp.patching.core import prepare
from autointerp.patching.edge_search import (acdc, auto_circuit_json, check_target, faithfulness_of, find_circuit,
                                             prune_to_target, rank_check)
from autointerp.patching.edges import (EdgeGraph, circuit_logit_diff, eap_scores, exact_edge_scores, spearman)
from autointerp.tasks.items import Dataset, PairItem

from investigate.toy import toy_items

from .helpers import items as tiny_items

PLANTED = ("L0/H0 -> L1/H0:k", "L1/H0 -> logits")


@pytest.fixture(scope="module")
def toy():
    from tinykit import induction_gpt2

    return induction_gpt2(noise=0.3, spec="toy-induction")


@pytest.fixture(scope="module")
def toy_pairs():
    return [PairItem(**d) for d in toy_items(8, seed=1)]


@pytest.fixture(scope="module")
def toy_scores(toy, toy_pairs):
    return eap_scores(toy, toy_pairs), exact_edge_scores(toy, toy_pairs)


def test_graph_counts_names_and_order():
    g = EdgeGraph(2, 4, 2)
    # L0 heads: 12 receivers x embed; L0 MLP: embed + 4 heads; L1 heads: 12 x (embed, 4 heads, mlp0);
    # L1 MLP: embed + 5 + 4 heads; logits: all 11 senders
    assert g.n_edges == 12 + 5 + 72 + 10 + 11
    names = g.names()
    assert len(set(names)) == g.n_edges
    assert "L0/H0 -> L1/H3:k" in names and "blocks.1.mlp.out -> logits" in names
    assert "L1/H0 -> blocks.1.mlp.out" in names and "embed -> L0/H2:v" in names
    assert "L1/H0 -> L1/H1:q" not in names and "blocks.1.mlp.out -> L1/H0:q" not in names
    assert g.parse_edge(" l0/h0->L1/H3:K ") == g.parse_edge("L0/H0 -> L1/H3:k")
    # an MLP named in TransformerLens' spelling is the same node
    assert g.parse_edge("L1/H0 -> blocks.1.hook_mlp_out") == g.parse_edge("L1/H0 -> blocks.1.mlp.out")
    assert g.kv_head(3) == 1 and g.kv_head(1) == 0
    for bad, msg in (("L0/H9 -> logits", "unknown sender"), ("L0/H0 -> L1/H0:x", "unknown receiver"),
                     ("L1/H0 -> L0/H0:q", "not before"), ("L0/H0 logits", "SENDER -> RECEIVER")):
        with pytest.raises(UsageError, match=msg):
            g.parse_edge(bad)


def test_eap_into_logits_matches_exact_and_planted_edges_on_top(toy, toy_scores):
    eap, ex = toy_scores
    g = eap.graph
    logit_edges = [e for e, (s, r) in enumerate(g.edges) if g.receivers[r].part == "logits"]
    rho = spearman(eap.scores[logit_edges], ex.scores[logit_edges])
    assert rho is not None and rho >= 0.8
    best = max(logit_edges, key=lambda e: abs(eap.scores[e]))
    assert g.edge_name(best) == "L1/H0 -> logits"
    assert ex.scores[best] < -0.9                          # the planted path carries the whole gap
    # exactly: the planted edges are the top of the exact ranking over all edges (with the
    # edge feeding the previous-token head its token, which the key path needs)
    top = {g.edge_name(e) for e in ex.ranked()[:3]}
    assert set(PLANTED) <= top
    assert eap.settings["forwards"] == 2 and eap.settings["backwards"] == 1   # one batch: 3 passes


def test_circuit_runs_match_clean_corrupt_and_single_edges(toy, toy_pairs, toy_scores):
    _, ex = toy_scores
    g = ex.graph
    data = prepare(toy, toy_pairs, 16)
    none = circuit_logit_diff(toy, data, torch.zeros(g.n_edges, dtype=torch.bool), g)
    allp = circuit_logit_diff(toy, data, torch.ones(g.n_edges, dtype=torch.bool), g)
    assert none == pytest.approx(ex.clean_logit_diff, rel=1e-4)
    assert allp == pytest.approx(ex.corrupt_logit_diff, rel=1e-3, abs=1e-3)
    gap = ex.clean_logit_diff - ex.corrupt_logit_diff
    for name in (*PLANTED, "embed -> L1/H0:v", "L0/H2 -> blocks.1.mlp.out", "embed -> L0/H1:q"):
        e = g.edge_index[g.parse_edge(name)]
        p = torch.zeros(g.n_edges, dtype=torch.bool)
        p[e] = True
        eff = (circuit_logit_diff(toy, data, p, g) - ex.clean_logit_diff) / gap
        assert eff == pytest.approx(ex.scores[e], abs=1e-4), name


def _gqa_model(write_head: int):
    """1-layer Llama, 4 query heads in 2 kv groups; only `write_head` writes to the residual; MLP off."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from autointerp.models import HookedModel
    from tinykit import tiny_tokenizer

    torch.manual_seed(1)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=1, pad_token_id=1)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        dh = 8
        W = m.model.layers[0].self_attn.o_proj.weight           # [d, H*dh]
        for h in range(4):
            if h != write_head:
                W[:, h * dh:(h + 1) * dh] = 0
        m.model.layers[0].mlp.down_proj.weight.zero_()
        m.model.layers[0].self_attn.q_proj.weight.mul_(4)       # sharp enough patterns to matter
    m.requires_grad_(False)
    return HookedModel(m, tok, spec=f"gqa-{write_head}")


@pytest.mark.parametrize("ch", ["k", "v"])
def test_gqa_kv_edge_changes_only_its_query_head(ch):
    hm = _gqa_model(write_head=1)              # heads 0 and 1 share kv head 0
    its = tiny_items(4)
    edges = [f"embed -> L0/H0:{ch}", f"embed -> L0/H1:{ch}"]
    ex = exact_edge_scores(hm, its, edges)
    eap = eap_scores(hm, its)
    g = ex.graph
    e0, e1 = (g.edge_index[g.parse_edge(n)] for n in edges)
    assert abs(ex.scores[e1]) > 1e-3                 # head 1 writes: its own k/v input matters
    assert ex.scores[e0] == pytest.approx(0.0, abs=1e-6)    # head 0 shares the kv head, writes nothing
    assert eap.scores[e0] == pytest.approx(0.0, abs=1e-6) and abs(eap.scores[e1]) > 1e-4
    data = prepare(hm, its, 16)
    p = torch.zeros(g.n_edges, dtype=torch.bool)
    p[e1] = True                                     # the layer-by-layer circuit run agrees with exact
    got = (circuit_logit_diff(hm, data, p, g) - ex.clean_logit_diff) / (ex.clean_logit_diff - ex.corrupt_logit_diff)
    assert got == pytest.approx(ex.scores[e1], rel=1e-3, abs=1e-4)


def test_eap_matches_exact_on_a_random_llama_to_first_order(tiny_llama):
    its = tiny_items()
    eap = eap_scores(tiny_llama, its)
    ig = eap_scores(tiny_llama, its, method="eap-ig", steps=3)
    ex = exact_edge_scores(tiny_llama, its)
    assert spearman(eap.scores, ex.scores) > 0.8           # a smooth random model: near linear
    assert spearman(ig.scores, ex.scores) > 0.8
    assert ig.settings["forwards"] == 1 + 3 and ig.settings["backwards"] == 3


def test_prune_reaches_target_and_curve_is_measured(toy, toy_pairs, toy_scores):
    _, ex = toy_scores
    data = prepare(toy, toy_pairs, 16)
    c = prune_to_target(toy, data, ex, 0.8, points=8)
    assert c.faithfulness >= 0.8 and c.settings["reached_target"]
    k = len(c.edges)
    assert dict(c.curve)[k] == c.faithfulness
    if k > 1:
        assert dict(c.curve)[k - 1] < 0.8                  # bisected to the smallest size on the step
    assert dict(c.curve)[0] == pytest.approx(0.0, abs=1e-3)
    assert set(PLANTED) <= set(c.edge_names())
    f = faithfulness_of(toy, data, ex.graph, c.edges, ex.clean_logit_diff, ex.corrupt_logit_diff)
    assert f == pytest.approx(c.faithfulness, abs=1e-5)


def test_acdc_on_candidates_keeps_the_planted_path(toy, toy_pairs, toy_scores):
    _, ex = toy_scores
    data = prepare(toy, toy_pairs, 16)
    cand = ex.ranked()[:10]
    c = acdc(toy, data, ex.graph, tau=0.05, candidates=cand, clean=ex.clean_logit_diff, corrupt=ex.corrupt_logit_diff)
    assert set(PLANTED) <= set(c.edge_names())
    assert len(c.edges) < 10 and c.faithfulness > 0.5


def test_bad_input_is_one_clear_error(toy, toy_pairs):
    for t in (0, 1.5, -0.1):
        with pytest.raises(UsageError, match="--target"):
            check_target(t)
    with pytest.raises(UsageError, match="unknown receiver"):
        exact_edge_scores(toy, toy_pairs, ["L0/H0 -> L1/H7:q"])
    bad = [PairItem(clean="the cat sat on the mat", corrupt="the cat sat", answer=" mat", wrong=" park")]
    with pytest.raises(DatasetError, match="different token counts"):
        eap_scores(toy, bad)
    with pytest.raises(UsageError, match="unknown method"):
        eap_scores(toy, toy_pairs, method="acdc")


def test_rank_check_and_auto_circuit_export(toy, toy_pairs, toy_scores):
    r = rank_check(toy, toy_pairs)
    assert r["n_edges"] == 11 and r["spearman"] >= 0.8
    _, ex = toy_scores
    data = prepare(toy, toy_pairs, 16)
    c = prune_to_target(toy, data, ex, 0.8, points=6)
    doc = auto_circuit_json(c)
    assert "blocks.1.hook_k_input" in doc["prune_scores"] and "blocks.1.hook_resid_post" in doc["prune_scores"]
    k_in = np.array(doc["prune_scores"]["blocks.1.hook_k_input"])
    assert k_in.shape == (4, len(ex.graph.senders))
    src = {n["name"]: n["idx"] for n in doc["src_nodes"]}
    assert k_in[0, src["A0.0"]] == pytest.approx(ex.scores[ex.graph.edge_index[ex.graph.parse_edge(PLANTED[0])]], abs=1e-6)
    assert "A0.0->A1.0.K" in doc["circuit"] and "A1.0->Resid End" in doc["circuit"]


def test_find_circuit_stores_and_reuses(toy, toy_pairs, tmp_path):
    from autointerp.store import Store

    store = Store(tmp_path / "s.db")
    store.put_dataset("toy", "toy", "test", toy_pairs)
    ds = Dataset(name="toy", task="toy", source="test", items=toy_pairs)
    c = find_circuit(store, toy, ds, "eap", target=0.8, points=6)
    assert c.circuit_id is not None and not c.reused
    row = store.get_circuit(c.circuit_id)
    assert row["n_edges"] == len(c.edges) and row["n_edges_total"] == c.graph.n_edges
    assert [e["edge"] for e in row["edges"] if e["in_circuit"]] == c.edge_names()
    again = find_circuit(store, toy, ds, "eap", target=0.8, points=6)
    assert again.reused and again.edge_names() == c.edge_names() and again.faithfulness == c.faithfulness
    assert again.curve == c.curve
    assert [r["id"] for r in store.list_circuits("toy")] == [c.circuit_id]
    from autointerp.serve.app import render

    status, page = render(tmp_path / "s.db", f"/circuit/{c.circuit_id}")
    assert status == 200 and "L0/H0</a> " not in page
    assert 'href="/unit/toy-induction/L1/H0"' in page and "faithfulness" in page and ":k" in page
    assert render(tmp_path / "s.db", "/circuit/999")[0] == 404 and render(tmp_path / "s.db", "/circuit/x")[0] == 400


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory, toy):
    return save_model_dir(toy, tmp_path_factory.mktemp("toy-model"))


def _cli(capsys, *args):
    return run_cli(capsys, *args)


def _toy_dataset(tmp_path, toy_dir, toy_pairs, capsys) -> list[str]:
    """The toy pairs imported as dataset 'toy' into a fresh store; the CLI options that reach it."""
    store = str(tmp_path / "s.db")
    f = tmp_path / "toy.jsonl"
    f.write_text("".join(json.dumps({"clean": p.clean, "corrupt": p.corrupt, "answer": p.answer, "wrong": p.wrong})
                         + "\n" for p in toy_pairs))
    base = ["--model", str(toy_dir), "--device", "cpu", "--store", store]
    code, out, err = _cli(capsys, "pairs", "--import", str(f), "--name", "toy", "--margin", "-1e9", *base)
    assert code == 0, err
    return base


def test_cli_circuit(tmp_path, toy_dir, toy_pairs, capsys):
    base = _toy_dataset(tmp_path, toy_dir, toy_pairs, capsys)
    store = base[-1]
    exp = tmp_path / "c.json"
    code, out, err = _cli(capsys, "circuit", "--dataset", "toy", "--points", "6", "--export", str(exp), "--json", *base)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["faithfulness"] >= 0.8 and {e["edge"] for e in doc["edges"]} >= set(PLANTED)
    assert doc["curve"][0]["n_edges"] == 0 and json.loads(exp.read_text())["format"] == "auto-circuit"
    code, out, err = _cli(capsys, "circuit", "--show", str(doc["circuit_id"]), "--store", store)
    assert code == 0 and "L1/H0 -> logits" in out
    for args, msg in ((["--target", "1.5"], "--target"), (["--target", "0"], "--target"),
                      (["--dataset", "nope"], "no dataset 'nope'"), (["--show", "99"], "no stored circuit")):
        a = ["circuit", *(["--dataset", "toy"] if "--dataset" not in args and "--show" not in args else []), *args, *base]
        code, out, err = _cli(capsys, *a)
        assert code != 0 and msg in err and len(err.strip().splitlines()) == 1, (args, err)


def _svg(page: str):
    import re
    import xml.etree.ElementTree as ET

    m = re.search(r"<svg class=\"circuit-graph\".*?</svg>", page, re.S)
    assert m, "no circuit graph on the page"
    return ET.fromstring(m.group(0))


def test_circuit_page_draws_the_graph(toy, toy_pairs, tmp_path):
    """The stored circuit as an SVG graph: one node per head/MLP/embed/logits of its edges, one
    path per edge (width by |score|, colour by sign, q/k/v port labelled), head nodes linked."""
    from autointerp.serve.app import render
    from autointerp.serve.circuit import NEG, POS, circuit_page
    from autointerp.store import Store

    ns = "{http://www.w3.org/2000/svg}"
    store = Store(tmp_path / "s.db")
    store.put_dataset("toy", "toy", "test", toy_pairs)
    c = find_circuit(store, toy, Dataset(name="toy", task="toy", source="test", items=toy_pairs), "eap", points=6)
    row = store.get_circuit(c.circuit_id, in_circuit_only=True)
    status, page = render(tmp_path / "s.db", f"/circuit/{c.circuit_id}")
    assert status == 200
    svg = _svg(page)
    paths = {p.get("data-edge"): p for p in svg.iter(f"{ns}path")}
    assert set(paths) == set(c.edge_names()) and set(PLANTED) <= set(paths)
    nodes = {g.get("data-node"): g for g in svg.iter() if g.get("class") == "node"}
    want = {e["sender"] for e in row["edges"]} | {e["receiver"].split(":")[0] for e in row["edges"]}
    assert set(nodes) == want and {"L0/H0", "L1/H0", "logits"} <= want
    assert nodes["L1/H0"].tag == f"{ns}a" and nodes["L1/H0"].get("href") == "/unit/toy-induction/L1/H0"
    assert nodes["logits"].tag == f"{ns}g" and nodes["logits"].get("href") is None
    k = paths["L0/H0 -> L1/H0:k"]
    assert k.get("data-channel") == "k" and k.get("data-receiver") == "L1/H0"
    ports = {(t.get("data-node"), t.text) for t in svg.iter(f"{ns}text") if t.get("class") == "port"}
    assert ("L1/H0", "k") in ports
    assert all(ch for (_, ch) in ports) and {ch for (_, ch) in ports} <= {"q", "k", "v"}
    scores = {e["edge"]: e["score"] for e in row["edges"]}
    for name, p in paths.items():
        assert p.get("stroke") == (NEG if scores[name] < 0 else POS), name
        assert p.find(f"{ns}title").text.startswith(name)
    best = max(scores, key=lambda n: abs(scores[n]))
    assert float(paths[best].get("stroke-width")) == pytest.approx(4.0)
    assert all(float(p.get("stroke-width")) <= 4.0 for p in paths.values())
    # the receiver of the planted key edge is drawn above its sender (layers go up)
    y = {n: float(g.find(f".//{ns}rect").get("y")) for n, g in nodes.items()}
    assert y["embed"] > y["L0/H0"] > y["L1/H0"] > y["logits"]

    # many edges: capped, said so; everything from the store escaped (the SVG still parses)
    many = [{"edge": f"L0/H{h % 4} -> L1/H{h // 4 % 4}:{'qkv'[h % 3]}", "sender": f"L0/H{h % 4}",
             "receiver": f"L1/H{h // 4 % 4}:{'qkv'[h % 3]}", "score": -1.0 / (h + 1), "in_circuit": True, "rank": h}
            for h in range(150)]
    many[0]["edge"] = "<b>x</b>"
    bad = dict(row, edges=many + [{"edge": "e", "sender": "<script>", "receiver": "logits", "score": 0.1,
                                   "in_circuit": True, "rank": 150}], dataset="<i>ds</i>", model_id="m<&>")
    html = circuit_page(bad)
    assert "<script>" not in html and "<b>x</b>" not in html and "<i>ds</i>" not in html
    svg = _svg(html)
    assert len(list(svg.iter(f"{ns}path"))) == 100
    assert "the first 100 of 151 edges by rank are drawn" in html
    a = next(g for g in svg.iter(f"{ns}a") if g.get("data-node") == "L0/H0")
    assert a.get("href") == "/unit/m%3C%26%3E/L0/H0"


# ----------------------------------------------------------------------------- mean ablation


def test_sender_means_by_hand_end_aligned(tiny_llama):
    """Each sender's mean over the clean and corrupt prompts, per position counted back from the
    final token; prompts of different lengths in different batches (the Llama has no o_proj bias)."""
    from autointerp.core.hooks import act_name
    from autointerp.patching.edges import sender_means

    its = tiny_items()                                     # lengths 5 to 14 tokens
    data = prepare(tiny_llama, its, 2)
    means = sender_means(tiny_llama, data)
    g = EdgeGraph.of(tiny_llama)
    assert tuple(means.shape) == (len(g.senders), data.max_len, tiny_llama.d_model)
    h = g.sender_index["L1/H2"]
    rows: dict[int, list] = {}
    for it in its:
        for text in (it.clean, it.corrupt):
            ids, _ = tiny_llama.tokenize([text])
            run = tiny_llama.forward(ids, cache=[act_name("attn.z", 1), act_name("resid_pre", 0)], return_logits=False)
            out = run.cache[act_name("attn.z", 1)][0, :, 2] @ tiny_llama.W_O(1)[2]       # [p, d]
            emb = run.cache[act_name("resid_pre", 0)][0]
            n = ids.shape[1]
            for t in range(n):
                rows.setdefault(n - 1 - t, []).append((out[t], emb[t]))
    for r, vals in rows.items():
        assert torch.allclose(means[h, r], torch.stack([v[0] for v in vals]).mean(0).float(), atol=1e-5), r
        assert torch.allclose(means[0, r], torch.stack([v[1] for v in vals]).mean(0).float(), atol=1e-5), r
    assert len({len(v) for v in rows.values()}) > 1         # the rows really average different prompt sets


def test_mean_ablation_empty_and_full_circuits(toy, toy_pairs):
    """The full circuit has faithfulness 1 under both ablations; the empty circuit under mean
    ablation is the model whose logits read the mean final residual: computed by hand."""
    from autointerp.core.hooks import act_name
    from autointerp.patching.edge_search import ablated_logit_diff
    from autointerp.patching.edges import sender_means

    data = prepare(toy, toy_pairs, 3)
    g = EdgeGraph.of(toy)
    means = sender_means(toy, data)
    base = ablated_logit_diff(toy, data, g, means)
    # by hand: with every edge into the logits mean-ablated, the final norm reads the mean over
    # all 2N prompts of the last layer's residual at the final token (biases are constants)
    last = act_name("resid_post", toy.n_layers - 1)
    finals = []
    for it in toy_pairs:
        for text in (it.clean, it.corrupt):
            ids, _ = toy.tokenize([text])
            finals.append(toy.forward(ids, cache=[last], return_logits=False).cache[last][0, -1])
    logits = toy.unembed(toy.ln_final(torch.stack(finals).mean(0)))
    hand = np.mean([float(logits[toy.tokenizer.encode(it.answer)[-1]] - logits[toy.tokenizer.encode(it.wrong)[-1]])
                    for it in toy_pairs])
    assert base == pytest.approx(hand, abs=1e-4)
    ex = exact_edge_scores(toy, toy_pairs, [0])
    clean, corrupt = ex.clean_logit_diff, ex.corrupt_logit_diff
    assert abs(base - corrupt) > 0.1                       # mean ablation is not the corrupt run
    everything = range(g.n_edges)
    assert faithfulness_of(toy, data, g, everything, clean, corrupt) == pytest.approx(1.0, abs=1e-4)
    assert faithfulness_of(toy, data, g, everything, clean, corrupt, means=means) == pytest.approx(1.0, abs=1e-4)
    assert faithfulness_of(toy, data, g, [], clean, corrupt, means=means) == pytest.approx(0.0, abs=1e-6)
    # one edge mean-ablated: the circuit run agrees with the single-edge patch machinery fed
    # (mean - clean) as the delta
    from autointerp.patching.edges import _aligned_means, _patched_ld, _sender_cache_names, _sender_outputs
    from autointerp.patching.core import run_ld

    for name in ("L0/H0 -> L1/H0:k", "L1/H0 -> logits", "embed -> blocks.1.mlp.out"):
        e = g.edge_index[g.parse_edge(name)]
        s, r = g.edges[e]
        p = torch.zeros(g.n_edges, dtype=torch.bool)
        p[e] = True
        got = circuit_logit_diff(toy, data, p, g, means=means)
        tot = 0.0
        for b in data:
            nL = toy.n_layers
            qkv = [act_name(f"attn.{c}", L) for L in range(nL) for c in "qkv"]
            _, crun = run_ld(toy, b.clean, b, cache=_sender_cache_names(nL) + qkv + [last])
            e0 = act_name("resid_pre", 0)
            D = (_aligned_means(means, b) - _sender_outputs(toy, crun.cache, crun.cache[e0]))[s]
            tot += float(_patched_ld(toy, g, g.receivers[r], D, b.clean, b, 1, crun.cache).double().sum())
        assert got == pytest.approx(tot / data.n_items, abs=1e-4), name


def test_mean_ablation_circuit_found_stored_and_shown(toy, toy_pairs, tmp_path):
    from autointerp.serve.app import render
    from autointerp.store import Store

    store = Store(tmp_path / "s.db")
    store.put_dataset("toy", "toy", "test", toy_pairs)
    ds = Dataset(name="toy", task="toy", source="test", items=toy_pairs)
    c = find_circuit(store, toy, ds, "eap", target=0.8, points=6, ablation="mean")
    cc = find_circuit(store, toy, ds, "eap", target=0.8, points=6)
    assert c.circuit_id != cc.circuit_id and c.ablation == "mean" and cc.ablation == "corrupt"
    assert c.faithfulness >= 0.8 and dict(c.curve)[0] == 0.0 and set(PLANTED) <= set(c.edge_names())
    base = c.settings["baseline_logit_diff"]
    assert base == c.baseline_logit_diff != pytest.approx(c.corrupt_logit_diff, abs=0.1)
    data = prepare(toy, toy_pairs, 16)
    from autointerp.patching.edges import sender_means

    f = faithfulness_of(toy, data, c.graph, c.edges, c.clean_logit_diff, c.corrupt_logit_diff,
                        means=sender_means(toy, data))
    assert f == pytest.approx(c.faithfulness, abs=1e-4)      # the stored figure is what running it gives
    row = store.get_circuit(c.circuit_id)
    assert row["ablation"] == "mean" and store.get_circuit(cc.circuit_id)["ablation"] == "corrupt"
    assert auto_circuit_json(c)["ablation"] == "mean" and auto_circuit_json(cc)["ablation"] == "corrupt"
    again = find_circuit(store, toy, ds, "eap", target=0.8, points=6, ablation="mean")
    assert again.reused and again.ablation == "mean" and again.edge_names() == c.edge_names()
    assert {r["id"]: r["ablation"] for r in store.list_circuits("toy")} == {c.circuit_id: "mean", cc.circuit_id: "corrupt"}
    status, page = render(tmp_path / "s.db", f"/circuit/{c.circuit_id}")
    assert status == 200 and "mean ablation" in page and f"every edge mean-ablated {base:.3f}" in page
    with pytest.raises(UsageError, match="unknown --ablation 'zero'"):
        find_circuit(store, toy, ds, "eap", ablation="zero")


def test_cli_circuit_ablation(tmp_path, toy_dir, toy_pairs, capsys):
    base = _toy_dataset(tmp_path, toy_dir, toy_pairs, capsys)
    store = base[-1]
    code, out, err = _cli(capsys, "circuit", "--dataset", "toy", "--points", "6", "--ablation", "mean", "--json", *base)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ablation"] == "mean" and doc["faithfulness"] >= 0.8 and doc["curve"][0]["faithfulness"] == 0.0
    assert doc["baseline_logit_diff"] != doc["corrupt_logit_diff"]
    code, out, err = _cli(capsys, "circuit", "--show", str(doc["circuit_id"]), "--store", store)
    assert code == 0 and "(mean ablation)" in out
    code, out, err = _cli(capsys, "circuit", "--dataset", "toy", "--ablation", "zero", *base)
    assert code != 0 and "--ablation" in err and "'zero'" in err and len(err.strip().splitlines()) == 1, err


def test_acdc_under_mean_ablation_keeps_the_planted_path(toy, toy_pairs, tmp_path):
    from autointerp.store import Store

    store = Store(tmp_path / "s.db")
    store.put_dataset("toy", "toy", "test", toy_pairs)
    ds = Dataset(name="toy", task="toy", source="test", items=toy_pairs)
    # (under mean ablation the top 12 mean-scored edges are needed: the heads' position inputs too)
    c = find_circuit(store, toy, ds, "acdc", tau=0.05, candidates=20, ablation="mean")
    assert c.ablation == "mean" and set(PLANTED) <= set(c.edge_names()) and len(c.edges) < 20
    data = prepare(toy, toy_pairs, 16)
    from autointerp.patching.edges import sender_means

    f = faithfulness_of(toy, data, c.graph, c.edges, c.clean_logit_diff, c.corrupt_logit_diff,
                        means=sender_means(toy, data))
    assert f == pytest.approx(c.faithfulness, abs=1e-4) and f > 0.8
    assert c.corrupt_logit_diff != c.baseline_logit_diff


@pytest.mark.parametrize("ablation", ["corrupt", "mean"])
def test_circuit_run_starting_at_each_layer_is_the_full_forward_one(tiny_llama, monkeypatch, ablation):
    """circuit_logit_diff runs each layer from its resid_pre (start_at_layer): the same value as
    running blocks 0..L-1 too and replacing their output, for a random mask on a 3-layer GQA Llama."""
    from autointerp.patching.edges import sender_means

    hm = tiny_llama
    data = prepare(hm, tiny_items(), 3)
    g = EdgeGraph.of(hm)
    means = sender_means(hm, data) if ablation == "mean" else None
    p = torch.rand(g.n_edges, generator=torch.Generator().manual_seed(0)) < 0.5
    new = circuit_logit_diff(hm, data, p, g, means=means)
    real = hm.forward
    starts = []

    def full_forward(*args, start_at_layer=None, resid=None, hooks=None, **kw):
        hooks = dict(hooks or {})
        if start_at_layer is not None:
            starts.append(start_at_layer)
            hooks[f"blocks.{start_at_layer}.resid_pre"] = lambda v, x=resid: x.to(v.dtype)
        return real(*args, hooks=hooks, **kw)

    monkeypatch.setattr(hm, "forward", full_forward)
    old = circuit_logit_diff(hm, data, p, g, means=means)
    assert set(starts) == set(range(hm.n_layers))
    assert new == pytest.approx(old, rel=1e-5, abs=1e-5)
    assert new != pytest.approx(circuit_logit_diff(hm, data, torch.zeros_like(p), g, means=means), abs=1e-3)
