"""`autointerp pairs / patch / heads` end to end on a tiny random GPT-2 saved as a local model directory."""

from __future__ import annotations

import json

import pytest

from tinykit import run_cli, save_model_dir

from autointerp.store import Store
from autointerp.tasks import dumps

from .helpers import items


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_gpt2):
    return save_model_dir(tiny_gpt2, tmp_path_factory.mktemp("tiny-model"))


def cli(capsys, *args):
    return run_cli(capsys, *args)


def test_pairs_patch_heads(tmp_path, model_dir, capsys):
    store = str(tmp_path / "s.db")
    f = tmp_path / "d.jsonl"
    f.write_text(dumps(items(), "jsonl"))
    base = ["--model", str(model_dir), "--device", "cpu", "--store", store]
    code, out, err = cli(capsys, "pairs", "--import", str(f), "--name", "d", "--margin", "-1e9", "--json", *base)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["name"] == "d" and doc["stats"]["candidates"] == 5
    n = doc["n_items"]
    ac = tmp_path / "d.json"
    code, out, err = cli(capsys, "pairs", "--dataset", "d", "--out", str(ac), "--format", "auto-circuit", "--store", store)
    assert code == 0, err
    assert len(json.loads(ac.read_text())["prompts"]) == n

    png = tmp_path / "h.png"
    code, out, err = cli(capsys, "patch", "--dataset", "d", "--what", "heads", "--json", "--plot", str(png), *base)
    assert code == 0, err
    doc = json.loads(out)
    assert {"clean_logit_diff", "corrupt_logit_diff", "results"} <= set(doc)
    effs = [abs(r["effect"]) for r in doc["results"]]
    assert effs == sorted(effs, reverse=True) and len(effs) == 3 * 4
    assert doc["results"][0]["component"].startswith("L")
    assert png.stat().st_size > 1000
    assert doc["dataset"] == "d" and "settings" not in doc and "rank_correlation_with_activation" not in doc

    code, out, err = cli(capsys, "patch", "--dataset", "d", "--what", "heads", "--method", "attribution", *base)
    assert code == 0, err
    assert "rank correlation with activation patching:" in out and "n/a" not in out
    code, out, err = cli(capsys, "patch", "--dataset", "d", "--what", "heads", "--method", "attribution", "--top", "2",
                         "--json", *base)
    assert code == 0, err
    doc = json.loads(out)                        # the stored run reused: its correlation reported, top 2 only
    assert len(doc["results"]) == 2 and -1 <= doc["rank_correlation_with_activation"] <= 1

    code, out, err = cli(capsys, "patch", "--dataset", "d", "--what", "resid", "--plot", str(tmp_path / "r.png"), *base)
    assert code == 0, err and (tmp_path / "r.png").exists()

    code, out, err = cli(capsys, "patch", "--dataset", str(f), "--method", "path", "--receivers", "L2/H1:q", "--json", *base)
    assert code == 0, err
    assert len(json.loads(out)["results"]) == 2 * 4

    code, out, err = cli(capsys, "heads", "--json", *base)
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["heads"]) == 12 and {"induction", "previous_token", "duplicate_token", "first_token"} <= set(doc["heads"][0])


def test_patch_errors_are_one_line(tmp_path, model_dir, capsys):
    base = ["--model", str(model_dir), "--device", "cpu", "--store", str(tmp_path / "s.db")]
    Store(tmp_path / "s.db").close()  # a store without that dataset (a missing store is its own error)
    code, out, err = cli(capsys, "patch", "--dataset", "nope", *base)
    assert code != 0 and err.startswith("error: no dataset 'nope'") and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(dumps(items(2), "jsonl") + '{"clean": "x"\n')
    code, out, err = cli(capsys, "pairs", "--import", str(bad), *base)
    assert code == 2 or code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "line 3" in last
