"""A probe AUC without information is null with its reason (no probe fired, every probe fired,
one class of prediction, one max activation for all), in the store, the CLI, the JSON and the
viewer, never 0.500 [0.50, 0.50]."""

from __future__ import annotations

import json

import pytest

from autointerp.validate import validate_explanation
from autointerp.validate.probes import Probe, probe_scores

from .test_validate import MODEL, _clear_units, _put, _quiet_words


@pytest.mark.parametrize("rows,why", [
    ([(True, 0.1), (True, 0.0), (False, 0.2), (False, 0.0)], "no probe fired"),
    ([(True, 0.9), (True, 0.6), (False, 0.7), (False, 0.8)], "every probe fired"),
    ([(True, 0.0), (True, 0.0), (False, 0.0), (False, 0.0)], "no probe fired"),
    ([(True, 0.9), (True, 0.1), (True, 0.6)], "all 3 probes to fire"),
])
def test_degenerate_probe_auc_is_null_with_reason(rows, why):
    ps = [Probe(text=str(i), label=lab, source="code", max_act=a, fires=a >= 0.5) for i, (lab, a) in enumerate(rows)]
    sc = probe_scores(ps, 0.5, n_boot=50)
    assert sc.auc is None and sc.auc_ci is None and why in sc.auc_reason
    assert sc.by_source["code"]["auc"] is None and why in sc.by_source["code"]["auc_reason"]


def test_same_activation_everywhere_is_null():
    ps = [Probe(text=str(i), label=i % 2 == 0, source="code", max_act=0.7, fires=i < 2) for i in range(4)]
    sc = probe_scores(ps, 0.5, n_boot=50)
    assert sc.auc is None and "same max activation" in sc.auc_reason


def test_null_auc_in_store_cli_json_viewer(mined, monkeypatch, capsys):
    store, hm, rid = mined
    from autointerp.cli import main
    from autointerp.models.hooked import HookedModel
    from autointerp.serve.app import render

    _, _, unit, tok, ex = _clear_units(store, rid, 1)[0]
    text = "the tokens " + ", ".join(f'"{w}"' for w in _quiet_words(ex, [tok]))
    eid = _put(store, unit, rid, text, explainer="test-null")
    from autointerp.validate import ValidateSettings

    r = validate_explanation(store, hm, None, MODEL, unit, eid, baseline=False, settings=ValidateSettings(frac=1.0))
    p = r.explanation.probes
    assert p.n_fired == 0, "no probe reaches the unit's mined max on the quiet words"
    assert p.auc is None and "no probe fired" in p.auc_reason
    row = store.query("select value, ci_low, ci_high, reason from scores where kind = 'probe_auc' and explanation_id = ?",
                      [eid])[0]
    assert row["value"] is None and row["ci_low"] is None and "no probe fired" in row["reason"]

    monkeypatch.setattr(HookedModel, "load", classmethod(lambda cls, *a, **k: hm))
    args = ["validate", "--unit", unit, "--explanation", str(eid), "--model", MODEL, "--no-llm", "--frac", "1",
            "--store", str(store.path)]
    main(args + ["--json"])
    out = json.loads(capsys.readouterr().out)
    sc = out["explanation"]["scores"]["probe_auc"]
    assert sc["value"] is None and "no probe fired" in sc["reason"]
    assert out["explanation"]["probes"]["auc"] is None
    main(args)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "probe AUC" in ln]
    assert lines and "null (no probe fired" in lines[0] and "0.500" not in lines[0] and "[0.50, 0.50]" not in lines[0]

    store.db.conn.execute("PRAGMA wal_checkpoint(FULL)")
    status, page = render(store.path, f"/unit/{MODEL}/{unit}")
    assert status == 200
    assert "probe_auc" in page and "null: no probe fired" in page
