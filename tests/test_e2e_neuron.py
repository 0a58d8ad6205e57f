"""End to end with the real packaged SmolLM2 (subject model and embedded LLM): mine a small slice of
the offline corpus for one layer, explain and score two neurons, check the store rows; then the CLI
`show` and a cache-hit re-run."""

import json

import pytest

pytestmark = pytest.mark.slow

LAYER = 3
UNITS = [f"L{LAYER}/N42", f"L{LAYER}/N100"]


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.store import Store

    hm = HookedModel.load("smollm2-135m", device="cpu", dtype="float32")   # a missing model fails the test
    store = Store(tmp_path_factory.mktemp("e2e") / "e2e.db")
    run_id = mine(hm, store, n_tokens=1536, context_len=32, layers=[LAYER], top_k=14, n_random=20,
                  n_quantiles=4, per_quantile=1, progress=False)
    return store, hm, run_id


def test_explain_two_neurons_end_to_end(mined):
    from autointerp.pipeline import ExplainSettings, explain_unit, show_unit
    from autointerp.score.splits import SplitSizes

    store, hm, run_id = mined
    s = ExplainSettings(k=2, max_tokens=24, n_boot=200, n_spare=2, sizes=SplitSizes(n_train=5, n_calib=1, n_test=3))
    results = []
    for unit in UNITS:
        res = explain_unit(store, unit, model_spec="smollm2-135m", llm="embedded:smollm2-135m", hm=hm, settings=s)
        results.append(res)
        assert res.run_id == run_id and not res.mined
        assert res.explanation.text and res.baseline.text.startswith("the tokens")
        assert res.split_sizes["test_top"] == res.split_sizes["test_random"] == 3
        for e in (res.explanation, res.baseline):
            sim = e.scores["simulation"]
            assert -1 <= sim.value <= 1 and sim.ci_low <= sim.ci_high and sim.n == 6
            assert {"simulation_top", "simulation_random", "detection", "fuzzing"} <= set(e.scores)
            for task in ("detection", "fuzzing"):     # a real number, or null with its reason (constant judge)
                d = e.scores[task]
                assert (d.value is not None and 0 <= d.value <= 1) or d.reason.startswith(("constant judge", "unparseable"))
            # every LLM score has its control on the same records and a margin with an interval
            assert sim.control is not None and sim.margin == pytest.approx(sim.value - sim.control, abs=1e-9)
            assert sim.margin_low <= sim.margin <= sim.margin_high
        # the baseline's exact score (no LLM) and the simulator's fidelity to it
        ex = res.baseline.scores["simulation_exact"]
        assert ex.value is None or (-1 <= ex.value <= 1 and ex.margin is not None)
        assert all(r.exact_baseline is not None and len(r.exact_baseline) == len(r.tokens) for r in res.test_records)
        # the --json payload lets anyone recompute the score
        from autointerp.score.metrics import pooled_correlation
        tr = res.test_records
        assert all(len(r.simulated) == len(r.tokens) == len(r.acts) for r in tr)
        assert pooled_correlation([r.acts for r in tr], [r.simulated for r in tr]) == \
            pytest.approx(res.explanation.scores["simulation"].value, abs=2e-3)

    # store rows: per unit an LLM explanation and a baseline, 5 scores each (+ the baseline's exact), LLM calls recorded
    for unit in UNITS:
        rows = store.explanations_for("smollm2-135m", unit)
        assert sorted(r["explainer"] for r in rows) == ["baseline", "embedded:smollm2-135m"]
        for r in rows:
            kinds = {sc["kind"]: sc for sc in store.scores_for(r["id"])}
            assert set(kinds) - {"simulation_exact"} == {"simulation", "simulation_top", "simulation_random", "detection",
                                                         "fuzzing"}
            assert ("simulation_exact" in kinds) == (r["explainer"] == "baseline")
            assert kinds["simulation"]["ci_low"] is not None and kinds["simulation"]["details"]["records"]
        llm_row = next(r for r in rows if r["explainer"] != "baseline")
        assert llm_row["template_hash"] and llm_row["records_hash"] and llm_row["run_id"] == run_id
    calls = store.query("select kind, count(*) n from llm_calls group by kind")
    kinds = {c["kind"]: c["n"] for c in calls}
    assert kinds.get("complete", 0) >= 2 and kinds.get("logprobs", 0) >= 4

    # identical re-run: cache hits, no new rows
    n_scores = store.query("select count(*) n from scores")[0]["n"]
    again = explain_unit(store, UNITS[0], model_spec="smollm2-135m", llm="embedded:smollm2-135m", hm=hm, settings=s)
    assert again.explanation.cached and again.explanation.text == results[0].explanation.text
    assert store.query("select count(*) n from scores")[0]["n"] == n_scores

    info = show_unit(store, "smollm2-135m", UNITS[0])
    assert info["explanations"] and info["baselines"] and info["records"]
    assert json.dumps(info, default=str)
