"""Model diff (issue #17) on a planted difference: B = the hand-built induction GPT-2 with its
induction head's output zeroed. The diff must rank that head first (weights, head outputs, DLA,
patching), put repeated-text contexts at the top of the black-box diff, store it all in the new
tables, explain and score the top contexts, refuse mismatched architectures, and align
character spans of two different tokenizers exactly as computed by hand."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tinykit import WORDS, induction_gpt2

from autointerp.compare import (blackbox_diff, check_same_architecture, common_spans, is_repeat_context, span_sums,
                                strongest_heads, zero_head_outputs)
from autointerp.pipeline import DiffSettings, diff_models
from autointerp.errors import UsageError
from autointerp.patching import detect_heads
from autointerp.store import Store


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 documents of the tiny vocabulary; every third is a 12-word segment repeated 3 times."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(60):
        seg = [rng.choice(WORDS) for _ in range(12)]
        words = seg * 3 if i % 3 == 0 else [rng.choice(WORDS) for _ in range(36)]
        (d / f"{i:03d}.txt").write_text(" ".join(words))
    return str(d)


@pytest.fixture(scope="module")
def models():
    a = induction_gpt2(spec="toy-a")
    b = induction_gpt2(spec="toy-b")
    heads = strongest_heads(detect_heads(a, n_seqs=8, seq_len=12), "induction", k=1)
    assert heads == ["L1/H0"]                       # the head wiki finds the planted head
    zero_head_outputs(b, heads)
    return a, b


def test_character_spans_by_hand():
    text = "the cat sat."
    a = [(0, 3), (3, 7), (7, 11), (11, 12)]          # "the", " cat", " sat", "."
    b = [(0, 2), (2, 3), (4, 7), (8, 12)]            # "th", "e", "cat" (no space), "sat."
    spans = common_spans(text, a, b)
    assert [(s.start, s.end, s.text) for s in spans] == [(0, 4, "the"), (4, 8, " cat"), (8, 12, " sat.")]
    assert span_sums(spans, a, text, [-1.0, -2.0, -3.0, -4.0]) == [-1.0, -2.0, -7.0]
    assert span_sums(spans, b, text, [-0.5, -0.25, -2.0, -6.0]) == [-0.75, -2.0, -6.0]
    # a tokenisation that stops early: the unfinished last span is dropped
    assert [s.text for s in common_spans(text, a, b[:3])] == ["the", " cat"]


def test_rank_max_and_sum_by_hand():
    """max ranks a context by its largest Δ, sum by its total Δ (the log-likelihood ratio)."""
    from autointerp.compare.blackbox import _Acc

    lp_a = torch.zeros(4)
    deltas = {0: [-3.0, 0.0, 0.0, 0.5], 1: [-1.0, -1.0, -1.0, -1.0], 2: [0.2, 0.2, 0.2, 0.2]}
    order = {}
    for rank in ("max", "sum"):
        acc = _Acc("logp", top_k=3, n_random=0, seed=0, rank=rank)
        for i, d in deltas.items():
            acc.add(i, list("abcd"), [2, 5, 6, 7, 8], lp_a, lp_a + torch.tensor(d), None)
        res = acc.result("token", 12, 0.0)
        order[rank] = {sd: [r.ctx_idx for r in res.top[sd]] for sd in ("a_better", "b_better")}
        assert res.rank == rank and all(r.max_act == max(r.acts) for r in res.top["a_better"])
        if rank == "sum":
            assert res.scores["a_better"] == pytest.approx([4.0, 2.5, -0.8])
            assert res.scores["b_better"] == pytest.approx([0.8, -2.5, -4.0])
    assert order["max"] == {"a_better": [0, 1, 2], "b_better": [0, 2, 1]}
    assert order["sum"] == {"a_better": [1, 0, 2], "b_better": [2, 0, 1]}
    with pytest.raises(UsageError, match="--rank"):
        DiffSettings(rank="mean").check()


@pytest.mark.parametrize("rank", ["max", "sum"])
def test_both_ranks_put_repeated_text_on_top(models, corpus, rank):
    a, b = models
    bb = blackbox_diff(a, b, corpus, n_tokens=2048, context_len=32, top_k=10, n_random=2, rank=rank)
    top = bb.top["a_better"]
    assert sum(is_repeat_context(r) for r in top) >= 9 and sum(is_repeat_context(r) for r in bb.top["b_better"]) <= 2
    agg = max if rank == "max" else sum
    assert bb.scores["a_better"] == pytest.approx([agg(r.acts) for r in top], abs=1e-4)
    assert bb.scores["a_better"] == sorted(bb.scores["a_better"], reverse=True)


def test_span_mode_with_two_tokenizers(models, corpus):
    """Different tokenizers (a word-level and a copy whose vocabulary differs): span mode, and on
    one word per token both ways the spans are the words."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, decoders

    from autointerp.models import HookedModel

    a, _ = models
    vocab = {"<unk>": 0, "<eos>": 1, "<bos>": 2, **{w: i + 3 for i, w in enumerate(reversed(list(dict.fromkeys(WORDS))))}}
    tk = Tokenizer(tm.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", bos_token="<bos>")
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=32, n_layer=1, n_head=2)).eval()
    other = HookedModel(m, tok, spec="toy-other-tok")
    res = blackbox_diff(a, other, corpus, n_tokens=640, context_len=32, top_k=4, n_random=4)
    assert res.mode == "span" and res.summary["kl_a_b"] is None
    assert res.n_units > 0 and all(t.strip() in WORDS for r in res.top["b_better"] for t in r.tokens)
    with pytest.raises(UsageError, match="same architecture"):
        check_same_architecture(a, other)


