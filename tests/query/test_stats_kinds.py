"""`stats` coverage per registered unit kind, latents per SAE: on the populated store (neurons and
heads) plus SAE and transcoder latents, an unbound latent and a unit of the dummy kind "resid"
(tests/dummy_unit_kind.py), mined by three runs of one model that overlap (one with records
only), explained by LLMs (a latent twice) and the baseline, scored, unscored and scored null.
Every count must be the one computed in Python from the rows with Unit.parse; on the store
without latents, every number must be the one the old query gave."""

import json
import shutil
import subprocess
import sys

import pytest

from autointerp.core.units import Unit
from autointerp.store import Store
from populate import MODEL, RUN

# the old classification and query (before registered kinds), kept as the reference for stores
# of neurons and heads
_OLD_KIND = "(case when unit like '%/H%' then 'head' else 'neuron' end)"
_OLD_BEST = ("(select explanation_id, max(value) as value, margin from scores where kind = 'simulation' "
             "and value is not null group by explanation_id)")

# unit -> mined by (runs), LLM explanations' best simulation scores ("-": no simulation score,
# None: a null score), the baseline's
EXTRA = {
    "L1/F0@res": (("run-2",), [0.40, 0.60], 0.10),
    "L1/F1@res": (("run-2", "bare"), ["-"], None),
    "L1/F2@res": (("run-2",), [], None),
    "L1/F0@tc": (("run-2",), [None], None),
    "L2/F5@tc": (("run-2",), [], 0.05),
    "L2/F6@tc": (("bare",), [0.25], None),
    "L2/F7@tc": ((), [0.30], None),          # explained, never mined
    "L1/F9": (("run-2",), [0.15], None),     # a latent not bound to an SAE
    "L1/R7": (("run-2",), [0.20], 0.02),     # the dummy kind
    "L0/N3": (("run-2", "bare"), [], None),  # mined again by the new runs: counted once
}


def _add(st: Store) -> None:
    db = st.db
    with st.tx():
        for run in ("run-2", "bare"):
            db.execute("insert into mining_runs (id, model_id, corpus_id, settings_json, n_done, status, created_at, updated_at) "
                       "select ?, model_id, corpus_id, settings_json, n_done, status, created_at, updated_at "
                       "from mining_runs where id = ?", [run, RUN])
        for i, (unit, (runs, llm, base)) in enumerate(EXTRA.items()):
            layer = Unit.parse(unit).layer
            if "run-2" in runs:
                db.execute("insert into unit_stats (run_id, unit, layer, max_act) values ('run-2', ?, ?, 1.0)", [unit, layer])
            if "bare" in runs:
                for b in range(2):
                    db.execute("insert into records (run_id, unit, kind, bin, ctx_idx, max_act, acts) "
                               "values ('bare', ?, 'top', ?, ?, 1.0, x'0000')", [unit, b, b])
            expls = [(f"llm-{j}", v) for j, v in enumerate(llm)] + ([("baseline", base)] if base is not None else [])
            for explainer, v in expls:
                key = f"x-{unit}-{explainer}"
                db.execute("insert into explanations (key, model_id, unit, layer, run_id, explainer, method, text, created_at) "
                           "values (?, ?, ?, ?, 'run-2', ?, 'chat', 'text', 'now')", [key, MODEL, unit, layer, explainer])
                eid = db.execute("select id from explanations where key = ?", [key]).fetchone()[0]
                if v != "-":
                    db.execute("insert into scores (key, explanation_id, kind, value, margin, reason, created_at) "
                               "values (?, ?, 'simulation', ?, ?, ?, 'now')",
                               [key + ":s", eid, v, None if v is None else v - 0.1, "constant" if v is None else None])
                db.execute("insert into scores (key, explanation_id, kind, value, created_at) "
                           "values (?, ?, 'detection', 0.7, 'now')", [key + ":d", eid])


@pytest.fixture(scope="module")
def with_latents(populated, tmp_path_factory, dummy_extensions):
    p = tmp_path_factory.mktemp("kinds") / "s.db"
    shutil.copy(populated, p)
    with Store(p) as st:
        _add(st)
    return p


def _key(unit: str) -> tuple:
    u = Unit.parse(unit)
    return (u.layer, u.kind, u.sae or None)


