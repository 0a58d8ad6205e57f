"""Side by side with TransformerLens: is each TL hook name the same tensor as the autointerp hook it
is an alias of (core/hooks.py TL_ALIASES), and how far is each refused TL name (TL_REFUSED,
TL_FINAL_REFUSED) from the autointerp hook its refusal line points to?

    PYTHONPATH=. .venv/bin/python scripts/compare_tl_hooks.py [--model smollm2-135m|tiny-llama|tiny-gpt2|SPEC]
        [--tl-python .peers/saelens/bin/python] [--json]

TransformerLens lives in its own venv (it pins transformers and friends); its side of this script
(`--tl-side WORK`, which imports no autointerp) runs there as a child process, and tensors are
exchanged through files in a temporary folder. No model hub is reachable here, so TransformerLens
reads the model's config.json from a local folder (SmolLM2's converted copy in autointerp's cache,
or a random-init Llama/GPT-2 saved here) and converts the Hugging Face weights itself, with every
processing step off: fold_ln=False, center_writing_weights=False, center_unembed=False,
fold_value_biases=False, refactor_factored_attn_matrices=False. Both sides run the same token ids
in float32. With SAELens in that venv too, a random standard SAE is attached at the middle layer's
resid_post on both sides (SAELens' HookedSAETransformer, use_error_term=True) for the SAE sites
(hook_sae_acts_post, hook_sae_error, ...). Figures: per TL name, the max |diff| over every layer
against the autointerp tensor (same shape required), and the largest |value| for scale. An alias passes with max |diff| <=
--tol relative to the largest |value|. Exit 1 when an alias fails. Run under the heavy lock for
SmolLM2: `flock /tmp/heavy.lock nice -n 5 ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("The capital of France is Paris. When Mary and John went to the store, John gave a drink to Mary. "
        "Recipes for chocolate cake need flour, sugar and eggs.")
# a refused TL name -> the autointerp tensor its refusal line points to (a sum of hooks where it says so)
NEAREST = {
    "hook_mlp_in": ["mlp.in"], "hook_resid_mid": ["resid_pre", "attn.out"], "ln2.hook_normalized": ["mlp.in"],
    "ln1.hook_normalized": ["resid_pre"], "attn.hook_rot_q": ["attn.q"], "attn.hook_rot_k": ["attn.k"],
    "mlp.hook_pre": ["mlp.post"], "mlp.hook_pre_linear": ["mlp.post"],
    "ln_final.hook_normalized": ["ln_final.out"], "hook_embed": ["blocks.0.resid_pre"],
    "hook_pos_embed": ["blocks.0.resid_pre"],
}


# ---------------------------------------------------------------- TransformerLens side (its venv)
def tl_side(work: Path) -> None:
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config, get_pretrained_state_dict
    from transformers import AutoModelForCausalLM

    inp = json.loads((work / "input.json").read_text())
    mdir = inp["model_dir"]
    hf = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32)
    cfg = get_pretrained_model_config(mdir, fold_ln=False, device="cpu", dtype=torch.float32)
    if not (Path(mdir) / "tokenizer.json").exists():
        cfg.tokenizer_name = None          # a random-init model saved without a tokenizer: ids are given
    sae_dir = work / "sae"
    if sae_dir.exists():                   # SAELens' HookedSAETransformer, the SAE spliced in with its error term
        from sae_lens import SAE, HookedSAETransformer

        model = HookedSAETransformer(cfg, move_to_device=False)
    else:
        model = HookedTransformer(cfg, move_to_device=False)
    sd = get_pretrained_state_dict(mdir, cfg, hf_model=hf, dtype=torch.float32)
    model.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False, refactor_factored_attn_matrices=False)
    model.eval()
    model.set_use_hook_mlp_in(True)        # opt-in hooks: on, so hook_mlp_in and attn.hook_result exist
    model.set_use_attn_result(True)
    if sae_dir.exists():
        model.add_sae(SAE.load_from_disk(str(sae_dir), device="cpu"), use_error_term=True)
        if (work / "sae_ln2").exists():    # a second one on TL's ln2.hook_normalized (autointerp folds the norm in)
            model.add_sae(SAE.load_from_disk(str(work / "sae_ln2"), device="cpu"), use_error_term=True)
    ids = torch.tensor(inp["token_ids"])[None]
    want = set(inp["tl_names"])
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids, names_filter=lambda n: n in want)
    out = {n: cache[n].float() for n in cache.keys()}
    out["logits"] = logits.float()
    torch.save(out, work / "tl.pt")
    (work / "tl.json").write_text(json.dumps({"hooks": sorted(model.hook_dict), "cfg": {
        k: str(getattr(cfg, k)) for k in ("model_name", "n_layers", "n_heads", "n_key_value_heads", "normalization_type",
                                          "positional_embedding_type", "act_fn", "gated_mlp")}}))


# ---------------------------------------------------------------- autointerp side (this venv)
def _tiny_dir(kind: str, d: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "tiny-llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                             rms_norm_eps=1e-5))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=3, n_head=4, n_positions=64, n_ctx=64,
                                           bos_token_id=1, eos_token_id=1))   # n_ctx: TL reads it
    for p in model.parameters():           # random norm weights and biases, so "before/after the weight" shows
        if p.ndim == 1:
            p.data.normal_(1.0 if p.abs().sum() else 0.0, 0.3)
    model.save_pretrained(d)
    return d


def _model_dir(spec: str, work: Path) -> Path:
    if spec in ("tiny-llama", "tiny-gpt2"):
        return _tiny_dir(spec, work / "model")
    from autointerp.models.loader import convert_gguf, resolve_spec

    r = resolve_spec(spec)
    if r.origin in ("alias", "gguf"):
        return convert_gguf(r.path)
    if r.origin == "dir":
        return r.path
    raise SystemExit(f"compare_tl_hooks: {spec!r} is a hub id; no hub here, pass a local folder")


def compare(spec: str, tl_python: str, tol: float = 1e-5, sae: bool = True) -> dict:
    from transformers import AutoModelForCausalLM

    from autointerp.core.hooks import (FINAL_SITES, LAYER_SITES, TL_ALIASES, TL_FINAL_ALIASES, TL_FINAL_REFUSED,
                                       TL_REFUSED, TL_SAE_ALIASES, act_name, canonical)
    from autointerp.models.hooked import HookedModel
    from autointerp.models.sae import SAE, load_sae

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="tlhooks-") as tmp:
        work = Path(tmp)
        mdir = _model_dir(spec, work)
        if spec.startswith("tiny-"):       # random weights, no tokenizer: random token ids
            hm = HookedModel(AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32), None, spec=spec)
        else:
            hm = HookedModel.load(str(mdir), device="cpu", progress=False)
        if hm.tokenizer is not None:
            ids = hm.tokenizer(TEXT)["input_ids"][:48]
        else:
            ids = torch.randint(3, 300, (24,), generator=torch.Generator().manual_seed(0)).tolist()
        nL = hm.n_layers
        per_layer = {**{k: "alias" for k in TL_ALIASES}, **{k: "refused" for k in TL_REFUSED}}
        final = {**{k: "alias" for k in TL_FINAL_ALIASES}, **{k: "refused" for k in TL_FINAL_REFUSED}}
        tl_names = [f"blocks.{L}.{n}" for L in range(nL) for n in per_layer] + list(final)
        # an SAE (random weights) at the middle layer's residual output, in both
        sae_layer = nL // 2
        sae_point_tl, sae_tl_names = f"blocks.{sae_layer}.hook_resid_post", {}
        if sae:
            g = torch.Generator().manual_seed(1)
            d, n = hm.d_model, 4 * hm.d_model
            the_sae = SAE(architecture="standard", W_enc=torch.randn(d, n, generator=g) / d ** 0.5,
                          b_enc=torch.randn(n, generator=g) / 10, W_dec=torch.randn(n, d, generator=g) / n ** 0.5,
                          b_dec=torch.randn(d, generator=g) / 10, hook=sae_point_tl, name="cmp")
            cfg_path = the_sae.save(work / "sae") / "cfg.json"
            cfg = json.loads(cfg_path.read_text())    # SAELens attaches at TL's spelling of the point
            cfg["hook_name"] = cfg["metadata"]["hook_name"] = sae_point_tl
            cfg_path.write_text(json.dumps(cfg))
            hm.attach_sae(load_sae(work / "sae"))
            sae_tl_names = {f"{sae_point_tl}.{t}": ("alias", [canonical(f"{sae_point_tl}.{t}")])
                            for t in TL_SAE_ALIASES}
            base = canonical(sae_point_tl)
            sae_tl_names |= {f"{sae_point_tl}.{t}": ("refused", near) for t, near in (
                ("hook_sae_input", [base]), ("hook_sae_acts_pre", [f"{base}.sae.latents"]),
                ("hook_sae_recons", [f"{base}.sae.recons"]), ("hook_sae_output", [f"{base}.sae.recons"]))}
            # a second SAE on TL's ln2.hook_normalized (before ln2's weight and bias): autointerp reads it at mlp.in
            # with the norm folded into its weights (models/sae.py); its latents must be SAELens' latents
            ln2_tl = f"blocks.{sae_layer}.ln2.hook_normalized"
            ln2_sae = SAE(architecture="standard", W_enc=torch.randn(d, n, generator=g) / d ** 0.5,
                          b_enc=torch.randn(n, generator=g) / 10, W_dec=torch.randn(n, d, generator=g) / n ** 0.5,
                          b_dec=torch.randn(d, generator=g) / 10, hook=ln2_tl, name="cmp-ln2")
            ln2_sae.save(work / "sae_ln2")
            hm.attach_sae(load_sae(work / "sae_ln2"))
            sae_tl_names[f"{ln2_tl}.hook_sae_acts_post"] = ("folded", [f"{act_name('mlp.in', sae_layer)}.sae.latents"])
            tl_names += list(sae_tl_names)
        (work / "input.json").write_text(json.dumps({"model_dir": str(mdir), "token_ids": ids, "tl_names": tl_names}))
        r = subprocess.run([tl_python, str(Path(__file__).resolve()), "--tl-side", str(work)], capture_output=True,
                           text=True, timeout=900, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        if r.returncode != 0:
            raise SystemExit(f"compare_tl_hooks: the TransformerLens side failed:\n{r.stderr[-3000:]}")
        tl = torch.load(work / "tl.pt")
        tl_info = json.loads((work / "tl.json").read_text())
        ours_names = sorted({act_name(s, L) for L in range(nL) for s in LAYER_SITES} | set(FINAL_SITES)
                            | {n for _, near in sae_tl_names.values() for n in near})
        run = hm.forward(torch.tensor(ids)[None], cache=ours_names)
        logit_diff = float((run.logits.float() - tl["logits"]).abs().max())

        def target(tl_name: str, layer: int | None, status: str) -> tuple[list[str], str]:
            if status == "alias":
                name = tl_name if layer is None else f"blocks.{layer}.{tl_name}"
                ours = canonical(name)
                return [ours], ours
            near = NEAREST.get(tl_name)
            if near is None:
                return [], "-"
            names = [n if n.startswith("blocks.") or n in FINAL_SITES else act_name(n, layer) for n in near]
            return names, " + ".join(names)

        rows = []
        for tl_name, status in [*per_layer.items(), *final.items()]:
            layers = [None] if tl_name in final else list(range(nL))
            diff, scale, missing, label, shape_note = 0.0, 0.0, [], "-", None
            for L in layers:
                full = tl_name if L is None else f"blocks.{L}.{tl_name}"
                names, label = target(tl_name, L, status)
                if full not in tl:
                    missing.append(full)
                    continue
                theirs = tl[full][0]
                finite = theirs[theirs.isfinite()]
                scale = max(scale, float(finite.abs().max()) if finite.numel() else 0.0)
                if not names:
                    continue
                ours = sum(run.cache[n][0].float() for n in names)
                if ours.shape != theirs.shape:
                    shape_note = f"shapes differ: TL {tuple(theirs.shape)}, autointerp {tuple(ours.shape)}"
                    continue
                diff = max(diff, float((ours - theirs).abs().max()))
            if tl_name not in final:
                label = label.replace(f"blocks.{nL - 1}.", "blocks.L.")
            present = len(missing) < len(layers)
            row = {"tl": tl_name if tl_name in final else f"blocks.L.{tl_name}", "status": status, "autointerp": label,
                   "max_abs_diff": diff if present and label != "-" and shape_note is None else None,
                   "max_abs_value": scale if present else None}
            if not present:
                row["note"] = "TransformerLens has no such hook for this model"
            elif shape_note:
                row["note"] = shape_note
            if status == "alias":
                row["same"] = bool(present and shape_note is None and diff <= tol * max(scale, 1.0))
            rows.append(row)
        for tl_name, (status, names) in sae_tl_names.items():    # the SAE's sites, at one layer
            theirs, ours = tl[tl_name][0], run[names[0]][0].float()
            rows.append({"tl": tl_name.replace(f"blocks.{sae_layer}.", "blocks.L."), "status": status,
                         "autointerp": names[0].replace(f"blocks.{sae_layer}.", "blocks.L."),
                         "max_abs_diff": float((ours - theirs).abs().max()),
                         "max_abs_value": float(theirs.abs().max()), "layer": sae_layer})
            if status in ("alias", "folded"):
                rows[-1]["same"] = rows[-1]["max_abs_diff"] <= tol * max(rows[-1]["max_abs_value"], 1.0)
        return {"model": str(spec), "model_dir": str(mdir), "n_layers": nL, "tokens": len(ids),
                "tl_cfg": tl_info["cfg"], "logits_max_abs_diff": logit_diff, "tolerance": tol, "rows": rows,
                "aliases_ok": all(r["same"] for r in rows if r["status"] in ("alias", "folded") and r.get("note") is None),
                "seconds": round(time.time() - t0, 1)}


def markdown(res: dict) -> str:
    """The README's table: TL name, autointerp name (or what the refusal points to), max |diff|."""
    def num(x):
        return "-" if x is None else f"{x:.1e}" if x else "0"

    lines = ["| TransformerLens | autointerp | max \\|diff\\| | max \\|TL value\\| |", "|---|---|---|---|"]
    for r in res["rows"]:
        if r.get("note", "").startswith("TransformerLens has no such hook"):
            continue
        ours = f"`{r['autointerp']}`" if r["status"] == "alias" else f"`{r['autointerp']}` (the norm folded into the SAE)" \
            if r["status"] == "folded" else (
            "refused" + ("" if r["autointerp"] == "-" else f" (use `{r['autointerp']}`)"))
        lines.append(f"| `{r['tl']}` | {ours} | {num(r['max_abs_diff'])} | {num(r['max_abs_value'])} |")
    return "\n".join(lines)


