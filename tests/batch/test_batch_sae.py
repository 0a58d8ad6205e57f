"""`autointerp batch --sae DIR`: every latent of an SAE through the same jobs/claims/resume
machinery as neurons, with --explainer baseline (exact-baseline scores, no LLM). The SAE is a
random TopK SAE on the tiny Llama's layer-1 residual stream, with one latent that can never fire."""

from __future__ import annotations

import json
import sqlite3

import pytest

from _batchkit import cli_inproc

D_SAE, DEAD = 12, 5


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    import torch

    from autointerp.models.sae import SAE

    g = torch.Generator().manual_seed(0)
    b_enc = torch.zeros(D_SAE)
    b_enc[DEAD] = -1e4                       # never among the top k with a positive value: dead
    sae = SAE(architecture="topk", k=3, W_enc=torch.randn(32, D_SAE, generator=g), b_enc=b_enc,
              W_dec=torch.randn(D_SAE, 32, generator=g) / 4, b_dec=torch.zeros(32), hook="blocks.1.hook_resid_post",
              name="res1")
    return sae.save(tmp_path_factory.mktemp("sae") / "res1")


def _rows(path, sql, args=()):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute(sql, args)]
    finally:
        c.close()


def _args(tiny_dir, corpus_file, sae_dir, store, *extra):
    # no LLM server exists: a URL nobody listens on proves no call is made
    return ["batch", "--model", str(tiny_dir), "--corpus", str(corpus_file), "--tokens", "4096", "--device", "cpu",
            "--llm", "openai:none", "--llm-base-url", "http://127.0.0.1:9/v1", "--explainer", "baseline",
            "--n-boot", "50", "--sae", str(sae_dir), "--store", str(store), "--json", *map(str, extra)]


def test_batch_sae_latents_baseline_resume(tiny_dir, corpus_file, sae_dir, batch_env, tmp_path, capsys):
    store = tmp_path / "b.db"
    code, out, err = cli_inproc(_args(tiny_dir, corpus_file, sae_dir, store, "--limit", "4"), capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["units"] == D_SAE and s["done"] == 4 and s["failed"] == 0 and s["mined"]
    assert s["sae"]["name"] == "res1" and s["sae"]["d_sae"] == D_SAE and s["dead"] == 1
    assert s["scores"]["kind"] == "simulation_exact" and s["scores"]["n"] == 4
    jobs = _rows(store, "select unit, status, result_id from jobs")
    assert sorted(j["unit"] for j in jobs) == [f"L1/F{i}@res1" for i in range(4)]
    assert all(j["status"] == "done" for j in jobs)
    # the stored results carry the SAE's identity: its unit ids, and the run that mined that SAE
    run = _rows(store, "select settings_json from mining_runs where id = ?", [s["mined"]])[0]
    assert [x["id"] for x in json.loads(run["settings_json"])["saes"]] == [s["sae"]["id"]]
    assert _rows(store, "select name from saes") == [{"name": "res1"}]
    rows = _rows(store, "select e.unit, e.explainer, s.kind, s.value, s.control, s.margin, s.reason from explanations e "
                        "join scores s on s.explanation_id = e.id")
    assert {r["unit"] for r in rows} == {f"L1/F{i}@res1" for i in range(4)}
    assert {r["explainer"] for r in rows} == {"baseline"} and {r["kind"] for r in rows} == {"simulation_exact"}
    for r in rows:
        assert (r["value"] is not None and r["control"] is not None and r["margin"] is not None) or r["reason"]
    assert {j["result_id"] for j in jobs} <= {e["id"] for e in _rows(store, "select id from explanations")}

    # the rest (the same command without --limit): nothing redone, the dead latent left out, no LLM call
    code, out, err = cli_inproc(_args(tiny_dir, corpus_file, sae_dir, store), capsys)
    assert code == 0, err
    s2 = json.loads(out)
    assert s2["mined"] is None and s2["done"] == D_SAE - 1 - 4 and s2["dead"] == 1 and s2["failed"] == 0
    assert s2["after"] == {"done": D_SAE - 1, "dead": 1}
    units = {j["unit"] for j in _rows(store, "select unit from jobs")}
    assert units == {f"L1/F{i}@res1" for i in range(D_SAE) if i != DEAD}
    assert not _rows(store, "select id from llm_calls")
    # again: nothing to do; the dry run agrees
    code, out, err = cli_inproc(_args(tiny_dir, corpus_file, sae_dir, store), capsys)
    assert code == 0 and json.loads(out)["todo"] == 0
    code, out, err = cli_inproc(_args(tiny_dir, corpus_file, sae_dir, store, "--dry-run"), capsys)
    assert code == 0 and json.loads(out)["todo"] == 0 and json.loads(out)["dead"] == 1
    # the registered name alone names the SAE; explicit --unit ids bind to it
    code, out, err = cli_inproc(_args(tiny_dir, corpus_file, "res1", store, "--unit", "L1/F2,L1/F3", "--dry-run"), capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["units"] == 2 and d["before"] == {"done": 2}


@pytest.mark.parametrize("extra,msg", [
    (["--units", "heads"], "an SAE batch does the SAE's latents"),
    (["--unit", "L0/F1"], "reads layer 1"),
    (["--unit", f"L1/F{D_SAE}"], "out of range"),
    (["--unit", "L1/N2"], "not a neuron"),
])
def test_batch_sae_bad_input_one_line_exit_2(extra, msg, tiny_dir, corpus_file, sae_dir, batch_env, tmp_path, capsys):
    store = tmp_path / "b.db"
    code, out, err = cli_inproc(_args(tiny_dir, corpus_file, sae_dir, store, *extra), capsys)
    lines = [ln for ln in err.strip().splitlines() if "Loading weights" not in ln]
    assert code == 2 and len(lines) == 1 and msg in lines[0], err
    assert not store.exists()
