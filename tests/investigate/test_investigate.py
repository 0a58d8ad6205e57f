"""`investigate` on a toy model with a planted induction circuit (L0/H0 -> L1/H0:k -> logits):
it finds the planted heads and the edge between them, reports faithfulness near 1, stores every
step (a re-run reuses them all), writes the report and figures, checks the LLM's prose, and the
viewer renders the stored report."""

from __future__ import annotations


import pytest

from autointerp.investigate import InvestigateSettings, check_prose, investigate
from autointerp.store import Store

from .toy import toy_model, write_items


class FakeLLM:
    """A chat LLM that writes one true sentence, one with an invented number and one naming a head
    that is not in the circuit."""

    name = "fake"
    backend = "fake"
    model = "fake"

    def __init__(self):
        self.calls = 0

    def chat(self, messages, **kw):
        self.calls += 1
        facts = messages[-1]["content"]
        assert "Faithfulness" in facts
        return ["The induction head L1/H0 copies the answer. It recovers 0.37 of the effect. "
                "Head L0/H3 also matters."]


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    d = tmp_path_factory.mktemp("inv")
    hm = toy_model()
    f = write_items(d / "toy.jsonl", 16)
    store = Store(d / "s.db")
    llm = FakeLLM()
    s = InvestigateSettings(top=2, n_explain=0, prose=True)
    res = investigate(store, hm, dataset=str(f), llm=llm, settings=s, out=d / "report")
    return {"res": res, "store": store, "hm": hm, "file": f, "dir": d, "llm": llm, "settings": s}


def test_finds_the_planted_circuit(inv):
    sm = inv["res"].summary
    assert set(sm["circuit"]) == {"L0/H0", "L1/H0"}
    comps = {c["component"]: c for c in sm["components"]}
    assert comps["L1/H0"]["activation_effect"] > 0.9 and comps["L0/H0"]["activation_effect"] > 0.9
    # who talks to whom: L0/H0 reaches the logits only through L1/H0's keys
    edges = {(e["sender"], e["receiver"], e["channel"]): e["effect"] for e in sm["edges"]}
    assert edges[("L0/H0", "L1/H0", "k")] > 0.9
    assert abs(edges[("L0/H0", "L1/H0", "q")]) < 0.05 and abs(edges[("L0/H0", "L1/H0", "v")]) < 0.05
    assert edges[("L1/H0", "logits", "direct")] > 0.9 and abs(edges[("L0/H0", "logits", "direct")]) < 0.05
    # named: the head wiki and the attention evidence
    assert comps["L0/H0"]["detector_role"] == "previous_token"
    assert comps["L1/H0"]["detector_role"] == "induction"
    assert comps["L1/H0"]["attention"]["answer"] > 0.8
    assert "mover" in comps["L1/H0"]["role"] and "keys" in comps["L0/H0"]["role"]


def test_faithful_and_complete(inv):
    h = inv["res"].summary["hypothesis"]
    assert 0.9 < h["faithfulness"] < 1.1
    assert abs(h["model_minus_circuit"]) < 0.1
    assert h["max_incompleteness"] < 0.1
    b = inv["res"].summary["backup"]
    assert b["ablated"] == "L1/H0" and b["backup_heads"] == []     # nothing planted takes over
    assert b["logit_diff_after"] < 0 < b["logit_diff_before"]


