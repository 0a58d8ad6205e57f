"""TransformerLens' hook spellings are aliases wherever a hook name is taken (core/hooks.py):
each parses to autointerp's name and names the same tensor in a forward pass; a TL name whose
tensor differs is refused with one line naming what to use instead; `sae train --hook` takes a
TL spelling; an SAE config with a TL hook name attaches at the right site. The side-by-side
run against TransformerLens itself (scripts/compare_tl_hooks.py, in a Python that has
transformer_lens: AUTOINTERP_TL_PYTHON, else .peers/saelens/bin/python) runs on random-init
Llama and GPT-2 models; it is skipped, with the reason, only where no such Python is found."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autointerp.core.hooks import (LAYER_SITES, TL_ALIASES, TL_FINAL_REFUSED, TL_REFUSED, TL_SAE_ALIASES, TL_SAE_REFUSED,
                                   HookNameError, TLNameRefused, act_name, canonical, is_hook, parse_hook, sae_hook)
from autointerp.models.sae import SAE, SAEError, load_sae
from tinykit import WORDS, run_cli_lines

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("tl,ours", sorted(TL_ALIASES.items()))
def test_every_alias_parses_to_its_canonical_name(tl, ours):
    assert ours in LAYER_SITES
    assert canonical(f"blocks.7.{tl}") == f"blocks.7.{ours}"
    assert parse_hook(f"blocks.7.{tl}") == (7, ours)
    assert act_name(tl, 7) == act_name(f"blocks.7.{tl}") == act_name(f"blocks.7.{tl}", 7) == f"blocks.7.{ours}"
    assert is_hook(f"blocks.7.{tl}") and canonical(canonical(f"blocks.7.{tl}")) == f"blocks.7.{ours}"
    # SAE sites under an aliased point
    assert canonical(f"blocks.7.{tl}.sae.latents") == f"blocks.7.{ours}.sae.latents"
    assert sae_hook(f"blocks.7.{tl}", "sae.error") == f"blocks.7.{ours}.sae.error"


def test_the_aliases_cover_the_sites_tl_names_alike():
    # every per-layer site but mlp.in (TL has no hook for the normed MLP input with its weight) has a TL spelling
    assert set(LAYER_SITES) - set(TL_ALIASES.values()) == {"mlp.in"}
    assert canonical("ln_final.out") == "ln_final.out" and canonical("blocks.2.attn.z") == "blocks.2.attn.z"


@pytest.mark.parametrize("name", [f"blocks.4.{n}" for n in sorted(TL_REFUSED)] + sorted(TL_FINAL_REFUSED))
def test_refused_tl_names_say_what_to_use_instead_in_one_line(name):
    for call in (canonical, parse_hook, act_name, is_hook):
        if call is is_hook:
            assert not is_hook(name)
            continue
        with pytest.raises(TLNameRefused) as e:
            call(name)
        msg = str(e.value)
        assert isinstance(e.value, (HookNameError, ValueError)) and "\n" not in msg
        assert msg.startswith(f"TransformerLens' {name} ") and "use " in msg
        # every autointerp name the line suggests is a real hook name, at the same layer
        suggested = re.findall(r"\b(?:blocks\.\d+\.[a-z_.]+[a-z]|ln_final\.out)\b", msg.split("use ", 1)[1])
        assert suggested and all(is_hook(s) for s in suggested), msg
        if name.startswith("blocks.4."):
            assert all(s.startswith("blocks.4.") for s in suggested), msg


@pytest.mark.parametrize("point", ["hook_resid_post", "resid_post", "attn.hook_z", "hook_mlp_out"])
def test_saelens_sae_sites_under_a_point(point):
    ours = canonical(f"blocks.5.{point}")
    for tl, site in TL_SAE_ALIASES.items():                 # HookedSAETransformer's names of the same tensors
        assert canonical(f"blocks.5.{point}.{tl}") == f"{ours}.{site}"
        assert parse_hook(f"blocks.5.{point}.{tl}") == (5, f"{ours[len('blocks.5.'):]}.{site}")
    for tl in TL_SAE_REFUSED:
        with pytest.raises(TLNameRefused) as e:
            canonical(f"blocks.5.{point}.{tl}")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"TransformerLens' blocks.5.{point}.{tl} ") and f"use {ours}" in msg


def test_the_known_traps_are_refused():
    with pytest.raises(TLNameRefused, match=r"residual before ln2 .*use blocks\.6\.mlp\.in"):
        canonical("blocks.6.hook_mlp_in")
    with pytest.raises(TLNameRefused, match=r"before the norm's weight .*use blocks\.6\.mlp\.in"):
        canonical("blocks.6.ln2.hook_normalized")
    with pytest.raises(TLNameRefused, match=r"before the final norm's weight .*use ln_final\.out"):
        canonical("ln_final.hook_normalized")
    with pytest.raises(TLNameRefused, match="use blocks.<L>.mlp.in"):
        act_name("hook_mlp_in")
    with pytest.raises(HookNameError, match="unknown hook"):
        canonical("blocks.6.hook_nonsense")


def test_a_forward_pass_takes_tl_names_for_the_same_tensors(tiny):
    ids = torch.tensor([[2, 5, 6, 7, 8, 9, 10]])
    tl_names = [f"blocks.1.{n}" for n in TL_ALIASES]
    run = tiny.forward(ids, cache=tl_names + [canonical(n) for n in tl_names])
    for n in tl_names:
        assert run[n] is run[canonical(n)] and set(run.cache) == {canonical(m) for m in tl_names}
    # a hook given by its TL name edits the tensor
    base = tiny.forward(ids).logits
    edited = tiny.forward(ids, hooks={"blocks.1.hook_mlp_out": lambda v: v * 0}).logits
    same = tiny.forward(ids, hooks={"blocks.1.mlp.out": lambda v: v * 0}).logits
    assert torch.equal(edited, same) and not torch.allclose(edited, base)
    with pytest.raises(TLNameRefused, match="use blocks.1.mlp.in"):
        tiny.forward(ids, cache=["blocks.1.hook_mlp_in"])


def test_an_sae_config_with_a_tl_hook_name_loads_at_the_right_site(tiny_llama, tmp_path):
    hm, g = tiny_llama, torch.Generator().manual_seed(0)
    d, n = hm.d_model, 32
    sae = SAE(architecture="standard", W_enc=torch.randn(d, n, generator=g), b_enc=torch.zeros(n),
              W_dec=torch.randn(n, d, generator=g) / 8, b_dec=torch.zeros(d), hook="blocks.1.resid_post", name="tl")
    out = sae.save(tmp_path / "tl")
    cfg = json.loads((out / "cfg.json").read_text())
    cfg["hook_name"] = "blocks.1.attn.hook_out"                        # not a TL name: one line
    (out / "cfg.json").write_text(json.dumps({**cfg, "metadata": {**cfg.get("metadata", {}), "hook_name": None}}))
    with pytest.raises(SAEError, match="not a hook point autointerp knows"):
        load_sae(out)
    (out / "cfg.json").write_text(json.dumps({**cfg, "hook_name": "blocks.1.hook_attn_out",
                                              "metadata": {**cfg.get("metadata", {}), "hook_name": None}}))
    back = load_sae(out)
    assert back.hook == "blocks.1.attn.out" and back.latents_hook == "blocks.1.attn.out.sae.latents"
    hm.attach_sae(back)
    try:
        ids = torch.tensor([[2, 5, 6, 7, 8, 9]])
        run = hm.forward(ids, cache=["blocks.1.hook_attn_out", "blocks.1.hook_attn_out.sae.latents"])
        assert torch.allclose(run["blocks.1.attn.out.sae.latents"], back(run["blocks.1.attn.out"])[0], atol=1e-6)
    finally:
        hm.detach_sae(back)
    (out / "cfg.json").write_text(json.dumps({**cfg, "hook_name": "blocks.1.hook_mlp_in",
                                              "metadata": {**cfg.get("metadata", {}), "hook_name": None}}))
    with pytest.raises(SAEError, match=r"^SAE hook: TransformerLens' blocks.1.hook_mlp_in .*use blocks.1.mlp.in"):
        load_sae(out)


@pytest.fixture(scope="module")
def env(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    tiny_llama.model.save_pretrained(d / "model")
    tiny_llama.tokenizer.save_pretrained(d / "model")
    rng = random.Random(1)
    (d / "c.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "\n" for _ in range(60)))
    return d


def test_sae_train_takes_a_tl_hook_spelling(env, capsys):
    common = ["sae", "train", "--model", str(env / "model"), "--device", "cpu", "--layer", "1", "--latents", "64",
              "--k", "4", "--tokens", "512", "--corpus", str(env / "c.txt"), "--context-len", "32", "--minibatch", "64"]
    code, out, err = run_cli_lines([*common, "--hook", "blocks.1.hook_mlp_out", "--out", str(env / "s"), "--json"],
                                   capsys)
    assert code == 0, err
    assert json.loads((env / "s" / "cfg.json").read_text())["hook_name"] == "blocks.1.mlp.out"
    assert load_sae(env / "s").hook == "blocks.1.mlp.out"
    code, out, err = run_cli_lines([*common, "--hook", "blocks.1.hook_mlp_in", "--out", str(env / "t")], capsys)
    assert code == 2 and not (env / "t").exists()
    assert len(err) == 1, err
    line = err[0]
    assert "TransformerLens' blocks.1.hook_mlp_in" in line and "use blocks.1.mlp.in" in line


# ---------------------------------------------------------------- side by side with TransformerLens itself
def _tl_python() -> str | None:
    for c in (os.environ.get("AUTOINTERP_TL_PYTHON"), str(REPO / ".peers" / "saelens" / "bin" / "python"),
              str(Path(os.environ.get("AUTOINTERP_SAELENS_PYTHON", "/nonexistent")))):
        if c and Path(c).exists():
            r = subprocess.run([c, "-c", "import transformer_lens"], capture_output=True, timeout=300)
            if r.returncode == 0:
                return c
    return None


TL_PY = _tl_python()


@pytest.mark.skipif(TL_PY is None, reason="no Python with transformer_lens: make a venv with it (scripts/peers.sh, "
                                          "pip install sae-lens) and set AUTOINTERP_TL_PYTHON to its python")
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_aliases_are_the_same_tensors_as_in_transformer_lens(model):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_tl_hooks.py"), "--model", model,
                        "--tl-python", TL_PY, "--json"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout)
    rows = {x["tl"]: x for x in res["rows"]}
    assert res["logits_max_abs_diff"] < 1e-4 and res["aliases_ok"]
    for tl, ours in TL_ALIASES.items():
        row = rows[f"blocks.L.{tl}"]
        assert row["autointerp"] == f"blocks.L.{ours}" and row["max_abs_diff"] <= 1e-5 * max(row["max_abs_value"], 1)
    # the traps: TL's tensors differ from the autointerp hook their refusal points to (random norm weights)
    for tl in ("blocks.L.hook_mlp_in", "blocks.L.ln2.hook_normalized", "ln_final.hook_normalized"):
        assert rows[tl]["status"] == "refused" and rows[tl]["max_abs_diff"] > 0.1, rows[tl]
    # ... while the sum the hook_resid_mid line suggests is exact
    assert rows["blocks.L.hook_resid_mid"]["max_abs_diff"] <= 1e-5
    # an SAE spliced in by SAELens' HookedSAETransformer: its latents and error are autointerp's
    for tl, ours in TL_SAE_ALIASES.items():
        row = rows[f"blocks.L.hook_resid_post.{tl}"]
        assert row["autointerp"] == f"blocks.L.resid_post.{ours}" and row["max_abs_diff"] <= 1e-5 * row["max_abs_value"]
    assert rows["blocks.L.hook_resid_post.hook_sae_output"]["max_abs_diff"] > 0.1     # recons + error: not recons
    # an SAE trained on TL's ln2.hook_normalized: SAELens' latents are autointerp's at mlp.in, the norm folded in
    row = rows["blocks.L.ln2.hook_normalized.hook_sae_acts_post"]
    assert row["status"] == "folded" and row["autointerp"] == "blocks.L.mlp.in.sae.latents"
    assert row["max_abs_value"] > 0.5 and row["max_abs_diff"] <= 1e-5 * row["max_abs_value"], row