def _by_rows(st: Store) -> dict:
    """The coverage computed in Python from the rows: mined = units with statistics in a run or
    records in a run without statistics; explained = units with an LLM explanation; scored = with
    an LLM explanation with a best simulation score; mean = mean of those best scores."""
    stats_runs = {r["run_id"] for r in st.query("select distinct run_id from unit_stats")}
    mined = {(r["model_id"], r["unit"]) for r in st.query(
        "select r.model_id, s.unit from unit_stats s join mining_runs r on r.id = s.run_id")}
    mined |= {(r["model_id"], r["unit"]) for r in st.query(
        "select r.model_id, x.unit, x.run_id from records x join mining_runs r on r.id = x.run_id")
        if r["run_id"] not in stats_runs}
    best: dict[int, float] = {}
    for r in st.query("select explanation_id, value from scores where kind = 'simulation' and value is not null"):
        best[r["explanation_id"]] = max(best.get(r["explanation_id"], r["value"]), r["value"])
    out: dict[tuple, dict] = {}

    def cell(unit):
        return out.setdefault(_key(unit), {"mined": set(), "explained": set(), "scored": set(), "values": []})

    for m, u in mined:
        cell(u)["mined"].add((m, u))
    for r in st.query("select id, model_id, unit, explainer from explanations where unit is not null"):
        c = cell(r["unit"])
        if r["explainer"] != "baseline":
            c["explained"].add((r["model_id"], r["unit"]))
            if r["id"] in best:
                c["scored"].add((r["model_id"], r["unit"]))
                c["values"].append(best[r["id"]])
    return {k: {"mined": len(c["mined"]), "explained": len(c["explained"]), "scored": len(c["scored"]),
                "mean_score": sum(c["values"]) / len(c["values"]) if c["values"] else None} for k, c in out.items()}


def test_coverage_per_registered_kind_and_sae(with_latents):
    with Store(with_latents, readonly=True) as st:
        want = _by_rows(st)
        got = st.stats()
    cov = {(c["layer"], c["kind"], c["sae"]): c for c in got["coverage"]}
    assert set(cov) == set(want)
    for k, w in want.items():
        assert {f: cov[k][f] for f in ("mined", "explained", "scored")} == {f: w[f] for f in ("mined", "explained", "scored")}, k
        assert cov[k]["mean_score"] == pytest.approx(w["mean_score"]), k
    # what a researcher reads: layer 1's latents of res: 3 mined (one also in the records-only
    # run), 2 explained (one twice: counted once), 1 scored, mean of its two LLM explanations
    assert {f: cov[(1, "latent", "res")][f] for f in ("mined", "explained", "scored", "coverage")} == \
        {"mined": 3, "explained": 2, "scored": 1, "coverage": pytest.approx(2 / 3)}
    assert cov[(1, "latent", "res")]["mean_score"] == pytest.approx(0.5)
    assert cov[(1, "latent", "tc")]["scored"] == 0 and cov[(1, "latent", "tc")]["mean_score"] is None   # a null score
    assert cov[(2, "latent", "tc")]["mined"] == 2 and cov[(2, "latent", "tc")]["explained"] == 2
    assert cov[(1, "latent", None)]["mined"] == 1 and cov[(1, "resid", None)]["explained"] == 1
    assert cov[(0, "neuron", None)]["mined"] == 2       # L0/N3 mined by three runs, counted once
    # the order: by registered kind (neurons, heads, latents by SAE, resid), then layer
    kinds = [(c["kind"], c["sae"] or "") for c in got["coverage"]]
    assert kinds == sorted(kinds, key=lambda k: (["neuron", "head", "latent", "resid"].index(k[0]), k[1]))
    by_kind = {(t["kind"], t["sae"]): t for t in got["coverage_by_kind"]}
    assert by_kind[("latent", "tc")] == {"kind": "latent", "sae": "tc", "layers": 2, "mined": 3, "explained": 3,
                                         "scored": 2, "coverage": 1.0}
    assert by_kind[("neuron", None)]["mined"] == 5 and by_kind[("head", None)]["mined"] == 2
    # only LLM explanations of units count in the score distribution: the latents' LLM scores too
    assert got["scores"]["n"] == 7 + 6