def test_planted_difference_end_to_end(models, corpus, tmp_path):
    a, b = models
    store = Store(tmp_path / "d.db")
    s = DiffSettings(corpus=corpus, n_tokens=2048, context_len=32, act_tokens=256, top_k=12, n_random=12,
                     tasks=[], explain="baseline")
    res = diff_models(store, settings=s, hm_a=a, hm_b=b)
    assert res.mode == "token" and res.level == "components"
    assert res.side == "a_better"                     # A (with its induction head) is the better model
    top10 = res.blackbox.top["a_better"][:10]
    assert sum(is_repeat_context(r) for r in top10) >= 8
    assert res.blackbox.rank == s.rank and res.summary["rank"] == s.rank
    if s.rank == "sum":                               # a context's score is its total Δ log p, towards A
        for r, sc in zip(top10, res.blackbox.scores["a_better"]):
            assert sc == pytest.approx(sum(r.acts), abs=1e-3)
    assert res.summary["repeat_frac_top10_a_better"] >= 0.8 > res.summary["repeat_frac_top10_b_better"]
    for analysis in ("weight_head", "head_out", "dla", "patching"):
        assert res.components[analysis][0]["component"] == "L1/H0", analysis
    assert res.components["weight_head"][0]["value"] == pytest.approx(1.0)
    assert res.components["weight_head"][1]["value"] == 0.0
    assert res.components["patching"][0]["value"] == pytest.approx(1.0, abs=0.05)   # restores the whole gap
    assert abs(res.components["patching"][1]["value"]) < 0.05
    assert res.components["weight_tensor"][0]["component"] == "transformer.h.1.attn.c_proj.weight"
    # stored in the diff tables
    d = store.get_diff(res.id[:8])
    assert d["model_a"] == "toy-a" and d["components"]["patching"][0]["component"] == "L1/H0"
    assert {c["side"] for c in d["contexts"]} == {"a_better", "b_better", "random"}
    top = [c for c in d["contexts"] if c["side"] == "a_better"][0]
    assert s.metric == "clip" and max(-v for v in top["values"]["clip"]) == pytest.approx(top["score"], abs=1e-3)
    # the explanation: the baseline, scored on held-out contexts with the exact scorer and its control
    e = d["explanations"][0]
    assert e["side"] == "a_better" and e["explainer"] == "baseline"
    ex = {r["kind"]: r for r in e["scores"]}["simulation_exact"]
    assert ex["n"] > 0 and ex["control"] is not None
    # one explanation store: the side's explanation is an explanations row whose subject is the side,
    # and no unit's (unit reads and search do not see it)
    rows = store.query("select model_id, unit, layer, diff_id, side from explanations")
    assert rows == [{"model_id": None, "unit": None, "layer": None, "diff_id": res.id, "side": "a_better"}]
    assert store.search(None) == [] and store.db["scores"].count == len(e["scores"])
    # a re-run replaces the diff's rows, keeps its explanation (cache hit)
    res2 = diff_models(store, settings=s, hm_a=a, hm_b=b)
    assert res2.id == res.id and len(store.get_diff(res.id)["explanations"]) == 1
    # the viewer page
    from autointerp.serve.app import render

    store.close()
    status, html = render(tmp_path / "d.db", f"/diff/{res.id}")
    assert status == 200 and "L1/H0" in html and "where A is better than B" in html
    assert "rgba(30,136,229" in html                  # tokens where A is better, in blue
    assert "exact sim. r " in html                    # the side's scores, named by the scorer registry
    assert render(tmp_path / "d.db", "/diff/nosuchdiff")[0] == 404
    assert render(tmp_path / "d.db", "/diffs")[0] == 200


