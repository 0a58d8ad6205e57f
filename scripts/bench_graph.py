"""Benchmark: transcoders trained here and attribution graphs on them, on this CPU.

    .venv/bin/python scripts/bench_graph.py train-one --layer 15 --latents 2048 --tokens 8192 --l1 0.1
    .venv/bin/python scripts/bench_graph.py train-set --layers 0-29 --latents 1024 --tokens 16384 --out DIR
    .venv/bin/python scripts/bench_graph.py graph --transcoders DIR [--validate 10] [--explain 10]

Each step runs the real CLI (`autointerp sae train --kind transcoder`, `autointerp graph`) in a
child process under /usr/bin/time and reports its wall time, its peak RSS (max resident set of
the child) and what the command printed (--json), with the load average before and after. The
`graph` step runs the issue's 10-token prompt ("The Eiffel Tower is in the city of") and a
40-token prompt, checks the completeness identity in each JSON (|bias + sum of contributions -
raw logit| / |raw logit| < 1e-3), reports the validation's correlation and MAE and the explained
top latents (exact-baseline score, control, margin): the issue's done-when command
`graph "The Eiffel Tower is in the city of" --explain 10 --validate 10 --json`. Results are
printed as one JSON document; nothing large is written into the repository (--out is yours).
Run it under the heavy lock: `flock /tmp/heavy.lock nice -n 5 ...`. On a shared, loaded machine set
OMP_NUM_THREADS=1 (the children inherit it): with 2 threads on 2 busy cores each op waits for its
slower thread, and the same training step ran 3-4x slower than with 1 (measured at load ~4).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT_10 = "The Eiffel Tower is in the city of"                 # the prompt: 9 SmolLM2 tokens
PROMPT_40 = ("The Eiffel Tower, built for the World Fair of 1889 by Gustave Eiffel, is a wrought iron lattice tower "
             "on the Champ de Mars. It is in the city of")       # 40 SmolLM2 tokens


def _run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    exe = str(Path(sys.executable).with_name("autointerp"))
    load0 = os.getloadavg()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tf.name, exe, *args], capture_output=True,
                           text=True, env=env)
        wall, rss = tf.read().split()[-2:]
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({p.returncode}): {p.stderr.strip().splitlines()[-1]}")
    return {"wall_s": float(wall), "peak_rss_mb": round(int(rss) / 1024, 1), "load_before": [round(x, 2) for x in load0],
            "load_after": [round(x, 2) for x in os.getloadavg()], "out": json.loads(p.stdout)}


def train(args, layers: str) -> dict:
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-graph-"))
    r = _run(["sae", "train", "--kind", "transcoder", "--layers", layers, "--latents", str(args.latents), "--tokens",
              str(args.tokens), "--l1", str(args.l1), "--context-len", "64", "--model", args.model, "--device", "cpu",
              "--minibatch", str(args.minibatch), *(["--lr", str(args.lr)] if args.lr else []),
              *(["--skip"] if args.skip else []), "--out", str(out / f"tc-{layers}"), "--json"])
    o = r.pop("out")
    keep = {k: o.get(k) for k in ("kind", "layers", "latents", "l1", "lr", "minibatch", "tokens", "steps", "seconds",
                                  "timing", "ce_clean", "ce_replaced", "ce_zero_ablated", "ce_recovered", "eval_tokens")}
    keep["train_tokens_per_s"] = round(o["tokens"] / max(o["seconds"] - o["timing"]["eval_s"], 1e-9), 1)
    pl = o["per_layer"]
    keep["ev_mean"] = round(sum(x["explained_variance"] for x in pl) / len(pl), 4)
    keep["l0_mean"] = round(sum(x["l0"] for x in pl) / len(pl), 2)
    keep["dead_mean"] = round(sum(x["dead_frac"] for x in pl) / len(pl), 4)
    keep["per_layer"] = pl if len(pl) <= 3 else f"{len(pl)} layers (see the set's transcoder_set.json)"
    return {**r, **keep, "out": o["out"]}


def graph(args) -> dict:
    res = {}
    for name, prompt in (("10-token", PROMPT_10), ("40-token", PROMPT_40)):
        cmd = ["graph", prompt, "--transcoders", args.transcoders, "--model", args.model, "--device", "cpu", "--json",
               "--max-feature-nodes", str(args.max_feature_nodes), "--store", args.store]
        if args.validate:
            cmd += ["--validate", str(args.validate)]
        if args.explain:
            cmd += ["--explain", str(args.explain)]
        r = _run(cmd)
        d = r.pop("out")
        c = d["completeness"]
        total = c["bias_terms"] + sum(x["contribution"] for x in c["contributions"])
        rel = abs(total - c["raw_logit"]) / abs(c["raw_logit"])
        v = d.get("validation") or {}
        res[name] = {**r, "n_tokens": len(d["tokens"]), "target": c["target"], "raw_logit": round(c["raw_logit"], 4),
                     "completeness_identity_rel_error": rel, "identity_holds": rel < 1e-3,
                     "n_contributions": len(c["contributions"]), "n_active_latents": d["n_active_latents"],
                     "n_attributed": d["n_selected_latents"], "n_nodes_kept": d["n_nodes_kept"],
                     "n_edges_kept": len(d["edges"]), **d["scores"], "timing": d["timing"],
                     "validation": {k: v.get(k) for k in ("k", "correlation", "correlation_reason", "mae",
                                                          "mean_abs_observed")} if v else None,
                     "top_latents": [f"{n['layer']}/{n['latent']}@{n['pos']}" for n in
                                     sorted((n for n in d["nodes"] if n["kind"] == "latent"),
                                            key=lambda n: -n["influence"])[:5]],
                     "explained": {u: {k: e.get(k) for k in ("explainer", "explanation", "score", "control", "margin",
                                                             "reason")} for u, e in d.get("explained", {}).items()},
                     "n_explained_with_score": sum(1 for e in d.get("explained", {}).values()
                                                   if e.get("score") is not None),
                     "validation_stored": v.get("k") is not None}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["train-one", "train-set", "graph"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--layers", default="0-29")
    ap.add_argument("--latents", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--l1", type=float, default=0.1)
    ap.add_argument("--minibatch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--skip", action="store_true", help="skip transcoders (a linear path next to the latents)")
    ap.add_argument("--out", default=None, help="where transcoder sets are written (outside the repository)")
    ap.add_argument("--transcoders", default=None)
    ap.add_argument("--validate", type=int, default=10)
    ap.add_argument("--explain", type=int, default=10)
    ap.add_argument("--max-feature-nodes", type=int, default=2048, help="graph's own default")
    ap.add_argument("--store", default=str(Path(tempfile.gettempdir()) / "bench-graph.db"))
    args = ap.parse_args()
    if args.step == "train-one":
        res = train(args, str(args.layer))
    elif args.step == "train-set":
        res = train(args, args.layers)
    else:
        if not args.transcoders:
            raise SystemExit("graph needs --transcoders DIR")
        res = graph(args)
    print(json.dumps({"step": args.step, "model": args.model, "cpus": os.cpu_count(),
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), **{"result": res}}, indent=1))


if __name__ == "__main__":
    main()