def _default_tl_python() -> str:
    for c in (os.environ.get("AUTOINTERP_TL_PYTHON"), str(ROOT / ".peers" / "saelens" / "bin" / "python")):
        if c and Path(c).exists():
            return c
    return sys.executable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tl-python", default=None, help="a Python with transformer_lens [AUTOINTERP_TL_PYTHON, "
                                                      ".peers/saelens/bin/python]")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", type=Path, default=None, help="render a saved --json result as the README's table")
    ap.add_argument("--tl-side", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.tl_side is not None:
        return tl_side(a.tl_side)
    if a.markdown is not None:
        return print(markdown(json.loads(a.markdown.read_text())))
    res = compare(a.model, a.tl_python or _default_tl_python(), a.tol)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{res['model']}: {res['n_layers']} layers, {res['tokens']} tokens, TransformerLens with every "
              f"processing step off; logits max |diff| {res['logits_max_abs_diff']:.2e}")
        print(f"{'TransformerLens':<44} {'':<8} {'autointerp':<38} {'max |diff|':>10} {'max |value|':>11}")
        for r in res["rows"]:
            d = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
            v = "-" if r["max_abs_value"] is None else f"{r['max_abs_value']:.2e}"
            print(f"{r['tl']:<44} {r['status']:<8} {r['autointerp']:<38} {d:>10} {v:>11}  {r.get('note', '')}")
        print(f"aliases the same tensor: {'yes' if res['aliases_ok'] else 'NO'} ({res['seconds']} s)")
    sys.exit(0 if res["aliases_ok"] else 1)


if __name__ == "__main__":
    main()