def test_llm_explanation_of_a_side(models, corpus, tmp_path):
    """The explain pipeline on a diff side with an LLM: simulation and exact scores with controls."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("explain_conftest", Path(__file__).parents[1] / "explain" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, b = models
    store = Store(tmp_path / "l.db")
    llm = mod.FakeLLM(replies=['"cat" and "dog"'], store=store)
    s = DiffSettings(corpus=corpus, n_tokens=1024, context_len=32, top_k=12, n_random=12, level="blackbox",
                     explain="llm", side="a_better")
    res = diff_models(store, settings=s, hm_a=a, hm_b=b, llm=llm)
    e = res.explanation
    assert e["llm"]["text"] == '"cat" and "dog"' and e["better"] == "toy-a"
    sc = e["llm"]["scores"]
    assert sc["simulation"]["n"] > 0 and sc["simulation"]["control"] is not None
    assert "simulation_exact" in e["baseline"]["scores"]
    assert not res.components                          # --level blackbox: no component analyses


def test_bad_input(models, tmp_path):
    a, b = models
    store = Store(tmp_path / "e.db")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UsageError, match="no text"):
        diff_models(store, settings=DiffSettings(corpus=str(empty), n_tokens=256, context_len=32, explain="none"),
                    hm_a=a, hm_b=b)
    with pytest.raises(UsageError, match="--metric"):
        DiffSettings(metric="nope").check()
    with pytest.raises(UsageError, match="--tasks"):
        DiffSettings(tasks=["nope"]).check()
    assert store.list_diffs() == []


def test_cli(models, corpus, tmp_path):
    from autointerp.compare import save_model

    a, b = models
    da, db = save_model(a, tmp_path / "A"), save_model(b, tmp_path / "B")
    run = lambda *args: subprocess.run([sys.executable, "-m", "autointerp", "diff", *map(str, args)],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    r = run(da, db, "--corpus", corpus, "--tokens", 1024, "--context-len", 32, "--act-tokens", 128,
            "--store", tmp_path / "c.db", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["components"]["weight_head"][0]["component"] == "L1/H0"
    assert out["blackbox"]["top"]["a_better"][0]["repeated_text"] is True
    r = run(da, tmp_path / "missing", "--store", tmp_path / "c.db")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "missing" in r.stderr
    r = run(da, db, "--metric", "bad", "--store", tmp_path / "c.db")
    assert r.returncode == 2


def test_llama_gqa_zeroed_head_is_found_and_patching_restores_it(tiny_llama, corpus):
    """On a random GQA Llama (W_O is a transposed view of o_proj): zeroing one head's output is
    found by the weight and head-output diffs, and patching that head back from A restores B
    to A exactly (effect 1), every other component less."""
    import copy

    from autointerp.compare import activation_diff, patch_diff, weight_diff
    from autointerp.models import HookedModel

    a = tiny_llama
    b = HookedModel(copy.deepcopy(a.model), a.tokenizer, spec="tiny-llama-b")
    zero_head_outputs(b, ["L1/H2"])
    assert float(a.W_O(1)[2].abs().sum()) > 0 and float(b.W_O(1)[2].abs().sum()) == 0
    assert weight_diff(a, b)["weight_head"][0]["component"] == "L1/H2"
    act = activation_diff(a, b, corpus, n_tokens=128, context_len=32)
    assert act["head_out"][0]["component"] == "L1/H2" and act["head_out"][0]["value"] == pytest.approx(1.0)
    assert act["attn_js"][0]["layer"] == 2           # only later layers' patterns move
    bb = blackbox_diff(a, b, corpus, n_tokens=256, context_len=32, top_k=4, n_random=2)
    rows, info = patch_diff(a, b, bb.top["a_better"][:4])
    assert rows[0]["component"] == "L1/H2" and rows[0]["value"] == pytest.approx(1.0, abs=1e-3)
    assert all(r["value"] < 0.999 for r in rows[1:]) and info["normalised"]
    some, info2 = patch_diff(a, b, bb.top["a_better"][:4], only=["L1/H2", "L0/H0", "blocks.2.mlp.out"])
    assert [r["component"] for r in some][0] == "L1/H2" and len(some) == 3 == info2["n_components"]
    assert some[0]["value"] == pytest.approx(rows[0]["value"])


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install -y chromium)")
def test_diff_page_in_browser(models, corpus, tmp_path):
    """The diff page in headless chromium: the contexts' tokens carry the Δ colours (blue: A better)."""
    import re
    import threading

    from autointerp.serve.app import make_server

    a, b = models
    store = Store(tmp_path / "v.db")
    res = diff_models(store, settings=DiffSettings(corpus=corpus, n_tokens=512, context_len=32, top_k=4, n_random=4,
                                                   level="blackbox", explain="none"), hm_a=a, hm_b=b)
    store.close()
    srv = make_server(tmp_path / "v.db", port=0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2000",
                            "--dump-dom", f"{base}/diff/{res.id[:10]}"], capture_output=True, text=True, timeout=120)
    finally:
        srv.shutdown()
    assert r.returncode == 0, r.stderr[-2000:]
    page = r.stdout
    assert "top contexts where A is better than B" in page and "toy-a" in page
    colours = {tuple(map(int, m)) for m in re.findall(
        r'<span class="tok"[^>]*style="background:\s*rgba\((\d+),\s*(\d+),\s*(\d+)', page)}
    assert (30, 136, 229) in colours and (255, 140, 0) in colours
