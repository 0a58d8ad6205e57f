"""Schema v5: one explanation store. A v4 store (built from the v4 schema text, tests/store/
schema_v4.sql, with the rows the v4 code wrote: a unit's explanation and a model diff's side in
diff_explanations / diff_scores) opens with this code: the diff rows move into explanations /
scores, the old tables are gone, and the diff, the unit and search show what they showed before."""

import json
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from autointerp.core.subjects import Subject
from autointerp.errors import StoreError, UnitError
from autointerp.store import SCHEMA_VERSION, Store

V4_SCHEMA = (Path(__file__).parent / "schema_v4.sql").read_text()
INFO = dict(family="llama", n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=16, vocab_size=100)
NOW = "2026-12-01T00:00:00+00:00"


def _record(kind, value, control, details):
    """A score record as the v4 pipeline stored it in diff_scores.record_json (ScoreRecord order)."""
    return {"kind": kind, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 12, "scorer": "exact",
            "template_hash": None, "control": control, "margin": value - control, "margin_low": value - control - 0.2,
            "margin_high": value - control + 0.2, "reason": None, "details": details}


def _v4_store(path: Path) -> dict:
    """A schema-v4 store as the v4 code made it; returns what the v4 code read back for the diff."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V4_SCHEMA)
    conn.executescript("insert into meta values ('app', 'autointerp'); insert into meta values ('schema_version', '4');")
    db = sqlite_utils.Database(conn)
    db["explanations"].enable_fts(["text", "unit", "explainer"], create_triggers=True, tokenize="porter")
    conn.execute("insert into models values ('m', 'llama', 2, 8, 2, 1, 4, 16, 100, ?)", [NOW])
    conn.execute("insert into explanations(key, model_id, unit, layer, explainer, method, text, created_at) "
                 "values ('u1', 'm', 'L1/N3', 1, 'baseline', 'baseline', 'commas in lists', ?)", [NOW])
    conn.execute("insert into scores(key, explanation_id, kind, value, n, created_at) "
                 "values ('u1:s', 1, 'simulation_exact', 0.4, 10, ?)", [NOW])
    conn.execute("insert into diffs(id, model_a, model_b, mode, level, n_tokens, settings_json, summary_json, created_at,"
                 " updated_at) values ('d' || hex(randomblob(4)), 'toy-a', 'toy-b', 'token', 'blackbox', 64, '{}', '{}', ?, ?)",
                 [NOW, NOW])
    did = conn.execute("select id from diffs").fetchone()[0]
    # the v4 DiffExplanationStore's writes (two explanations of one side, three scores)
    for key, explainer, text in (("dx1", "baseline", "repeated text commas"), ("dx2", "gpt-x", "a repeated segment")):
        conn.execute("insert into diff_explanations(key, diff_id, side, explainer, method, text, settings_json, created_at)"
                     " values (?,?,?,?,?,?,?,?)", [key, did, "a_better", explainer, explainer, text, '{"k": 1}', NOW])
    recs = [("dx1:exact", 1, _record("simulation_exact", 0.62, 0.05, {"simulated": [[0.0, 1.0]]})),
            ("dx1:fuzz", 1, _record("fuzzing", 0.7, 0.5, None)),
            ("dx2:sim", 2, _record("simulation", 0.3, 0.1, {"records": [{"r": 0.3}]}))]
    for key, eid, rec in recs:
        conn.execute("insert into diff_scores(key, explanation_id, kind, value, control, margin, record_json, created_at)"
                     " values (?,?,?,?,?,?,?,?)", [key, eid, rec["kind"], rec["value"], rec["control"], rec["margin"],
                                                   json.dumps(rec), NOW])
    conn.close()
    return {"id": did, "explanations": [
        {"key": "dx1", "side": "a_better", "explainer": "baseline", "text": "repeated text commas", "settings": {"k": 1},
         "scores": [recs[0][2], recs[1][2]]},
        {"key": "dx2", "side": "a_better", "explainer": "gpt-x", "text": "a repeated segment", "settings": {"k": 1},
         "scores": [recs[2][2]]}]}


def _shown(d: dict) -> list[dict]:
    return [{k: e[k] for k in ("key", "side", "explainer", "text", "settings", "scores")} for e in d["explanations"]]


def test_v4_store_opens_with_its_diff_explanations_moved(tmp_path):
    p = tmp_path / "v4.db"
    want = _v4_store(p)
    with Store(p, readonly=True) as ro:                  # read-only: not upgraded, and it still shows the diff
        assert ro.schema_version == 4 and _shown(ro.get_diff(want["id"])) == want["explanations"]
    with Store(p) as s:
        assert s.schema_version == SCHEMA_VERSION == 5
        assert {"diff_explanations", "diff_scores"} & set(s.db.table_names()) == set()
        assert _shown(s.get_diff(want["id"][:6])) == want["explanations"]
        assert s.db["explanations"].count == 3 and s.db["scores"].count == 4
        # the moved rows are ordinary explanations: found by key (a re-run's cache hit), a diff side
        row = s.get_explanation("dx1")
        assert (row["diff_id"], row["side"], row["model_id"], row["unit"], row["layer"]) == (want["id"], "a_better",
                                                                                             None, None, None)
        # the unit's explanation and score are as they were; unit reads do not see the diff side
        assert [e["text"] for e in s.explanations_for("m", "L1/N3")] == ["commas in lists"]
        assert s.get_score("u1:s")["value"] == pytest.approx(0.4)
        assert [r["unit"] for r in s.search("commas")] == ["L1/N3"]        # FTS rebuilt; the diff row is no unit
        assert [r["unit"] for r in s.export_rows("explanations")] == ["L1/N3"]
        assert s.stats()["baseline_exact_scores"]["n"] == 1
        # and neither do the Datasette canned queries (the diff side dx2 has a simulation score)
        from autointerp.serve.datasette import template

        q = template()["database"]["queries"]
        assert s.query(q["search_explanations"]["sql"], {"q": "repeated"}) == []
        assert all(r["unit"] for r in s.query(q["best_explanations_per_layer"]["sql"]))
        assert s.db.execute("pragma foreign_key_check").fetchall() == []
        assert s.db.execute("pragma foreign_keys").fetchone()[0] == 1
        # new rows keep the FTS index in step (its triggers are back)
        s.put_explanation(key="u2", model_id="m", unit="L0/N1", layer=0, explainer="baseline", method="baseline",
                          text="semicolons")
        assert [r["unit"] for r in s.search("semicolons")] == ["L0/N1"]
    with Store(p) as again:                              # a second open changes nothing
        assert again.schema_version == 5 and again.db["explanations"].count == 4


def test_a_failed_upgrade_changes_nothing(tmp_path):
    """A v4 diff score whose explanation row is missing cannot move: the upgrade stops with one
    line, and the store is still the v4 store it was."""
    p = tmp_path / "bad.db"
    _v4_store(p)
    conn = sqlite3.connect(p, isolation_level=None)
    conn.execute("insert into diff_scores(key, explanation_id, kind, record_json, created_at) "
                 "values ('orphan', 99, 'fuzzing', '{\"kind\": \"fuzzing\", \"value\": 0.5}', ?)", [NOW])
    conn.close()
    with pytest.raises(StoreError, match="damaged"):
        Store(p)
    with Store(p, readonly=True) as ro:
        assert ro.schema_version == 4 and "diff_scores" in ro.db.table_names()
        assert ro.db["diff_scores"].count == 4 and ro.db["explanations"].count == 1


def test_the_schema_refuses_a_row_that_is_both_or_neither(tmp_path):
    with Store(tmp_path / "s.db") as s:
        s.put_model("m", INFO)
        for cols in ({"model_id": "m", "unit": "L0/N1", "layer": 0, "diff_id": None, "side": "a_better"},
                     {"model_id": None, "unit": None, "layer": None}):
            with pytest.raises(sqlite3.IntegrityError):
                s.put_explanation(key="x", explainer="b", method="b", text="t", **cols)
        assert s.db["explanations"].count == 0


def test_subject_records():
    u = Subject.of_unit("m", "l5/n131")
    assert (u.id, u.kind, u.layer) == ("L5/N131", "neuron", 5)
    assert u.columns("run1") == {"model_id": "m", "unit": "L5/N131", "layer": 5, "run_id": "run1"}
    d = Subject.of_diff("abc123", "b_better")
    assert (d.id, d.kind, d.layer, str(d)) == ("diff:abc123:b_better", None, None, "diff:abc123:b_better")
    assert d.columns("diff:abc123") == {"diff_id": "abc123", "side": "b_better"}
    for bad in (dict(), dict(model_id="m"), dict(diff_id="x"), dict(model_id="m", diff_id="x", side="a_better")):
        with pytest.raises(UnitError):
            Subject(**bad)


def test_merge_carries_a_diff_and_its_sides_explanations(tmp_path):
    """merge copies the diff before the explanations that name it (a foreign key), ids remapped."""
    with Store(tmp_path / "src.db") as src:
        src.put_model("m", INFO)
        src.put_explanation(key="u", model_id="m", unit="L0/N1", layer=0, explainer="b", method="b", text="unit")
        src.put_diff("d1", model_a="a", model_b="b", mode="token", level="blackbox", corpus=None, n_tokens=8,
                     settings={}, summary={}, contexts=[], components=[], tasks=[])
        eid = src.put_explanation(key="dx", diff_id="d1", side="b_better", explainer="b", method="b", text="side")
        src.put_scores(eid, [{"key": "dx:s", "kind": "simulation_exact", "value": 0.5, "n": 4, "control": 0.1,
                              "margin": 0.4, "details": {"simulated": [[1.0]]}}])
        want = _shown(src.get_diff("d1"))
    with Store(tmp_path / "dst.db") as dst:
        dst.put_model("m", INFO)
        dst.put_explanation(key="other", model_id="m", unit="L0/N2", layer=0, explainer="b", method="b", text="x")
        added = dst.merge_from([tmp_path / "src.db"])
        assert added["explanations"] == 2 and added["diffs"] == 1 and added["scores"] == 1
        assert _shown(dst.get_diff("d1")) == want and want[0]["scores"][0]["details"] == {"simulated": [[1.0]]}
