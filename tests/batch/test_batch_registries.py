"""Issue 22: the scorer of tests/dummy_scorer.py and the unit kind of tests/dummy_unit_kind.py,
each added in one module, in a real batch (tiny random Llama, real mining, real SQLite store)."""

from __future__ import annotations

import json

import pytest

from _batchkit import D_MLP, N_LAYERS, cli_inproc

pytestmark = pytest.mark.usefixtures("dummy_extensions")   # registered for this module only


def _rows(path, sql):
    import sqlite3

    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute(sql)]
    finally:
        c.close()


def test_batch_runs_the_dummy_scorer(tiny_dir, corpus_file, batch_env, tmp_path, capsys):
    store = tmp_path / "b.db"
    args = ["batch", "--model", str(tiny_dir), "--corpus", str(corpus_file), "--tokens", "4096", "--device", "cpu",
            "--llm", "openai:none", "--llm-base-url", "http://127.0.0.1:9/v1", "--explainer", "baseline",
            "--scorers", "exact,peak_token", "--layers", "0", "--n-boot", "20", "--store", store, "--json"]
    code, out, err = cli_inproc(args, capsys)
    assert code == 0, err
    assert json.loads(out)["done"] == D_MLP
    rows = _rows(store, "select e.unit, s.kind, s.value, s.n, s.details_json from scores s "
                        "join explanations e on e.id = s.explanation_id where s.kind = 'peak_token'")
    assert {r["unit"] for r in rows} == {f"L0/N{i}" for i in range(D_MLP)}
    for r in rows:
        d = json.loads(r["details_json"])
        assert r["value"] == sum(d["hits"]) / len(d["hits"]) and r["n"] == len(d["peaks"])
    # a scorer name the registry does not hold: one line, exit 2, nothing written
    code, out, err = cli_inproc(args[:-3] + ["--scorers", "exact,nope", "--store", tmp_path / "x.db"], capsys)
    assert code == 2 and "unknown scorer 'nope'" in err and not (tmp_path / "x.db").exists()


def test_batch_plans_the_dummy_unit_kind(tiny_dir):
    from autointerp.batch.plan import BatchOptions, check_options, select_units

    o = BatchOptions(model=str(tiny_dir), units="resids", layers="1")
    check_options(o)
    sizes = {"n_layers": N_LAYERS, "d_mlp": D_MLP, "n_heads": 4, "d_model": 32}
    units = select_units(o, sizes)
    assert [u.id for u in units] == [f"L1/R{i}" for i in range(32)]
    o = BatchOptions(model=str(tiny_dir), units="resids", unit_ids=["L1/R3", "L0/R31"])
    assert [u.id for u in select_units(o, sizes)] == ["L0/R31", "L1/R3"]


def test_a_batch_mines_and_explains_the_dummy_unit_kind_on_a_fresh_store(tiny_dir, corpus_file, batch_env, tmp_path,
                                                                         capsys):
    """The dummy kind end to end with no code of its own: a batch of resids on an empty store mines
    them (the generic per-hook mining state), explains them (baseline: no LLM), and query and show
    see them."""
    store = tmp_path / "r.db"
    args = ["batch", "--model", str(tiny_dir), "--corpus", str(corpus_file), "--tokens", "4096", "--device", "cpu",
            "--llm", "openai:none", "--llm-base-url", "http://127.0.0.1:9/v1", "--explainer", "baseline",
            "--scorers", "exact", "--units", "resids", "--layers", "1", "--limit", "3", "--n-boot", "20",
            "--store", store, "--json"]
    code, out, err = cli_inproc(args, capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["done"] == 3 and res["mined"]
    run = _rows(store, "select settings_json from mining_runs")
    assert len(run) == 1 and json.loads(run[0]["settings_json"])["units"] == "resids"
    assert _rows(store, "select count(*) as n from unit_stats")[0]["n"] == 32           # d_model of layer 1
    code, out, err = cli_inproc(["query", "--kind", "resid", "--store", store, "--json"], capsys)
    assert code == 0, err
    assert sorted(r["unit"] for r in json.loads(out)) == ["L1/R0", "L1/R1", "L1/R2"]
    code, out, err = cli_inproc(["show", "L1/R2", "--model", res["model_id"], "--store", store, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["baselines"] and info["stats"]["run_id"] == res["mined"]
    tops = [r["max_act"] for r in info["records"] if r["kind"] == "top"]
    assert tops and tops == sorted(tops, reverse=True) and info["n_records"] >= 40 + 20       # top 40, random 20, ...
