"""The CLI as a user runs it, on one store and a random-init GPT-2 saved as a model directory:
mine -> explain (baseline) -> a re-run that is a cache hit -> show / query / stats / export ->
diff against a copy with one head zeroed, in the same store. The diff side's explanation is an
explanations row too (schema v5); unit commands (query, stats, export, show) must not see it,
and the diff's JSON must carry it."""

import json
import random

import pytest
import torch
from tinykit import WORDS, save_model_dir, tiny_tokenizer

from autointerp.store import Store


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    from autointerp.compare import save_model, zero_head_outputs
    from autointerp.models import HookedModel

    d = tmp_path_factory.mktemp("flow")
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=2,
                     eos_token_id=1)
    hm = HookedModel(GPT2LMHeadModel(cfg).eval(), tok, spec="flow-a")
    a = save_model_dir(hm, d / "A")
    zero_head_outputs(hm, ["L1/H2"])
    b = save_model(hm, d / "B")
    corpus = d / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for i in range(140):
        (corpus / f"{i:03d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(40)))
    return {"a": str(a), "b": str(b), "corpus": str(corpus), "store": str(d / "s.db")}


def _json(r):
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_mine_explain_show_query_stats_export_then_diff_in_one_store(setup, cli):
    a, st = setup["a"], setup["store"]
    mined = _json(cli("mine", "--model", a, "--layers", "1", "--corpus", setup["corpus"], "--tokens", 4096,
                      "--context-len", 32, "--top-k", 20, "--quantiles", 4, "--store", st, "--json"))
    assert mined["layers"] == [1] and mined["n_units"] == 256 and mined["n_tokens"] == 4096

    ex = _json(cli("explain", "--model", a, "--unit", "l1/n3", "--explainer", "baseline", "--store", st, "--json"))
    assert ex["unit"] == "L1/N3" and ex["run_id"] == mined["run_id"] and ex["mined"] is False
    assert ex["explanation"] is None and ex["baseline"]["text"].startswith("the tokens")
    exact = ex["baseline"]["scores"]["simulation_exact"]
    assert exact["n"] > 0 and -1 <= exact["value"] <= 1 and exact["control"] is not None
    again = _json(cli("explain", "--model", a, "--unit", "L1/N3", "--explainer", "baseline", "--store", st, "--json"))
    assert again["baseline"]["cached"] is True and again["baseline"]["id"] == ex["baseline"]["id"]
    assert again["baseline"]["scores"]["simulation_exact"]["value"] == exact["value"]

    shown = _json(cli("show", "L1/N3", "--model", a, "--store", st, "--json"))
    assert [b["text"] for b in shown["baselines"]] == [ex["baseline"]["text"]] and shown["explanations"] == []
    assert "diff_id" not in shown["baselines"][0]
    word = ex["baseline"]["text"].split('"')[1]              # a token the baseline names
    hits = _json(cli("query", word, "--store", st, "--json"))
    assert [h["unit"] for h in (hits["results"] if isinstance(hits, dict) else hits)] == ["L1/N3"]
    stats = _json(cli("stats", "--store", st, "--json"))
    assert stats["baseline_exact_scores"]["n"] == 1 and stats["baseline_exact_scores"]["mean"] == pytest.approx(
        exact["value"])

    diff = _json(cli("diff", a, setup["b"], "--corpus", setup["corpus"], "--tokens", 1024, "--context-len", 32,
                     "--act-tokens", 128, "--store", st, "--json"))
    assert diff["components"]["weight_head"][0]["component"] == "L1/H2"
    side = diff["explanation"]
    assert side["side"] == diff["side"] and side["baseline"]["scores"]["simulation_exact"]["n"] > 0
    with Store(st, readonly=True) as s:
        got = s.get_diff(diff["id"])
        assert [(e["side"], e["text"]) for e in got["explanations"]] == [(side["side"], side["baseline"]["text"])]
        assert s.db["explanations"].count == 2               # the unit's baseline and the diff side's
    # the unit commands show what they showed before the diff
    assert _json(cli("stats", "--store", st, "--json"))["baseline_exact_scores"] == stats["baseline_exact_scores"]
    rows = _json(cli("query", "--explainer", "baseline", "--store", st, "--json"))
    assert [h["unit"] for h in (rows["results"] if isinstance(rows, dict) else rows)] == ["L1/N3"]
    side_word = side["baseline"]["text"].split('"')[1]      # a word of the diff side's explanation
    rows = _json(cli("query", side_word, "--store", st, "--json"))
    assert {h["unit"] for h in (rows["results"] if isinstance(rows, dict) else rows)} <= {"L1/N3"}
    r = cli("export", "--what", "explanations", "--store", st)
    assert r.returncode == 0 and [json.loads(ln)["unit"] for ln in r.stdout.splitlines() if ln.strip()] == ["L1/N3"]
    r = cli("export", "--what", "scores", "--store", st)
    assert r.returncode == 0 and {json.loads(ln)["unit"] for ln in r.stdout.splitlines() if ln.strip()} == {"L1/N3"}


def test_trace_names_the_most_active_neurons_of_a_real_forward_pass(setup, cli):
    """trace's top neurons per token are the largest post-GELU activations of the MLP, read here
    from a plain forward hook on the HF module (not through autointerp's hooks)."""
    from autointerp.models import HookedModel

    out = _json(cli("trace", "the cat sat", "--model", setup["a"], "--layer", "1", "--top", "2", "--json"))
    hm = HookedModel.load(setup["a"], device="cpu")
    ids, mask = hm.tokenize(["the cat sat"])
    seen = []
    h = hm.model.transformer.h[1].mlp.act.register_forward_hook(lambda m, i, o: seen.append(o[0].detach()))
    try:
        with torch.no_grad():
            hm.model(input_ids=ids, attention_mask=mask)
    finally:
        h.remove()
    acts = seen[0]
    toks = hm.to_str_tokens(ids[0, :int(mask[0].sum())])
    assert [t["token"] for t in out["tokens"]] == toks and out["layers"] == [1]
    for p, t in enumerate(out["tokens"]):
        vals, idx = acts[p].topk(2)
        assert [n["unit"] for n in t["neurons"]] == [f"L1/N{int(i)}" for i in idx]
        assert [n["act"] for n in t["neurons"]] == pytest.approx(vals.tolist(), abs=1e-3)