def test_model_filter_and_second_model(with_latents, tmp_path):
    p = tmp_path / "two.db"
    shutil.copy(with_latents, p)
    with Store(p) as st:
        with st.tx():
            st.db.execute("insert into models select 'other', family, n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, "
                          "vocab_size, created_at from models where id = ?", [MODEL])
            st.db.execute("insert into mining_runs (id, model_id, corpus_id, settings_json, n_done, status, created_at, updated_at) "
                          "select 'run-o', 'other', corpus_id, settings_json, n_done, status, created_at, updated_at "
                          "from mining_runs where id = ?", [RUN])
            # the same unit ids in another model are other units
            st.db.execute("insert into unit_stats (run_id, unit, layer) select 'run-o', unit, layer from unit_stats "
                          "where run_id = 'run-2'")
    with Store(p, readonly=True) as st:
        both = {(c["layer"], c["kind"], c["sae"]): c["mined"] for c in st.stats()["coverage"]}
        one = {(c["layer"], c["kind"], c["sae"]): c["mined"] for c in st.stats(model=MODEL)["coverage"]}
        other = {(c["layer"], c["kind"], c["sae"]): c["mined"] for c in st.stats(model="other")["coverage"]}
    assert one == _mined_of(with_latents)
    assert other[(1, "latent", "res")] == 3 and other[(0, "neuron", None)] == 1
    assert all(both[k] == one.get(k, 0) + other.get(k, 0) for k in both)


def _mined_of(path) -> dict:
    with Store(path, readonly=True) as st:
        return {(c["layer"], c["kind"], c["sae"]): c["mined"] for c in st.stats()["coverage"]}


def test_same_as_the_old_query_without_latents(populated):
    """On a store of neurons and heads, coverage is exactly what the old SQL gave."""
    with Store(populated, readonly=True) as st:
        got = st.stats()["coverage"]
        mined = {(r["layer"], r["kind"]): r["n"] for r in st.query(
            f"select layer, {_OLD_KIND} as kind, count(*) as n from (select distinct r.model_id, s.unit, s.layer "
            "from unit_stats s join mining_runs r on r.id = s.run_id) group by layer, kind")}
        expl = {(r["layer"], r["kind"]): r for r in st.query(f"""
            select layer, kind,
                   count(distinct case when explainer != 'baseline' then model_id || ' ' || unit end) as explained,
                   count(distinct case when explainer != 'baseline' and value is not null then model_id || ' ' || unit end) as scored,
                   avg(case when explainer != 'baseline' then value end) as mean_score
            from (select e.layer, e.unit, e.model_id, e.explainer, {_OLD_KIND.replace('unit', 'e.unit')} as kind, b.value
                  from explanations e left join {_OLD_BEST} b on b.explanation_id = e.id where e.unit is not null)
            group by layer, kind""")}
    old_order = sorted(set(mined) | set(expl), key=lambda k: (k[1] != "neuron", k[0]))
    assert [(c["layer"], c["kind"]) for c in got] == old_order
    for c in got:
        k = (c["layer"], c["kind"])
        assert c["sae"] is None and c["mined"] == mined.get(k, 0)
        assert (c["explained"], c["scored"]) == (expl[k]["explained"], expl[k]["scored"])
        assert c["mean_score"] == pytest.approx(expl[k]["mean_score"])
        assert c["coverage"] == pytest.approx(c["explained"] / c["mined"])


def test_cli_shows_kinds_and_saes(with_latents):
    """The CLI (another process, where the dummy kind is not registered) shows latents per SAE
    and the unregistered kind by its letter."""
    r = subprocess.run([sys.executable, "-m", "autointerp", "stats", "--store", str(with_latents)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(ln for ln in lines if ln.split()[:3] == ["1", "latent", "res"])
    assert row.split()[3:7] == ["3", "2", "1", "67%"]
    assert any(ln.split()[:2] == ["1", "R"] for ln in lines)
    assert any("latents of tc" in ln and "mined 3" in ln for ln in lines)
    st = json.loads(subprocess.run([sys.executable, "-m", "autointerp", "stats", "--json", "--store", str(with_latents)],
                                   capture_output=True, text=True, timeout=120).stdout)
    assert {(c["layer"], c["kind"], c["sae"]) for c in st["coverage"]} >= {(1, "latent", "res"), (1, "R", None)}
    assert {"coverage", "scores", "baseline_scores", "margins", "llm", "counts"} <= set(st)
