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
