"""explain_exemplars end to end with a fake LLM (no model): best-of-k on calibration, the
baseline, the stored rows and their keys, cache hits on re-run."""

from types import SimpleNamespace

import pytest

from autointerp.pipeline import ExplainSettings, explain_exemplars
from autointerp.score.splits import SplitSizes
from autointerp.store import Store

WORDS = ["the", " cat", " sat", " on", " a", " dog", " mat", " and", " ran", " home"]


def make_exemplars(rec):
    top, rand = [], []
    for i in range(16):
        toks = [WORDS[(i + j) % len(WORDS)] for j in range(12)]
        acts = [3.0 - 0.05 * i if t.strip() in ("cat", "dog") else 0.1 for t in toks]
        top.append(rec(i, toks, acts))
    for i in range(12):
        toks = [" the", " sun", " is", " hot", " and", " bright"] * 2
        rand.append(rec(100 + i, toks, [0.05 * ((i + j) % 3) for j in range(12)], kind="random"))
    return SimpleNamespace(model_id="tiny", run_id=None, unit="L1/N7", stats={"max_act": 3.0}, top=top, quantiles=[],
                           random=rand, promoted=[[" food", 0.5], [" bowl", 0.3]], suppressed=[[" car", -0.4]])


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db")
    s.put_model("tiny", dict(family="llama", n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=16, vocab_size=50))
    return s


def test_explain_best_of_k_baseline_scores_and_cache(store, rec, fake_llm_cls, prompts_dir):
    ex = make_exemplars(rec)
    llm = fake_llm_cls(replies=['"tree"', '"cat" and "dog"', '"house"'], store=store)
    s = ExplainSettings(k=3, style="completion", n_boot=200, sizes=SplitSizes(n_train=6, n_calib=2, n_test=4))
    res = explain_exemplars(store, ex, llm, settings=s)

    # best of k on calibration: the candidate that names the active tokens wins
    assert res.explanation.text == '"cat" and "dog"'
    assert res.explanation.method == "completion-bestof3"
    cal = {c["text"]: c["calibration"] for c in res.explanation.candidates}
    assert cal['"cat" and "dog"'] > max(cal['tree'], cal['house'])  # wholly quoted replies are unquoted
    # the baseline comes from the data and is scored by the same scorers
    assert res.baseline.text.startswith('the tokens "cat" and "dog"')
    assert '"food"' in res.baseline.text
    for e in (res.explanation, res.baseline):
        sim = e.scores["simulation"]
        assert sim.value > 0.9 and sim.ci_low <= sim.value <= sim.ci_high and sim.n == 8
        assert {"simulation_top", "simulation_random", "detection", "fuzzing"} <= set(e.scores)
        assert e.scores["detection"].value == 1.0 and e.scores["fuzzing"].value == 1.0
    # the test split: 4 top + 4 random, true and simulated activations to recompute the score
    assert [r.kind for r in res.test_records] == ["top"] * 4 + ["random"] * 4
    from autointerp.score.metrics import pooled_correlation
    assert pooled_correlation([r.acts for r in res.test_records], [r.simulated for r in res.test_records]) == \
        pytest.approx(res.explanation.scores["simulation"].value, abs=1e-3)

    # store rows
    ex_rows = store.explanations_for("tiny", "L1/N7")
    assert sorted(r["explainer"] for r in ex_rows) == ["baseline", "fake:fake-1"]
    llm_row = next(r for r in ex_rows if r["explainer"] != "baseline")
    assert llm_row["template_hash"] and llm_row["records_hash"] and len(llm_row["settings"]["candidates"]) == 3
    kinds = sorted(r["kind"] for r in store.scores_for(llm_row["id"]))
    assert kinds == ["detection", "fuzzing", "simulation", "simulation_random", "simulation_top"]
    n_calls = store.query("select count(*) n from llm_calls")[0]["n"]
    assert n_calls > 0

    # identical re-run: every row is a cache hit, no LLM call
    before = dict(llm.calls)
    res2 = explain_exemplars(store, ex, llm, settings=s)
    assert llm.calls == before
    assert res2.explanation.cached and res2.baseline.cached
    assert res2.explanation.scores["simulation"].value == res.explanation.scores["simulation"].value
    assert store.query("select count(*) n from scores")[0]["n"] == 11   # + the baseline's exact score
    assert store.query("select count(*) n from explanations")[0]["n"] == 2

    # the baseline's exact simulation: its token list read literally (10 on "cat"/"dog", else 0)
    ex_sc = res.baseline.scores["simulation_exact"]
    lit = [[10.0 if t.strip() in ("cat", "dog") else 0.0 for t in r.tokens] for r in res.test_records]
    assert [r.exact_baseline for r in res.test_records] == lit
    assert ex_sc.value == pytest.approx(pooled_correlation([r.acts for r in res.test_records], lit), abs=1e-9)
    assert "simulation_exact" not in res.explanation.scores          # free text carries no rule
    # every score has its control on the same records, and a margin with an interval
    assert res.control and res.control not in (res.explanation.text, res.baseline.text)
    for e in (res.explanation, res.baseline):
        sim = e.scores["simulation"]
        assert sim.control is not None and sim.control < 0.5
        assert sim.margin == pytest.approx(sim.value - sim.control)
        assert sim.margin_low <= sim.margin <= sim.margin_high and sim.margin_low > 0
        assert e.scores["detection"].margin == pytest.approx(e.scores["detection"].value - e.scores["detection"].control)
    # the fidelity of the LLM simulator to the exact reading of the same baseline text
    assert res.baseline.scores["simulation"].details["fidelity_to_exact"] > 0.9


def test_json_simulator_path(store, rec, fake_llm_cls, prompts_dir):
    ex = make_exemplars(rec)
    llm = fake_llm_cls(replies=['"cat"'], store=store)
    s = ExplainSettings(k=1, simulator="json", scorers=("simulation",), n_boot=50, sizes=SplitSizes(n_train=4, n_calib=0, n_test=2))
    res = explain_exemplars(store, ex, llm, settings=s)
    sim = res.explanation.scores["simulation"]
    # the fake's chat reply '"cat"' is no JSON list: every value is bad, counted, and the score is
    # null with its reason (never a fake 0.000)
    assert sim.details["n_bad"] == sum(len(r.tokens) for r in res.test_records)
    assert sim.value is None and sim.reason.startswith("unparseable: 48 of 48")
    row = next(r for r in store.query("select value, reason from scores where kind = 'simulation'"))
    assert row["value"] is None and row["reason"].startswith("unparseable")
