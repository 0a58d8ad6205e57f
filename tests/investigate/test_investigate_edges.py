"""`investigate --edges eap` on the toy model with a planted induction circuit: one step after
the node-level ones finds the edge circuit (EAP, pruned to 0.8 faithfulness measured by running
it), stores it where `autointerp circuit` stores it, and the report's section prints only numbers
from that stored circuit; the viewer's investigation page links /circuit/ID."""

from __future__ import annotations

import re

import pytest

from autointerp.investigate import InvestigateSettings, investigate
from autointerp.patching import edge_search
from autointerp.store import Store

from .toy import toy_model, write_items

PLANTED = ("L0/H0 -> L1/H0:k", "L1/H0 -> logits")


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    d = tmp_path_factory.mktemp("inv_edges")
    hm = toy_model()
    f = write_items(d / "toy.jsonl", 16)
    store = Store(d / "s.db")
    s = InvestigateSettings(top=2, n_explain=0, prose=False, edges="eap")
    # count the model's forward passes made inside the edge step (find_circuit)
    seen = {"inside": False, "forwards": 0}
    forward, find = hm.forward, edge_search.find_circuit

    def counted_forward(*a, **k):
        seen["forwards"] += seen["inside"]
        return forward(*a, **k)

    def counted_find(*a, **k):
        seen["inside"] = True
        try:
            return find(*a, **k)
        finally:
            seen["inside"] = False

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hm, "forward", counted_forward)
        mp.setattr(edge_search, "find_circuit", counted_find)
        res = investigate(store, hm, dataset=str(f), settings=s, out=d / "report")
    return {"res": res, "store": store, "hm": hm, "file": f, "dir": d, "settings": s,
            "edge_forwards": seen["forwards"]}


def _section(md: str) -> str:
    m = re.search(r"^## Edge circuit \(eap\)\n(.*?)(?=^## )", md, re.S | re.M)
    assert m, "no edge-circuit section in the report"
    return m.group(1)


def test_edge_circuit_found_stored_and_matches_the_nodes(inv):
    ec = inv["res"].summary["edge_circuit"]
    row = inv["store"].get_circuit(ec["circuit_id"], in_circuit_only=True)
    assert row is not None and row["method"] == "eap" and row["target"] == 0.8
    assert row["faithfulness"] == ec["faithfulness"] >= 0.8 and ec["reached_target"]
    assert row["n_edges"] == ec["n_edges"] == len(row["edges"]) and 1 <= ec["n_edges"] < ec["n_edges_total"]
    kept = [e["edge"] for e in sorted(row["edges"], key=lambda e: e["rank"])]
    assert set(PLANTED) <= set(kept)                               # the planted edges are in it
    assert [e["edge"] for e in ec["top_edges"]] == kept[:10]
    # the node-level circuit (L0/H0, L1/H0) appears in the edge circuit
    assert set(inv["res"].summary["circuit"]) == {"L0/H0", "L1/H0"}
    assert set(ec["localised_in"]) == {"L0/H0", "L1/H0"} and ec["localised_missing"] == []
    assert inv["res"].to_json()["edge_circuit"]["circuit_id"] == ec["circuit_id"]
    # EAP scores every edge from gradients: the whole edge step (scores, pruning, each curve point
    # measured by running the circuit) takes fewer forward passes than there are edges, where
    # patching edge by edge would take at least one per edge (82 for 110 edges when written)
    assert 0 < inv["edge_forwards"] < ec["n_edges_total"]


def test_report_section_numbers_come_from_the_stored_circuit(inv):
    ec = inv["res"].summary["edge_circuit"]
    row = inv["store"].get_circuit(ec["circuit_id"], in_circuit_only=True)
    sec = _section(inv["res"].report_md)
    assert f"{row['n_edges']} of {row['n_edges_total']} edges kept" in sec
    assert f"recovers {row['faithfulness']:.2f} ({round(100 * row['faithfulness'])}%)" in sec
    assert f"/circuit/{row['id']}" in sec
    scores = {e["edge"]: e["score"] for e in row["edges"]}
    table = [ln for ln in sec.splitlines() if re.match(r"^\| \d+ \|", ln)]
    assert len(table) == min(10, row["n_edges"])
    for i, ln in enumerate(table):
        _, rank, edge, score, _ = (c.strip() for c in ln.split("|"))
        assert int(rank) == i + 1 and float(score) == pytest.approx(scores[edge], abs=6e-4)
    assert "Node-level circuit components in the edge circuit: L0/H0, L1/H0; not in it: none." in sec
    # every number of the section (ids and edge names masked) is one the store holds
    allowed = {row["n_edges"], row["n_edges_total"], row["id"], 0.8, round(row["faithfulness"], 2),
               round(100 * row["faithfulness"]), *range(1, 11), 10}
    allowed |= {round(f, 2) for _, f in row["curve"]} | {k for k, _ in row["curve"]}
    allowed |= {round(v, 3) for v in scores.values()}
    text = re.sub(r"`[^`]*`|L\d+/H\d+(:[qkv])?|blocks\.\d+\.mlp\.out", "", sec)
    for tok in re.findall(r"[-+]?\d+(?:\.\d+)?", text):
        assert float(tok) in allowed or abs(float(tok)) in allowed, f"{tok} in the section is not a measured value"


def test_rerun_reuses_the_edge_step_and_the_viewer_links_the_circuit(inv):
    from autointerp.serve.app import render

    res = investigate(inv["store"], inv["hm"], dataset=str(inv["file"]), settings=inv["settings"],
                      out=inv["dir"] / "report")
    assert res.timings["edges"]["reused"]
    cid = res.summary["edge_circuit"]["circuit_id"]
    assert cid == inv["res"].summary["edge_circuit"]["circuit_id"]
    status, html = render(inv["store"].path, f"/investigation/{res.id[:10]}")
    assert status == 200 and f'href="/circuit/{cid}"' in html and "Edge circuit (eap)" in html
    status, page = render(inv["store"].path, f"/circuit/{cid}")
    assert status == 200 and "L1/H0" in page


def test_without_edges_the_id_is_unchanged_and_no_edge_step_runs():
    s = InvestigateSettings(top=2)
    assert "edges" not in s.science() and "edge_target" not in s.science()
    assert InvestigateSettings(top=2, edges="eap").science()["edges"] == "eap"


def test_cli_rejects_a_bad_edges_option(capsys):
    from autointerp.cli import main

    for args in (["--edges", "acdc"], ["--edges", "eap", "--edge-target", "1.5"]):
        with pytest.raises(SystemExit) as e:
            main(["investigate", "--task", "ioi", *args])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("edge" in err), err
