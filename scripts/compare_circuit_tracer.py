"""Benchmark: autointerp's attribution graph against circuit-tracer's, on the same model,
transcoders and prompt.

    PYTHONPATH=. .venv/bin/python scripts/compare_circuit_tracer.py [--ct-python /work/venvs/ct/bin/python]

circuit-tracer (0.5.0, PyPI) lives in its own venv (it pins transformer-lens and friends); this
script runs it there as a child process (`--ct-side`, which imports no autointerp) and exchanges
tensors through files in a temporary folder. No model hub is reachable here, so the model is the
smallest one both load offline: a random-init Llama (4 layers, d_model 64; TransformerLens reads
its config.json from the folder, and its weights through TransformerLens's own Llama conversion)
with the tests' word-level tokenizer, and a transcoder set trained here on it
(`train_transcoders`, a few hundred steps on random word sequences: weak transcoders, but the
comparison is of the attribution maths, not of their quality). The transcoders are written in
the format circuit-tracer loads (`load_transcoder_set`: layer_<L>.safetensors with W_enc
[d_sae, d], W_dec [d_sae, d], b_enc, b_dec, W_skip; hooks mlp.hook_in / mlp.hook_out).

Like with like (what circuit-tracer does differently, read in its source):
- it attributes the de-meaned logit (targets.py `_compute_logit_vecs`: W_U columns less their
  mean); autointerp's graph is run with `demean_logits=True` for the comparison (its default is
  the raw logit, for the completeness identity on the raw logit);
- it zeroes position 0 (replacement_model_transformerlens.py `zero_positions = slice(0, 1)`:
  no latents and a zero error there; the position-0 MLP writes become constants). autointerp
  keeps them, so its position-0 latent nodes are dropped and its position-0 error columns
  zeroed before the influences are compared ("ct convention"); the prompt starts with <bos>
  so circuit-tracer prepends nothing.
Figures (one line each): the active latents (count, overlap, max activation difference), the
edge weights into the target logit over every shared node (Pearson r, max abs difference,
relative to the largest weight), every shared feature-to-feature edge, and the top-20 nodes by
influence (overlap and Spearman correlation over the union), plus the replacement/completeness
scores of both. Last, autointerp's `export --what graph` JSON (stored, then exported) is read with
circuit-tracer's frontend pydantic Model and compared with circuit-tracer's own
`create_graph_files` output (keys, feature types, pruned node ids). Run under the heavy lock: `flock /tmp/heavy.lock nice -n 5 ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "<bos> when mary and john went to the store john gave a drink to"


# ---------------------------------------------------------------- circuit-tracer side (its venv)
def ct_side(work: Path) -> None:
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_graph_scores, compute_node_influence
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config, get_pretrained_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    inp = json.loads((work / "input.json").read_text())
    mdir = str(work / "model")
    L = inp["n_layers"]
    tcs = load_transcoder_set({i: str(work / "ct_transcoders" / f"layer_{i}.safetensors") for i in range(L)},
                              scan="autointerp-compare", feature_input_hook="mlp.hook_in",
                              feature_output_hook="mlp.hook_out", device=torch.device("cpu"), dtype=torch.float32,
                              lazy_encoder=False, lazy_decoder=False)
    hf = AutoModelForCausalLM.from_pretrained(mdir, torch_dtype=torch.float32)
    # the project's transformers (5.x) saves tokenizer_config.json with a class 4.x does not know
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{mdir}/tokenizer.json", unk_token="<unk>", eos_token="<eos>",
                                  bos_token="<bos>")
    tok.save_pretrained(work / "ct_tokenizer")         # TransformerLens wants a tokenizer loaded from a folder
    tok = AutoTokenizer.from_pretrained(str(work / "ct_tokenizer"))
    cfg = get_pretrained_model_config(mdir, fold_ln=False, device="cpu", dtype=torch.float32)
    model = TransformerLensReplacementModel(cfg, tokenizer=tok)
    sd = get_pretrained_state_dict(mdir, cfg, hf_model=hf, dtype=torch.float32)
    model.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False, refactor_factored_attn_matrices=False)
    model._configure_replacement_model(tcs)
    ids = torch.tensor(inp["token_ids"])
    with torch.no_grad():
        tl_logits = model(ids[None])[0, -1]
        hf_logits = hf(ids[None]).logits[0, -1]
    g = attribute(ids, model, attribution_targets=torch.tensor(inp["target_ids"]), batch_size=64,
                  max_feature_nodes=None)
    n_logits = len(g.logit_targets)
    w = torch.zeros(g.adjacency_matrix.shape[0])
    w[-n_logits:] = g.logit_probabilities
    rep, comp = compute_graph_scores(g)
    # the graph JSON: circuit-tracer's own file, and ours read with its frontend's pydantic Model
    from circuit_tracer.frontend.graph_models import Model
    from circuit_tracer.utils.create_graph_files import create_graph_files

    g.cfg.tokenizer_name = str(work / "ct_tokenizer")
    create_graph_files(g, "ct", str(work / "ct_json"), scan="autointerp-compare")
    theirs = json.loads((work / "ct_json" / "ct.json").read_text())
    export = {}
    try:
        Model(**json.loads((work / "ours_export.json").read_text()))
        export["ours_loads_in_ct_model"] = True
    except Exception as e:                      # noqa: BLE001 - reported, it is the figure
        export["ours_loads_in_ct_model"] = f"{type(e).__name__}: {str(e)[:300]}"
    export["ct_node_keys"] = sorted({k for n in theirs["nodes"] for k in n})
    export["ct_metadata_keys"] = sorted(theirs["metadata"])
    export["ct_feature_types"] = sorted({n["feature_type"] for n in theirs["nodes"]})
    export["ct_node_ids"] = [n["node_id"] for n in theirs["nodes"]]
    export["ct_n_links"] = len(theirs["links"])
    (work / "ct_export_check.json").write_text(json.dumps(export))
    torch.save({"adjacency": g.adjacency_matrix, "active_features": g.active_features,
                "activation_values": g.activation_values, "selected_features": g.selected_features,
                "logit_token_ids": g.logit_token_ids, "logit_probabilities": g.logit_probabilities,
                "node_influence": compute_node_influence(g.adjacency_matrix, w), "input_tokens": g.input_tokens,
                "replacement_score": float(rep), "completeness_score": float(comp),
                "tl_vs_hf_logit_maxdiff": float((tl_logits - hf_logits).abs().max())}, work / "ct_graph.pt")


# ---------------------------------------------------------------- autointerp side
def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def build(work: Path, args) -> tuple:
    sys.path.insert(0, str(ROOT / "tests"))
    from tinykit import WORDS, tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from autointerp.mine.sae_train import train_transcoders
    from autointerp.models import HookedModel, load_model
    from autointerp.models.transcoders import TranscoderSet, model_fingerprint

    torch.manual_seed(args.seed)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.d_model, intermediate_size=2 * args.d_model,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=64, bos_token_id=2, eos_token_id=1, pad_token_id=1,
                      initializer_range=args.init, tie_word_embeddings=False)
    mdir = work / "model"
    LlamaForCausalLM(cfg).eval().save_pretrained(mdir)
    tok.save_pretrained(mdir)
    model, tk = load_model(str(mdir), device="cpu", progress=False)
    hm = HookedModel(model, tk, spec=str(mdir))
    rng = random.Random(args.seed)
    corpus = work / "corpus.txt"
    corpus.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "\n" for _ in range(400)))
    t0 = time.perf_counter()
    tcs, rep = train_transcoders(hm, list(range(args.layers)), args.latents, l1=args.l1, n_tokens=args.tokens,
                                 corpus=str(corpus), context_len=32, minibatch=64, lr=3e-3, eval_contexts=8,
                                 skip=args.skip, name="cmp")
    train_s = time.perf_counter() - t0
    tset = TranscoderSet(name="cmp", model=hm.spec, by_layer=tcs, report=rep, fingerprint=model_fingerprint(hm))
    # the same transcoders in circuit-tracer's format (single_layer_transcoder.load_relu_transcoder)
    from safetensors.torch import save_file
    out = work / "ct_transcoders"
    out.mkdir()
    for L, tc in tcs.items():
        if tc.threshold is not None:
            raise SystemExit("JumpReLU transcoders: write activation_function.threshold too (not needed here)")
        w = {"W_enc": tc.W_enc.T.contiguous(), "W_dec": tc.W_dec.contiguous(), "b_enc": tc.b_enc.contiguous(),
             "b_dec": tc.b_dec.contiguous()}
        if tc.W_skip is not None:
            w["W_skip"] = tc.W_skip.contiguous()
        save_file({k: v.detach().float().cpu() for k, v in w.items()}, str(out / f"layer_{L}.safetensors"))
    return hm, tset, rep, train_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct-side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ct-python", default="/work/venvs/ct/bin/python")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--latents", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=32 * 400)
    ap.add_argument("--l1", type=float, default=0.2)
    ap.add_argument("--init", type=float, default=0.1, help="initializer_range of the random Llama")
    ap.add_argument("--skip", action="store_true", help="skip transcoders (W_skip)")
    ap.add_argument("--max-logits", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.ct_side:
        ct_side(Path(args.ct_side))
        return

    from autointerp.graph import build_graph
    from autointerp.graph.prune import compute_influence, graph_scores, logit_weights, normalize_matrix

    work = Path(tempfile.mkdtemp(prefix="cmp-ct-"))
    load0 = os.getloadavg()
    hm, tset, rep, train_s = build(work, args)
    t0 = time.perf_counter()
    g = build_graph(hm, tset, PROMPT, max_logits=args.max_logits, max_feature_nodes=10 ** 9, demean_logits=True)
    ours_s = time.perf_counter() - t0
    graw = build_graph(hm, tset, PROMPT, max_logits=args.max_logits, max_feature_nodes=10 ** 9)
    tids = [r["token_id"] for r in g.logits]
    from autointerp.graph.export import neuronpedia_json
    from autointerp.store import Store

    with Store(work / "store.db") as st:
        gid = st.put_graph(*g.store_records())
        ours_json = neuronpedia_json(st.get_graph(gid))
    (work / "ours_export.json").write_text(json.dumps(ours_json))
    (work / "input.json").write_text(json.dumps({"token_ids": g.token_ids, "target_ids": tids, "n_layers": hm.n_layers}))
    t0 = time.perf_counter()
    p = subprocess.run([args.ct_python, __file__, "--ct-side", str(work)], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    ct_s = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"circuit-tracer side failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    ct = torch.load(work / "ct_graph.pt")

    L, P, T = hm.n_layers, g.P, len(tids)
    res: dict = {"model": f"random-init Llama {L} layers d_model {hm.d_model}, vocab {hm.tokenizer.vocab_size}",
                 "transcoders": f"{args.latents} latents/layer, trained here ({args.tokens} tokens, {train_s:.0f}s), "
                                f"skip={args.skip}, CE recovered {rep.get('ce_recovered')} "
                                f"{rep.get('ce_recovered_reason', '')}".strip(),
                 "prompt_tokens": P, "targets": [r["token"] for r in g.logits]}
    res["token_ids_equal"] = ct["input_tokens"].tolist() == g.token_ids
    res["targets_equal"] = ct["logit_token_ids"].tolist() == tids
    res["transformerlens_vs_hf_logit_max_abs_diff"] = ct["tl_vs_hf_logit_maxdiff"]

    # nodes: key -> index, on each side
    def keys_ours(F_feats):
        k = [("latent", a[0], a[1], a[2]) for a in F_feats]
        k += [("error", Ly, p) for Ly in range(L) for p in range(P)] + [("token", p) for p in range(P)]
        return k + [("logit", t) for t in tids]

    ko = keys_ours(g.features)
    af = ct["active_features"][ct["selected_features"]].tolist()
    kc = [("latent", a[0], a[1], a[2]) for a in af]
    kc += [("error", Ly, p) for Ly in range(L) for p in range(P)] + [("token", p) for p in range(P)]
    kc += [("logit", t) for t in ct["logit_token_ids"].tolist()]
    io, ic = {k: j for j, k in enumerate(ko)}, {k: j for j, k in enumerate(kc)}

    # 1. active latents and their activations
    ours_act = {(a[0], a[1], a[2]): a[3] for a in g.features}
    ours_act1 = {k: v for k, v in ours_act.items() if k[1] > 0}
    ct_act = {tuple(a): float(v) for a, v in zip(ct["active_features"].tolist(), ct["activation_values"].tolist())}
    shared = sorted(set(ours_act1) & set(ct_act))
    res["active_latents"] = {"ours_all_positions": len(ours_act), "ours_pos_gt0": len(ours_act1), "ct": len(ct_act),
                             "shared": len(shared),
                             "jaccard": len(shared) / max(1, len(set(ours_act1) | set(ct_act))),
                             "max_abs_activation_diff": max((abs(ours_act[k] - ct_act[k]) for k in shared), default=None),
                             "max_activation": max(ct_act.values(), default=None)}

    # 2. edges into the target logits over every node both graphs have
    common = [k for k in ko if k in ic and k[0] != "logit"]
    jo = torch.tensor([io[k] for k in common])
    jc = torch.tensor([ic[k] for k in common])
    Ao, Ac = g.adjacency, ct["adjacency"]
    Araw = graw.adjacency
    ro = Ao[-T:][:, jo]
    rc = Ac[-T:][:, jc]
    rraw = Araw[-T:][:, torch.tensor([{k: j for j, k in enumerate(keys_ours(graw.features))}[k] for k in common])]
    err_pos0 = torch.tensor([k[0] == "error" and k[2] == 0 for k in common])
    nz = ~err_pos0            # circuit-tracer's position-0 errors are zero by construction
    scale = float(rc.abs().max())
    res["logit_edges"] = {"n_nodes": int(nz.sum()) * T,
                          "pearson_demeaned": _pearson(ro[:, nz].flatten(), rc[:, nz].flatten()),
                          "max_abs_diff_demeaned": float((ro[:, nz] - rc[:, nz]).abs().max()),
                          "max_abs_weight": scale,
                          "pearson_raw_vs_ct": _pearson(rraw[:, nz].flatten(), rc[:, nz].flatten()),
                          "max_abs_diff_raw_vs_ct": float((rraw[:, nz] - rc[:, nz]).abs().max()),
                          "ct_pos0_error_edges_all_zero": bool((rc[:, err_pos0] == 0).all())}
    # feature -> feature (and error/token -> feature) edges among the shared latents
    lat = [k for k in common if k[0] == "latent"]
    to, tc_ = torch.tensor([io[k] for k in lat]), torch.tensor([ic[k] for k in lat])
    Eo, Ec = Ao[to][:, jo][:, nz], Ac[tc_][:, jc][:, nz]
    res["feature_edges"] = {"n": int(Eo.numel()), "nonzero_ct": int((Ec != 0).sum()),
                            "pearson": _pearson(Eo.flatten(), Ec.flatten()),
                            "max_abs_diff": float((Eo - Ec).abs().max()), "max_abs_weight": float(Ec.abs().max())}

    # 3. top-k nodes by influence (features, errors, tokens), ct convention on our side
    keep = [j for j, k in enumerate(ko) if not (k[0] == "latent" and k[2] == 0)]
    A2 = Ao[keep][:, keep].clone()
    k2 = [ko[j] for j in keep]
    for j, k in enumerate(k2):
        if k[0] == "error" and k[2] == 0:
            A2[:, j] = 0
    probs = torch.tensor([r["prob"] for r in g.logits])
    inf_o = compute_influence(normalize_matrix(A2.double()), logit_weights(len(k2), probs).double())
    inf_c = ct["node_influence"]
    cand = [k for k in k2 if k[0] != "logit" and k in ic]
    vo = torch.tensor([float(inf_o[k2.index(k)]) for k in cand])
    vc = torch.tensor([float(inf_c[ic[k]]) for k in cand])
    n = args.top
    top_o = {cand[j] for j in vo.argsort(descending=True)[:n].tolist()}
    top_c = {cand[j] for j in vc.argsort(descending=True)[:n].tolist()}
    union = sorted(top_o | top_c)
    ui = [cand.index(k) for k in union]
    res[f"top{n}_influence"] = {"overlap": len(top_o & top_c), "of": n, "n_candidates": len(cand),
                                "spearman_over_union": _spearman(vo[ui], vc[ui]),
                                "spearman_all_nodes": _spearman(vo, vc),
                                "latents_in_top_ours": sum(1 for k in top_o if k[0] == "latent")}
    li = [j for j, k in enumerate(cand) if k[0] == "latent"]
    lo = {cand[li[j]] for j in vo[li].argsort(descending=True)[:n].tolist()}
    lc = {cand[li[j]] for j in vc[li].argsort(descending=True)[:n].tolist()}
    lu = [cand.index(k) for k in sorted(lo | lc)]
    res[f"top{n}_latents_influence"] = {"overlap": len(lo & lc), "of": n, "n_latents": len(li),
                                        "spearman_over_union": _spearman(vo[lu], vc[lu]),
                                        "spearman_all_latents": _spearman(vo[li], vc[li])}
    sc_o = graph_scores(A2, probs, sum(1 for k in k2 if k[0] == "latent"), L * P, P)
    res["scores"] = {"ours_ct_convention": {k: round(float(v), 4) for k, v in sc_o.items()},
                     "ours_as_built": {k: round(float(v), 4) for k, v in g.scores.items()},
                     "ct": {"replacement_score": round(ct["replacement_score"], 4),
                            "completeness_score": round(ct["completeness_score"], 4)}}
    ex = json.loads((work / "ct_export_check.json").read_text())
    ours_ids = {n["node_id"] for n in ours_json["nodes"]}
    ct_ids = set(ex["ct_node_ids"])
    res["export"] = {"ours_loads_with_ct_frontend_model": ex["ours_loads_in_ct_model"],
                     "node_keys_only_in_ct": sorted(set(ex["ct_node_keys"]) - {k for n in ours_json["nodes"] for k in n}),
                     "node_keys_only_in_ours": sorted({k for n in ours_json["nodes"] for k in n} - set(ex["ct_node_keys"])),
                     "metadata_keys_only_in_ct": sorted(set(ex["ct_metadata_keys"]) - set(ours_json["metadata"])),
                     "feature_types_ct": ex["ct_feature_types"],
                     "feature_types_ours": sorted({n["feature_type"] for n in ours_json["nodes"]}),
                     "pruned_nodes_ours": len(ours_ids), "pruned_nodes_ct": len(ct_ids),
                     "pruned_node_ids_shared": len(ours_ids & ct_ids),
                     "links_ours": len(ours_json["links"]), "links_ct": ex["ct_n_links"]}
    res["completeness_identity_rel_error_ours_demeaned"] = g.direct["relative_error"]
    res["time_s"] = {"ours_graph": round(ours_s, 2), "ct_subprocess_incl_import": round(ct_s, 1)}
    res["load"] = {"before": [round(x, 2) for x in load0], "after": [round(x, 2) for x in os.getloadavg()]}
    if args.json:
        print(json.dumps(res, indent=1))
        return
    for k, v in res.items():
        print(f"{k}: {json.dumps(v)}")


if __name__ == "__main__":
    main()
