"""Store read methods: search, the dataset join, stats, export, Datasette canned queries."""

import json
import sqlite3
from pathlib import Path

import pytest

from autointerp.errors import UsageError
from autointerp.store import Store
from autointerp.store.query import fts_query
from populate import DATASET, MODEL, UNITS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store(populated):
    s = Store(populated, readonly=True)
    yield s
    s.close()


def test_fts_query_quotes_words():
    assert fts_query('day "of" the-week') == '"day" "of" "the" "week"'
    assert fts_query("a b", any_word=True) == '"a" OR "b"'
    assert fts_query("  ''  ") == ""


def test_search_ranked_with_score_and_ci(store):
    rows = store.search("day of the week")
    assert [r["unit"] for r in rows] == ["L0/N3"]
    r = rows[0]
    assert r["score"] == pytest.approx(0.62) and r["ci_low"] == pytest.approx(0.54) and r["ci_high"] == pytest.approx(0.70)
    assert r["explainer"] == "llm-small" and r["layer"] == 0
    # porter stemming: "capitals" finds "capital"; both the LLM and the baseline explanation match
    assert {x["explainer"] for x in store.search("capitals")} == {"llm-small", "baseline"}
    # punctuation in the query is no FTS syntax error
    assert store.search('"Monday" OR (') == []  # 'OR' is a word here, not syntax
    assert store.search('Monday AND (')[0]["unit"] == "L0/N3"


def test_search_filters(store):
    assert {r["unit"] for r in store.search("attends", min_score=0.5)} == {"L2/H1"}
    assert {r["unit"] for r in store.search("attends", layer=1)} == {"L1/H0"}
    assert store.search("Monday", explainer="baseline")[0]["text"] == "Monday Friday On"
    assert store.search("Monday", model="other-model") == []
    rows = store.search(None, min_score=0.3)
    assert [r["score"] for r in rows] == sorted([r["score"] for r in rows], reverse=True)
    assert all(r["score"] >= 0.3 for r in rows)
    assert {r["unit"] for r in store.search(None, kind="head", min_score=-1)} == {"L1/H0", "L2/H1"}
    assert store.search("Mary John names", any_word=True)[0]["unit"] == "L1/N5"
    # the margin over the null control: score - control (0.1 in this store)
    rows = store.search(None, min_margin=0.3)
    assert rows and all(r["margin"] >= 0.3 and r["margin"] == pytest.approx(r["score"] - 0.1, abs=1e-3) for r in rows)
    assert {r["unit"] for r in rows} == {r["unit"] for r in store.search(None, min_score=0.4 - 1e-9)}


def test_dataset_units_joins_patching_and_explanations(store):
    rows = store.dataset_units(DATASET, min_effect=0.1)
    # L2/H3 has a big effect but no explanation: left out; ordered by |effect|
    assert [r["unit"] for r in rows] == ["L2/H1", "L1/N5", "L2/N1", "L1/H0"]
    assert rows[0]["effect"] == pytest.approx(0.55) and rows[0]["explainer"] == "llm-small"
    assert rows[2]["effect"] == pytest.approx(-0.22)  # the sign is kept, |effect| ranks
    assert [r["unit"] for r in store.dataset_units(DATASET, min_effect=0.1, min_score=0.35)] == ["L2/H1", "L1/H0"]
    assert [r["unit"] for r in store.dataset_units(DATASET, min_effect=0.1, text="people")] == ["L1/N5"]
    with_unexplained = store.dataset_units(DATASET, min_effect=0.3, include_unexplained=True)
    assert [r["unit"] for r in with_unexplained] == ["L2/H1", "L1/N5", "L2/H3"]
    with pytest.raises(UsageError, match="no dataset 'nope'"):
        store.dataset_units("nope")


def test_stats(store):
    st = store.stats()
    cov = {(c["layer"], c["kind"]): c for c in st["coverage"]}
    assert cov[(0, "neuron")]["mined"] == 2 and cov[(0, "neuron")]["explained"] == 2 and cov[(0, "neuron")]["coverage"] == 1.0
    assert cov[(2, "head")]["mean_score"] == pytest.approx(0.70)
    sc = st["scores"]
    llm_scores = [v[1] for v in UNITS.values()]
    assert sc["n"] == len(UNITS) and sc["median"] == pytest.approx(sorted(llm_scores)[len(llm_scores) // 2])
    assert sum(h["count"] for h in sc["histogram"]) == len(UNITS)
    assert st["baseline_scores"]["mean"] < sc["mean"]
    assert st["llm"]["calls"] == 2 * len(UNITS) and st["llm"]["completion_tokens"] == 30 * len(UNITS)
    assert st["llm"]["by_model"][0]["model"] == "llm-small"
    assert st["counts"]["explanations"] == 2 * len(UNITS)
    with pytest.raises(UsageError, match="no model"):
        store.stats(model="nope")


def test_export_rows(store):
    ex = list(store.export_rows("explanations"))
    assert len(ex) == 2 * len(UNITS) and all("score" in r and "text" in r for r in ex)
    recs = list(store.export_rows("records"))
    assert len(recs) == 6 * len(UNITS)
    assert len(recs[0]["acts"]) == len(recs[0]["tokens"]) == 8
    pat = list(store.export_rows("patching"))
    assert {r["what"] for r in pat} == {"heads", "neurons"} and all(r["dataset"] == DATASET for r in pat)
    scores = list(store.export_rows("scores"))
    assert len(scores) == 4 * len(UNITS) and all(r["explanation_key"] for r in scores)
    with pytest.raises(UsageError):
        list(store.export_rows("nothing"))


def test_unit_view_has_everything(store):
    v = store.unit_view(MODEL, "L0/N3")
    assert v["explanations"][0]["text"] == UNITS["L0/N3"][0]
    assert v["baselines"][0]["text"] == UNITS["L0/N3"][3]
    assert v["promoted"][0][0] == " Monday"
    assert len(v["records"]) == 6 and all(r["sim"] and len(r["sim"]) == len(r["acts"]) for r in v["records"])
    h = store.unit_view(MODEL, "L2/H1")
    assert {x["detector"] for x in h["head_scores"]} == {"induction", "previous_token"}
    assert all(len(r["extra"]) == 8 for r in h["records"])
    assert store.unit_view(MODEL, "L0/N15") is None


def test_datasette_canned_queries_run(populated):
    meta = json.loads((REPO / "store" / "datasette-metadata.json").read_text())
    db = meta["databases"]["autointerp"]
    conn = sqlite3.connect(f"file:{populated}?mode=ro", uri=True)
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    assert set(db["tables"]) <= tables
    params = {"dataset": DATASET, "min_effect": "0.1", "q": "week"}  # Datasette passes strings
    results = {}
    for name, q in db["queries"].items():
        cur = conn.execute(q["sql"], params)
        results[name] = [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
        assert results[name], f"canned query {name} returned nothing"
    assert results["units_for_dataset"][0]["unit"] == "L2/H1"
    assert results["search_explanations"][0]["unit"] == "L0/N3"
    assert results["llm_cost_by_model"][0]["calls"] == 2 * len(UNITS)
    assert {r["layer"] for r in results["best_explanations_per_layer"]} == {0, 1, 2}
