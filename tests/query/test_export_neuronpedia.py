"""`autointerp export --format neuronpedia` (issue #27): a folder of upload batches in the format
the `neuronpedia` package (PyPI) posts, checked by that package itself
(scripts/interop_neuronpedia.py, in a Python that has it: AUTOINTERP_NEURONPEDIA_PYTHON, else
.peers/neuronpedia/bin/python, else this one), plus the content: explanations, scores,
activations equal to the store's records, logits and density; bad --out gets one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinykit import run_cli

REPO = Path(__file__).resolve().parents[2]


def _np_python() -> str | None:
    for c in (os.environ.get("AUTOINTERP_NEURONPEDIA_PYTHON"), str(REPO / ".peers" / "neuronpedia" / "bin" / "python"), sys.executable):
        if c and Path(c).exists() and subprocess.run([c, "-c", "import neuronpedia.np_source"], capture_output=True,
                                                      timeout=120).returncode == 0:
            return c
    return None


@pytest.fixture(scope="module")
def exported(populated, tmp_path_factory):
    out = tmp_path_factory.mktemp("np") / "np-export"
    r = subprocess.run([sys.executable, "-m", "autointerp", "export", "--format", "neuronpedia", "--store", str(populated),
                        "--out", str(out)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    return out


def test_batches_validate_with_the_neuronpedia_package(exported):
    py = _np_python()
    if py is None:
        pytest.skip("no Python with the neuronpedia package: pip install neuronpedia in a venv and set "
                    "AUTOINTERP_NEURONPEDIA_PYTHON")
    r = subprocess.run([py, str(REPO / "scripts" / "interop_neuronpedia.py"), str(exported)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    manifest = json.loads((exported / "manifest.json").read_text())
    assert res["mismatches"] == [] and res["batches"] == len(manifest["batches"]) > 0
    assert res["features"] == sum(b["features"] for b in manifest["batches"]) and res["activations"] > 0


def test_content_is_the_stores(exported, populated, capsys):
    from autointerp.store import Store

    manifest = json.loads((exported / "manifest.json").read_text())
    feats = {}
    for b in manifest["batches"]:
        p = json.loads((exported / b["file"]).read_text())
        assert p["modelId"] == "tiny-llama" and p["source"] == b["source"] and 0 < len(p["features"]) <= 128
        for f in p["features"]:
            feats[(p["source"], f["index"])] = f
    f = feats[("0-autointerp-neurons", 3)]
    assert "days of the week, especially Monday and Friday" in [e["text"] for e in f["explanations"]]
    assert all(e["methodName"].startswith("autointerp-") and e["modelName"] for e in f["explanations"])
    with Store(populated, readonly=True) as s:
        v = s.unit_view("tiny-llama", "L0/N3", max_top=10_000, per_bin=10_000)
        recs = list(s.export_rows("records", model="tiny-llama"))
    assert f["density"] == pytest.approx(v["stats"]["frac_active"])
    assert [x["token"] for x in f["topLogits"]] == [t for t, _ in v["promoted"]]
    mine = sorted((tuple(a["tokens"]), tuple(a["values"])) for a in f["activations"])
    stored = sorted((tuple(r["tokens"]), tuple(r["acts"])) for r in recs if r["unit"] == "L0/N3")
    assert mine == stored and len(mine) == v["n_records"]
    for a in f["activations"]:                # quantile groups: their interval holds each record's max
        if a["quantileMax"] is not None:
            assert a["quantileMin"] - 1e-3 <= max(a["values"]) <= a["quantileMax"] + 1e-3
    scores = [json.loads(x) for x in (exported / "scores.jsonl").read_text().splitlines()]
    own = [x for x in scores if x["unit"] == "L0/N3" and x["explanationText"].startswith("days of the week")]
    assert own and {"kind", "value", "ciLow", "ciHigh", "control", "margin", "scorer"} <= set(own[0])
    assert any(x["value"] == pytest.approx(0.62) for x in own)


def test_bad_out(exported, populated, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", "--format", "neuronpedia", "--store", str(populated), "--out", str(exported))
    assert code != 0 and "exists" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "export", "--format", "neuronpedia", "--store", str(populated))
    assert code != 0 and "--out DIR" in err
    code, _, err = run_cli(capsys, "export", "--format", "neuronpedia", "--store", str(populated), "--model", "nope",
                           "--out", str(tmp_path / "x"))
    assert code != 0 and "nothing to export" in err and not (tmp_path / "x").exists()
    assert not (tmp_path / "x.part").exists()