def test_report_figures_and_sources(inv):
    res, store = inv["res"], inv["store"]
    md = (inv["dir"] / "report" / "README.md").read_text()
    assert md == res.report_md
    for name in ("circuit.png", "attribution_heads.png", "activation_heads.png", "hypothesis.png", "backup.png"):
        assert (inv["dir"] / "report" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in md
    row = store.get_investigation(res.id)
    assert row["status"] == "done" and row["report_md"] == md
    assert {s["step"] for s in row["steps"]} >= {"dataset", "localise", "confirm", "paths", "heads", "hypothesis",
                                                "backup", "prose"}
    # every figure names its source rows, and the SQL runs
    for f in row["figures"]:
        assert f["source"]["sql"] in md
        assert store.query(f["source"]["sql"])


def test_prose_numbers_are_checked(inv):
    p = inv["res"].summary["prose"]
    assert inv["llm"].calls == 1
    assert p["source"] == "fake"
    assert p["text"] == "The induction head L1/H0 copies the answer."
    reasons = sorted(x["reason"] for x in p["dropped"])
    assert reasons == ["number 0.37 is not a measured value", "unit L0/H3 is not in the measurements"]


def test_rerun_reuses_every_step(inv, monkeypatch):
    hm, forwards = inv["hm"], []
    forward = hm.forward
    monkeypatch.setattr(hm, "forward", lambda *a, **k: forwards.append(1) or forward(*a, **k))
    res = investigate(inv["store"], hm, dataset=str(inv["file"]), llm=inv["llm"], settings=inv["settings"],
                      out=inv["dir"] / "report")
    stored = [k for k, v in res.timings.items() if k != "figures"]
    assert stored and all(res.timings[k]["reused"] for k in stored)
    assert inv["llm"].calls == 1                  # the prose is reused too
    assert res.summary["circuit"] == inv["res"].summary["circuit"]
    assert forwards == []                         # nothing recomputed: the model never runs


def test_viewer_renders_the_report(inv):
    from autointerp.serve.app import render

    res = inv["res"]
    status, html = render(inv["store"].path, f"/investigation/{res.id[:10]}")
    assert status == 200
    assert 'src="data:image/png;base64,' in html and "<table>" in html and "Faithfulness" in html
    assert "/unit/toy-induction/L1/H0" in html
    assert render(inv["store"].path, "/investigation/nosuch")[0] == 404


def test_check_prose_rules():
    facts = ("Task: ioi. Model: smollm2-135m. Dataset: 16 prompt pairs. Mean logit difference: clean 3.21, corrupt "
             "-0.12. Head L9/H9: patching effect +0.41. Faithfulness 0.62 (62%).")
    text = ("SmolLM2-135M prefers the answer by 3.21 logits. L9/H9 carries 0.41 of it in layer 9. The circuit recovers "
            "62% with faithfulness 0.620. It falls by 0.12. It falls by 0.12. It is 0.9 faithful. Head L3/H1 helps. "
            "Layer 11 matters. About 41% is direct. And then the model")
    r = check_prose(text, facts, ["smollm2-135m", "ioi"], max_sentences=10)
    assert r["kept"] == ["SmolLM2-135M prefers the answer by 3.21 logits.", "L9/H9 carries 0.41 of it in layer 9.",
                         "The circuit recovers 62% with faithfulness 0.620.", "It falls by 0.12."]
    assert [d["sentence"] for d in r["dropped"]] == ["It is 0.9 faithful.", "Head L3/H1 helps.", "Layer 11 matters.",
                                                     "About 41% is direct.", "And then the model"]
    assert r["dropped"][-1]["reason"] == "unfinished sentence"


def test_cli_needs_a_task(capsys):
    from autointerp.cli import main

    with pytest.raises(SystemExit) as e:
        main(["investigate"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_described_task_asks_the_llm_for_pairs_and_a_failure_is_recorded(tmp_path):
    from autointerp.errors import LLMError

    class NoPairs(FakeLLM):
        def structured(self, messages, schema, **kw):
            self.calls += 1
            raise LLMError("fake: no JSON")

    hm = toy_model()
    store = Store(tmp_path / "s.db")
    llm = NoPairs()
    with pytest.raises(LLMError, match="fake: no JSON"):     # the LLM's failure, said as such
        investigate(store, hm, "copy the token after the earlier occurrence", llm=llm,
                    settings=InvestigateSettings(n=4, n_explain=0, prose=False))
    assert llm.calls >= 1
    rows = store.list_investigations()
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert "the first LLM call failed" in store.get_investigation(rows[0]["id"])["error"]


def test_check_prose_binds_numbers_to_the_units_named():
    facts = ("Mean logit difference: clean 4.45, corrupt -0.22.\n"
             "Head L23/H3: patching effect +0.58, direct effect +0.47.\n"
             "Head L24/H4: patching effect -0.51, direct effect -0.32.")
    text = ("Head L23/H3 has patching effect +0.51. Head L24/H4 has patching effect -0.51. Head L24/H4 has direct "
            "effect +0.32. The model prefers the answer by 4.45 logits. It is 0.58 strong.")
    r = check_prose(text, facts, max_sentences=10)
    assert r["kept"] == ["Head L24/H4 has patching effect -0.51.", "The model prefers the answer by 4.45 logits."]
    assert [d["reason"] for d in r["dropped"]] == ["number +0.51 is not measured for L23/H3",
                                                   "number +0.32 is not measured for L24/H4",
                                                   "number 0.58 is measured for a unit the sentence does not name"]


def test_circuit_science_lives_in_patching_and_prose_checking_next_to_the_report():
    """The circuit tests are patching's (investigate re-exports them); prose checking is
    investigate/prose_check.py, the one place its rules are (the report/ package is gone)."""
    from pathlib import Path

    import autointerp.investigate as inv
    from autointerp import patching
    from autointerp.investigate import prose_check

    assert inv.check_prose is prose_check.check_prose and not (Path(inv.__file__).parents[1] / "report").exists()
    assert inv.evaluate_circuit is patching.evaluate_circuit and inv.backup_heads is patching.backup_heads
    facts = "Head L9/H9 has a direct effect of 0.42."
    r = prose_check.check_prose("Head L 9/h9 writes 0.42 to the logits. Head L9/H9 adds 0.77.", facts, max_sentences=5)
    assert r["kept"] == ["Head L 9/h9 writes 0.42 to the logits."]
    assert r["dropped"][0]["reason"] == "number 0.77 is not a measured value"
