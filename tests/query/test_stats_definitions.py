"""`stats` at scale reads indexes (scores_best, unit_stats) instead of scanning every record and
sorting every score; its numbers must still be those of the definitions: a unit is mined when a
run has statistics or records of it, an explanation's score is its best simulation score. Checked
against those definitions written as plain SQL, on the populated store plus the cases the fast
path treats apart: a run with records but no statistics, an explanation scored twice, a null
score, a second model."""

import shutil

import pytest

from autointerp.core.stats import summary
from autointerp.store import Store
from populate import MODEL, RUN

_DEF_BEST = """best as (select explanation_id, value, margin from (
    select s.*, row_number() over (partition by explanation_id order by value desc, id) as rn
    from scores s where kind = 'simulation' and value is not null) where rn = 1)"""
_KIND = "(case when unit like '%/H%' then 'head' else 'neuron' end)"


def _by_definition(st: Store) -> dict:
    mined = st.query(f"""select layer, {_KIND} as kind, count(distinct model_id || ' ' || unit) as mined from (
        select r.model_id, s.unit, s.layer from unit_stats s join mining_runs r on r.id = s.run_id
        union select r.model_id, x.unit, cast(substr(x.unit, 2, instr(x.unit, '/') - 2) as integer)
        from records x join mining_runs r on r.id = x.run_id) group by layer, kind""")
    expl = st.query(f"""with {_DEF_BEST} select e.layer, {_KIND.replace('unit', 'e.unit')} as kind,
        count(distinct case when e.explainer != 'baseline' then e.model_id || ' ' || e.unit end) as explained,
        count(distinct case when e.explainer != 'baseline' and b.value is not null then e.model_id || ' ' || e.unit end) as scored,
        avg(case when e.explainer != 'baseline' then b.value end) as mean_score
        from explanations e left join best b on b.explanation_id = e.id group by e.layer, kind""")
    best = st.query(f"with {_DEF_BEST} select e.explainer = 'baseline' as base, b.value, b.margin "
                    "from explanations e join best b on b.explanation_id = e.id")
    return {"mined": {(r["layer"], r["kind"]): r["mined"] for r in mined},
            "expl": {(r["layer"], r["kind"]): (r["explained"], r["scored"], r["mean_score"]) for r in expl},
            "llm": sorted(r["value"] for r in best if not r["base"]),
            "margins": sorted(r["margin"] for r in best if not r["base"] and r["margin"] is not None)}


@pytest.fixture()
def edited(populated, tmp_path):
    p = tmp_path / "s.db"
    shutil.copy(populated, p)
    with Store(p) as st:
        db = st.db
        with st.tx():
            # a run of a second model with records but no unit statistics (a store made by hand)
            db.execute("insert into models select 'other', family, n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, "
                       "vocab_size, created_at from models where id = ?", [MODEL])
            db.execute("insert into mining_runs (id, model_id, corpus_id, settings_json, n_done, status, created_at, updated_at) "
                       "select 'bare', 'other', corpus_id, settings_json, n_done, status, created_at, updated_at "
                       "from mining_runs where id = ?", [RUN])
            db.execute("insert into records (run_id, unit, kind, bin, ctx_idx, max_act, acts) "
                       "select 'bare', unit, kind, bin, ctx_idx, max_act, acts from records where run_id = ? "
                       "and unit in ('L0/N3', 'L2/H1')", [RUN])
            # an explanation scored again, higher, and one scored null
            e1, e2 = [r["id"] for r in st.query("select id from explanations where explainer != 'baseline' order by id limit 2")]
            db.execute("insert into scores (key, explanation_id, kind, value, margin, created_at) "
                       "values ('again', ?, 'simulation', 0.99, 0.5, 'now'), ('null', ?, 'simulation', null, null, 'now')",
                       [e1, e2])
    return p


def test_stats_equals_the_definitions(edited):
    with Store(edited, readonly=True) as st:
        want = _by_definition(st)
        got = st.stats()
    cov = {(c["layer"], c["kind"]): c for c in got["coverage"]}
    assert {k: c["mined"] for k, c in cov.items() if c["mined"]} == want["mined"]
    for k, (explained, scored, mean) in want["expl"].items():
        assert (cov[k]["explained"], cov[k]["scored"]) == (explained, scored)
        assert cov[k]["mean_score"] == pytest.approx(mean)
    assert got["scores"]["n"] == len(want["llm"]) and got["scores"]["max"] == pytest.approx(0.99)
    assert got["scores"]["median"] == pytest.approx(summary(want["llm"])["median"])
    assert got["scores"]["mean"] == pytest.approx(sum(want["llm"]) / len(want["llm"]))
    assert got["margins"]["n"] == len(want["margins"])
    assert got["margins"]["mean"] == pytest.approx(sum(want["margins"]) / len(want["margins"]))
    # the records-only run of the second model counts its units as mined (L0/N3 and L2/H1 once more)
    with Store(edited, readonly=True) as st:
        assert st.query("select count(distinct unit) as n from records where run_id = 'bare'")[0]["n"] == 2
        mine_only = {(r["layer"], r["kind"]): r["n"] for r in st.query(
            f"select layer, {_KIND} as kind, count(*) as n from unit_stats group by layer, kind")}
    assert cov[(0, "neuron")]["mined"] == mine_only[(0, "neuron")] + 1 and cov[(2, "head")]["mined"] == mine_only[(2, "head")] + 1
