"""`autointerp show` on a store filled by explain_exemplars (fake LLM), and the highlighter."""

import json
import subprocess
import sys

import click

from autointerp.cli.explain import highlight_tokens
from autointerp.pipeline import ExplainSettings, explain_exemplars
from autointerp.score.splits import SplitSizes
from autointerp.store import Store

from test_explain_api import make_exemplars  # noqa: E402  (same directory)


def run(*args):
    return subprocess.run([sys.executable, "-m", "autointerp", *args], capture_output=True, text=True, timeout=120)


def test_show_prints_what_the_store_knows(tmp_path, rec, fake_llm_cls, prompts_dir):
    path = tmp_path / "s.db"
    store = Store(path)
    store.put_model("tiny", dict(family="llama", n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=16, vocab_size=50))
    llm = fake_llm_cls(replies=['"cat" and "dog"'], store=store)
    res = explain_exemplars(store, make_exemplars(rec), llm,
                            settings=ExplainSettings(k=1, n_boot=50, sizes=SplitSizes(n_train=4, n_calib=0, n_test=2)))
    store.close()

    r = run("show", "L1/N7", "--model", "tiny", "--store", str(path), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["explanations"][0]["text"] == res.explanation.text
    kinds = {s["kind"] for s in info["explanations"][0]["scores"]}
    assert {"simulation", "detection", "fuzzing"} <= kinds
    sim = next(s for s in info["explanations"][0]["scores"] if s["kind"] == "simulation")
    assert sim["details"]["records"][0]["simulated"]
    assert info["baselines"][0]["text"].startswith("the tokens")

    r = run("show", "L1/N7", "--model", "tiny", "--store", str(path))
    assert r.returncode == 0, r.stderr
    assert res.explanation.text in r.stdout and "simulation" in r.stdout and "\x1b[" not in r.stdout

    r = run("show", "L1/N8", "--model", "tiny", "--store", str(path))
    assert r.returncode != 0 and r.stderr.startswith("error:") and "knows nothing" in r.stderr


def test_highlight_tokens_styles_active_tokens():
    out = highlight_tokens(["a", " cat", " b"], [0.0, 2.0, 0.0], 2.0)
    assert click.unstyle(out) == "a cat b" and "\x1b[" in out


def test_chance_line_names_the_scores_whose_margin_includes_zero():
    from autointerp.cli.explain import _chance_line
    from autointerp.score.scorers import ScoreRecord

    ok = ScoreRecord(kind="simulation", value=0.6, control=0.1, margin=0.5, margin_low=0.3, margin_high=0.7)
    flat = ScoreRecord(kind="fuzzing", value=0.58, control=0.58, margin=0.0, margin_low=0.0, margin_high=0.0)
    assert _chance_line({"simulation": ok}, "m") is None
    line = _chance_line({"simulation": ok, "fuzzing": flat}, "embedded:x")
    assert "fuzzing score cannot be told from chance" in line and "simulation" not in line
    both = _chance_line({"simulation": ok.model_copy(update={"margin_low": -0.1}), "fuzzing": flat}, "m")
    assert "simulation and fuzzing scores" in both
    assert _chance_line({"detection": ScoreRecord(kind="detection", value=None, reason="constant judge")}, "m") is None
