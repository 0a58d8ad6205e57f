"""The pipeline (pipeline/neuron.py) on a random-init GPT-2 and a real SQLite store, no LLM (the
baseline and its exact score): explain_unit mines a unit's layer only when no run covers it;
an identical re-run is a cache hit; a failed write leaves nothing; a subject decides whose rows
they are (a unit, or a model diff's side) but not the science (the same scorers, split sizes
and caching)."""

import random
import sqlite3

import pytest
from tinykit import WORDS

from autointerp.core.subjects import Subject
from autointerp.errors import UsageError
from autointerp.mine import load_exemplars
from autointerp.pipeline import ExplainSettings, explain_exemplars, explain_unit, show_unit
from autointerp.store import Store

MINE = {"context_len": 32, "top_k": 20, "n_quantiles": 4, "progress": False}
S = ExplainSettings(explainer="baseline", n_boot=50)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    for i in range(140):
        (d / f"{i:03d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(40)))
    return str(d)


@pytest.fixture(scope="module")
def mined(tiny_gpt2, corpus, tmp_path_factory):
    """A store where explain_unit mined layer 1 for L1/N3: (store, first result)."""
    store = Store(tmp_path_factory.mktemp("p") / "p.db")
    res = explain_unit(store, "L1/N3", model_spec=tiny_gpt2.spec, hm=tiny_gpt2, settings=S, corpus=corpus,
                       n_tokens=4096, mine_kw=MINE)
    return store, res


def _count(store, table):
    return store.db[table].count


def test_explain_unit_mines_the_layer_once_and_reruns_are_cache_hits(tiny_gpt2, corpus, mined):
    store, r1 = mined
    assert r1.mined and r1.explanation is None and r1.baseline.text.startswith("the tokens")
    exact = r1.baseline.scores["simulation_exact"]
    assert exact.n > 0 and exact.control is not None and r1.control
    runs = store.query("select id from mining_runs")
    assert [r["id"] for r in runs] == [r1.run_id]
    kw = dict(model_spec=tiny_gpt2.spec, hm=tiny_gpt2, settings=S, corpus=corpus, n_tokens=4096, mine_kw=MINE)
    n_expl, n_scores = _count(store, "explanations"), _count(store, "scores")
    again = explain_unit(store, "L1/N3", **kw)               # identical inputs: found, nothing written
    assert not again.mined and again.baseline.cached and again.baseline.id == r1.baseline.id
    assert again.baseline.scores["simulation_exact"].value == exact.value
    assert (_count(store, "explanations"), _count(store, "scores")) == (n_expl, n_scores)
    other = explain_unit(store, "L1/N7", **kw)               # same layer: the same run, no mining
    assert not other.mined and other.run_id == r1.run_id and _count(store, "explanations") == n_expl + 1
    deeper = explain_unit(store, "L2/N1", **kw)              # a layer no run covers: mined now
    assert deeper.mined and deeper.run_id != r1.run_id and len(store.query("select id from mining_runs")) == 2
    shown = show_unit(store, tiny_gpt2.spec, "L1/N3")
    assert [b["text"] for b in shown["baselines"]] == [r1.baseline.text]
    assert {s["kind"] for s in shown["baselines"][0]["scores"]} >= {"simulation_exact"}
    with pytest.raises(UsageError, match="knows nothing"):
        show_unit(store, tiny_gpt2.spec, "L0/N9")


def test_a_failed_write_stores_nothing(tiny_gpt2, mined, monkeypatch):
    store, r1 = mined
    ex = load_exemplars(store, r1.run_id, "L1/N5")
    before = (_count(store, "explanations"), _count(store, "scores"))

    def boom(*a, **k):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(store, "put_scores", boom)          # after the explanation row is written
    with pytest.raises(RuntimeError, match="disk gone"):
        explain_exemplars(store, ex, None, model_id=tiny_gpt2.spec, settings=S)
    assert (_count(store, "explanations"), _count(store, "scores")) == before


def test_a_diff_side_is_a_subject_with_its_own_rows_and_the_same_pipeline(tiny_gpt2, mined):
    store, r1 = mined
    ex = load_exemplars(store, r1.run_id, "L1/N3")
    side = Subject.of_diff("d" * 24, "b_better")
    before = _count(store, "explanations")
    with pytest.raises(sqlite3.IntegrityError):              # a side of a diff the store does not have
        explain_exemplars(store, ex, None, subject=side, model_id=tiny_gpt2.spec, settings=S)
    assert _count(store, "explanations") == before
    store.put_diff(side.diff_id, model_a="a", model_b="b", mode="token", level="blackbox", corpus=None, n_tokens=64,
                   settings={}, summary={}, contexts=[], components=[], tasks=[])
    res = explain_exemplars(store, ex, None, subject=side, model_id=tiny_gpt2.spec, settings=S)
    assert res.unit == "diff:" + "d" * 24 + ":b_better" and not res.baseline.cached
    # the same scorers on splits of the same size (the split is seeded by the subject's id)
    assert res.baseline.key != r1.baseline.key and set(res.baseline.scores) == set(r1.baseline.scores)
    assert res.split_sizes == r1.split_sizes
    assert res.baseline.scores["simulation_exact"].n == r1.baseline.scores["simulation_exact"].n
    n = _count(store, "explanations")
    again = explain_exemplars(store, ex, None, subject=side, model_id=tiny_gpt2.spec, settings=S)
    assert again.baseline.cached and again.baseline.id == res.baseline.id and _count(store, "explanations") == n
    row = store.get_explanation(res.baseline.key)
    assert (row["diff_id"], row["side"], row["model_id"], row["unit"], row["run_id"]) == (side.diff_id, "b_better",
                                                                                          None, None, None)
    got = store.get_diff(side.diff_id)["explanations"]
    assert [e["text"] for e in got] == [res.baseline.text]
    assert {s["kind"] for s in got[0]["scores"]} == set(res.baseline.scores)
    # the unit's own view is untouched by its records being explained as a diff side
    assert [b["id"] for b in show_unit(store, tiny_gpt2.spec, "L1/N3")["baselines"]] == [r1.baseline.id]
