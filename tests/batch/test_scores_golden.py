"""The scores of a fixed slice are the same before and after the batch client was made faster
(issue 24): the full default pipeline (best of k=3 on calibration, LLM simulation with prompt
logprobs, exact simulation, detection, fuzzing, 1000 bootstrap resamples, controls) against the
real `autointerp llm serve` server in vllm mode, over scripts/bench_batch.py's tiny endpoint
model with context-dependent answers (its tokenizer is trained on a frozen text,
scripts/bench_batch_vocab.txt, so editing a prompt file changes the prompts sent but not the
model). tests/batch/golden_scores.json holds every explanation and every stored score of that
slice as the code before the change computed them; the test asserts today's run stores exactly
the same (every float bit for bit).

    AUTOINTERP_WRITE_GOLDEN=1 pytest tests/batch/test_scores_golden.py   # rewrite the golden file
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden_scores.json")
UNITS = 4
SCORE_COLS = ("kind", "value", "ci_low", "ci_high", "n", "scorer", "control", "margin", "margin_low", "margin_high",
              "reason", "details_json")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_batch_script", ROOT / "scripts" / "bench_batch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stored_results(path: Path) -> dict:
    """Every explanation (unit, explainer, method, text, candidates' calibration scores) and every
    score of it, in a stable order."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    c.row_factory = sqlite3.Row
    try:
        out = []
        for e in c.execute("select id, unit, explainer, method, text, settings_json from explanations order by unit, explainer"):
            settings = json.loads(e["settings_json"] or "null") or {}
            scores = [dict(zip(SCORE_COLS, r)) for r in c.execute(
                f"select {', '.join(SCORE_COLS)} from scores where explanation_id = ? order by kind", [e["id"]])]
            for sc in scores:
                sc["details"] = json.loads(sc.pop("details_json") or "null")
            out.append({"unit": e["unit"], "explainer": e["explainer"], "method": e["method"], "text": e["text"],
                        "candidates": settings.get("candidates"), "best": settings.get("best"), "scores": scores})
        return {"explanations": out}
    finally:
        c.close()


@pytest.fixture(scope="module")
def endpoint_model():
    """The model and its corpus at a fixed path with a fixed mtime: the mining run's id (its seed for
    the random and quantile records) hashes the model spec and the corpus' path and stamp."""
    import shutil
    import tempfile

    d = Path(tempfile.gettempdir()) / f"autointerp-golden-{os.getuid()}"
    shutil.rmtree(d, ignore_errors=True)
    m = _bench().build_endpoint_model(d / "golden-model", d_mlp=UNITS // 2, context=0.5)
    os.utime(m / "corpus.txt", ns=(10**18, 10**18))
    yield m
    shutil.rmtree(d, ignore_errors=True)


def test_scores_of_a_fixed_slice_are_unchanged(endpoint_model, tmp_path, monkeypatch):
    from autointerp.batch import BatchOptions, run_batch
    from autointerp.llm.embedded import EmbeddedLLM
    from autointerp.llm.openai_backend import forget_endpoints
    from autointerp.llm.serve import start_server
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.pipeline import ExplainSettings
    from autointerp.store import Store

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-golden")
    for k in ("AUTOINTERP_LLM_CONCURRENCY", "AUTOINTERP_LLM_BASE_URL", "AUTOINTERP_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    forget_endpoints()
    spec = str(endpoint_model)
    hm = HookedModel.load(spec, device="cpu")
    path = tmp_path / "golden.db"
    corpus = str(endpoint_model / "corpus.txt")
    with Store(path) as st:
        mine(hm, st, corpus=corpus, n_tokens=4096, layers=[0, 1], progress=False)
    served = EmbeddedLLM(spec, model=hm.model, tokenizer=hm.tokenizer, device="cpu")
    with start_server(llm=served, mode="vllm", served_name="tiny-golden") as srv:
        o = BatchOptions(model=spec, layers="0-1", limit=UNITS, n_tokens=4096, corpus=corpus, llm="openai:tiny-golden",
                         llm_base_url=srv.url, concurrency=2, device="cpu", settings=ExplainSettings(k=3))
        s = run_batch(path, o, hm=hm, progress=False, log=open(tmp_path / "batch.log", "w"))
    assert (s.done, s.failed) == (UNITS, 0), s
    got = stored_results(path)
    if os.environ.get("AUTOINTERP_GOLDEN_GOT"):
        Path(os.environ["AUTOINTERP_GOLDEN_GOT"]).write_text(json.dumps(got, indent=1))
    if os.environ.get("AUTOINTERP_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    # the slice is not degenerate: best of k chosen on calibration, simulation scores with real
    # intervals, judges' p(yes) varying by item (their scores are null: a tiny model's judge says yes)
    assert len(want["explanations"]) == 2 * UNITS
    llm = [e for e in want["explanations"] if e["explainer"] != "baseline"]
    assert all(len({c["calibration"] for c in e["candidates"]}) >= 2 for e in llm)
    sims = [sc for e in llm for sc in e["scores"] if sc["kind"] == "simulation"]
    assert all(sc["value"] is not None and sc["ci_low"] < sc["ci_high"] and sc["margin"] is not None for sc in sims)
    judged = [sc for e in llm for sc in e["scores"] if sc["kind"] in ("detection", "fuzzing")]
    assert len(judged) == 2 * UNITS and all(len({it["p_yes"] for it in sc["details"]["items"]}) > 1 for sc in judged)
    for g, w in zip(got["explanations"], want["explanations"]):
        assert g == w, (g["unit"], g["explainer"])
    assert got == want
