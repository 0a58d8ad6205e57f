"""SAELens both ways (issue #27), with sae-lens itself: scripts/interop_saelens.py runs in a Python
that has sae-lens (kept out of the project's venv: AUTOINTERP_SAELENS_PYTHON, else
.peers/saelens/bin/python, else this interpreter if it imports sae_lens) as a subprocess.
  - SAEs built and saved by sae-lens (standard, TopK, JumpReLU) load here and encode the same
    inputs to the same latents and reconstructions;
  - a TopK SAE trained here (train_topk on the tiny Llama) loads into sae-lens and encodes alike.
Skipped, with the reason, only where no Python with sae-lens is found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinykit import word_corpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "interop_saelens.py"


def _saelens_python() -> str | None:
    cands = [os.environ.get("AUTOINTERP_SAELENS_PYTHON"), str(REPO / ".peers" / "saelens" / "bin" / "python"), sys.executable]
    for c in cands:
        if c and (Path(c).exists() or shutil.which(c)):
            r = subprocess.run([c, "-c", "import sae_lens, autointerp"], capture_output=True, timeout=300,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
            if r.returncode == 0:
                return c
    return None


PY = _saelens_python()
pytestmark = pytest.mark.skipif(PY is None, reason="no Python with sae-lens: make a venv with it (pip install sae-lens) "
                                                   "and set AUTOINTERP_SAELENS_PYTHON to its python")


def run(*args) -> dict:
    r = subprocess.run([PY, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout)


def test_saes_saved_by_saelens_load_here(tmp_path):
    out = run("from-saelens", tmp_path)
    assert set(out["saes"]) == {"standard", "topk", "jumprelu"}
    for name, r in out["saes"].items():
        assert r["latent_max_abs_diff"] <= 1e-5 and r["recons_max_abs_diff"] <= 1e-4, (name, r)
        assert 0 < r["active_frac_autointerp"] == r["active_frac_saelens"] < 1
        assert r["hook_here"] == "blocks.1.resid_post" and r["architecture_here"] == name   # TL's hook name mapped
    assert out["saes"]["topk"]["active_frac_autointerp"] == pytest.approx(8 / 96)


def test_sae_trained_here_loads_into_saelens(tiny_llama, tmp_path):
    from autointerp.mine.sae_train import train_topk

    corpus = Path(word_corpus(tmp_path / "c.txt", 200))
    sae, _ = train_topk(tiny_llama, "blocks.1.resid_post", 64, k=4, n_tokens=32 * 60, corpus=str(corpus),
                        context_len=32, minibatch=64, lr=3e-3, name="trained")
    d = sae.save(tmp_path / "trained")
    out = run("into-saelens", d)["saes"]["trained"]
    assert out["class_in_saelens"] == "TopKSAE"
    assert out["latent_max_abs_diff"] <= 1e-5 and out["recons_max_abs_diff"] <= 1e-4, out
    assert out["active_frac_saelens"] == out["active_frac_autointerp"] == pytest.approx(4 / 64)
