"""Benchmark: edge attribution patching on SmolLM2 against exact edge patching, and its cost.

    .venv/bin/python scripts/bench_circuit.py                     # smollm2-135m, 8 IOI pairs, CPU
    .venv/bin/python scripts/bench_circuit.py --pairs 24 --eap-pairs 24 --device cuda --json
    .venv/bin/python scripts/bench_circuit.py --receivers all --faithfulness   # slower (GPU)

Builds --pairs IOI pairs validated on the model, then
  * EAP (and EAP-IG with --ig-steps) over every edge of the graph: seconds, forward/backward
    passes per batch, peak memory (CUDA: max allocated; CPU: peak RSS of the process);
  * exact edge patching of the edges into the logits (--receivers all: every edge; slow) and
    the Spearman rank correlation of EAP with it;
  * with --faithfulness: the top-k EAP edges run as circuits (every other edge patched), the
    faithfulness-vs-edges curve.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", type=int, default=8, help="IOI pairs for the rank check")
    ap.add_argument("--eap-pairs", type=int, default=None, help="IOI pairs for the EAP timing [default: --pairs]")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ig-steps", type=int, default=0, help="also time EAP-IG with this many steps (0: skip)")
    ap.add_argument("--receivers", choices=["logits", "all"], default="logits")
    ap.add_argument("--faithfulness", action="store_true", help="measure the curve of the top EAP edges (slow on CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import torch

    from autointerp.models import HookedModel
    from autointerp.patching.core import prepare
    from autointerp.patching.edge_search import faithfulness_of, size_grid
    from autointerp.patching.edges import EdgeGraph, eap_scores, exact_edge_scores, spearman
    from autointerp.tasks.api import builtin_pairs

    if a.threads:
        torch.set_num_threads(a.threads)
    hm = HookedModel.load(a.model, device=a.device, progress=False)
    n_eap = a.eap_pairs or a.pairs
    items, _ = builtin_pairs(hm, "ioi", max(a.pairs, n_eap), seed=0)
    if len(items) < a.pairs:
        sys.exit(f"only {len(items)} IOI pairs validated on {hm.spec}")
    graph = EdgeGraph.of(hm)
    cuda = hm.device.type == "cuda"

    def peak() -> float:
        if cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # MiB (Linux: KiB)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    eap_big = eap_scores(hm, items[:n_eap], batch_size=a.batch_size, graph=graph)
    if cuda:
        torch.cuda.synchronize()
    t_eap = time.perf_counter() - t
    mem_eap = peak()
    out = {"model": hm.spec, "device": str(hm.device), "threads": torch.get_num_threads(),
           "graph": {"senders": len(graph.senders), "receivers": len(graph.receivers), "edges": graph.n_edges},
           "eap": {"pairs": n_eap, "seconds": round(t_eap, 2), "peak_mib": round(mem_eap),
                   "batches": eap_big.settings["batches"],
                   "passes_per_batch": (eap_big.settings["forwards"] + eap_big.settings["backwards"])
                   / eap_big.settings["batches"],
                   "clean_logit_diff": eap_big.clean_logit_diff, "corrupt_logit_diff": eap_big.corrupt_logit_diff}}
    if a.ig_steps:
        t = time.perf_counter()
        ig = eap_scores(hm, items[:n_eap], method="eap-ig", steps=a.ig_steps, batch_size=a.batch_size, graph=graph)
        out["eap_ig"] = {"steps": a.ig_steps, "seconds": round(time.perf_counter() - t, 2)}
    check = items[:a.pairs]
    eap = eap_big if n_eap == a.pairs else eap_scores(hm, check, batch_size=a.batch_size, graph=graph)
    idx = [e for e, (s, r) in enumerate(graph.edges) if a.receivers == "all" or graph.receivers[r].kind == "logits"]
    t = time.perf_counter()
    ex = exact_edge_scores(hm, check, idx, batch_size=a.batch_size, graph=graph)
    t_ex = time.perf_counter() - t
    rho = spearman(eap.scores[idx], ex.scores[idx])
    top = sorted(idx, key=lambda e: -abs(ex.scores[e]))[:10]
    out["rank_check"] = {"pairs": a.pairs, "receivers": a.receivers, "edges": len(idx), "spearman": rho,
                         "exact_seconds": round(t_ex, 2),
                         "top_exact": [{"edge": graph.edge_name(e), "exact": round(float(ex.scores[e]), 4),
                                        "eap": round(float(eap.scores[e]), 4)} for e in top]}
    if a.ig_steps:
        igc = ig if n_eap == a.pairs else eap_scores(hm, check, method="eap-ig", steps=a.ig_steps,
                                                     batch_size=a.batch_size, graph=graph)
        out["rank_check"]["spearman_ig"] = spearman(igc.scores[idx], ex.scores[idx])
    if a.faithfulness:
        data = prepare(hm, check, a.batch_size)
        order = eap.ranked()
        curve = []
        for k in size_grid(graph.n_edges, 10):
            t = time.perf_counter()
            f = faithfulness_of(hm, data, graph, order[:k], eap.clean_logit_diff, eap.corrupt_logit_diff)
            curve.append({"n_edges": k, "faithfulness": round(f, 4), "seconds": round(time.perf_counter() - t, 2)})
        out["faithfulness_curve"] = curve
    out["platform"] = platform.platform()
    if a.json:
        print(json.dumps(out, indent=1))
        return
    e = out["eap"]
    print(f"{hm.spec} on {out['device']} ({out['threads']} threads): graph of {graph.n_edges} edges "
          f"({len(graph.senders)} senders x {len(graph.receivers)} receivers)")
    print(f"EAP, {e['pairs']} IOI pairs: {e['seconds']} s, {e['passes_per_batch']:.0f} passes per batch "
          f"(forward + backward), peak {e['peak_mib']} MiB; LD clean {e['clean_logit_diff']:.3f} "
          f"corrupt {e['corrupt_logit_diff']:.3f}")
    if "eap_ig" in out:
        print(f"EAP-IG ({a.ig_steps} steps): {out['eap_ig']['seconds']} s")
    rc = out["rank_check"]
    print(f"rank check, {rc['pairs']} pairs, {rc['edges']} edges into {rc['receivers']}: Spearman "
          f"{'n/a' if rho is None else f'{rho:.3f}'} (exact patching {rc['exact_seconds']} s)"
          + (f"; EAP-IG {rc['spearman_ig']:.3f}" if rc.get("spearman_ig") is not None else ""))
    for r in rc["top_exact"]:
        print(f"  {r['edge']:<32} exact {r['exact']:+.4f}  eap {r['eap']:+.4f}")
    for p in out.get("faithfulness_curve", []):
        print(f"  top {p['n_edges']:>6} edges: faithfulness {p['faithfulness']:.3f} ({p['seconds']} s)")


if __name__ == "__main__":
    main()
