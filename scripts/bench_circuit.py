"""Benchmark: edge attribution patching on SmolLM2 against exact edge patching, and its cost.

    .venv/bin/python scripts/bench_circuit.py                     # smollm2-135m, 8 IOI pairs, CPU
    .venv/bin/python scripts/bench_circuit.py --pairs 24 --eap-pairs 24 --device cuda --json
    .venv/bin/python scripts/bench_circuit.py --receivers all --faithfulness   # slower (GPU)
    .venv/bin/python scripts/bench_circuit.py --reference --points 7 --rel-tol 0.1 [--ablation mean]

Builds --pairs IOI pairs validated on the model, then
  * EAP (and EAP-IG with --ig-steps) over every edge of the graph: seconds, forward/backward
    passes per batch, peak memory (CUDA: max allocated; CPU: peak RSS of the process);
  * exact edge patching of the edges into the logits (--receivers all: every edge; slow) and
    the Spearman rank correlation of EAP with it;
  * with --faithfulness: the top-k EAP edges run as circuits (every other edge patched), the
    faithfulness-vs-edges curve (--points sizes) and the circuit pruned to --target (bisected
    inside the last grid step, as `autointerp circuit` does), seconds per circuit run;
  * with --reference: the node-level reference, activation patching of every head's output
    (denoising, as investigate's confirm step) on the same pairs: which of its top-5 heads by
    |effect| are nodes of the top-k EAP edges for k on the grid, and (with --faithfulness) of
    the circuit pruned to --target.
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
    ap.add_argument("--points", type=int, default=10, help="--faithfulness: circuit sizes on the curve")
    ap.add_argument("--target", type=float, default=0.8, help="--faithfulness: the circuit pruned to this faithfulness")
    ap.add_argument("--ablation", choices=["corrupt", "mean"], default="corrupt",
                    help="--faithfulness: edges outside the circuit patched to corrupt values or to their senders' means")
    ap.add_argument("--rel-tol", type=float, default=0.0,
                    help="--faithfulness: stop bisecting once the bracket is within this fraction (0: to one edge)")
    ap.add_argument("--reference", action="store_true",
                    help="check the circuit's nodes against the top-5 heads of node-level activation patching")
    ap.add_argument("--sizes", type=int, nargs="*", default=[],
                    help="--reference: also these top-k sizes (e.g. a circuit size measured earlier)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not 0 < a.target <= 1:
        ap.error(f"--target {a.target} out of range: use a fraction in (0, 1]")
    if a.points < 2:
        ap.error("--points must be >= 2")

    import numpy as np
    import torch

    from autointerp.models import HookedModel
    from autointerp.patching.core import prepare
    from autointerp.patching import activation_patching
    from autointerp.patching.edge_search import ablated_logit_diff, prune_to_target, size_grid
    from autointerp.patching.edges import EdgeGraph, eap_scores, exact_edge_scores, sender_means, spearman
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
        times: list[float] = []
        last = [time.perf_counter()]

        def tick(k, f):
            if k == 0 and a.ablation == "mean":      # no run: the all-ablated run was timed above
                last[0] = time.perf_counter()
                return
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
            print(f"  circuit run: top {k} edges -> faithfulness {f:.3f} ({times[-1]:.1f} s)", file=sys.stderr,
                  flush=True)

        t = time.perf_counter()
        means = base = None
        scores = eap
        if a.ablation == "mean":     # as `autointerp circuit --ablation mean`: EAP against the means
            means = sender_means(hm, data)
            base = round(ablated_logit_diff(hm, data, graph, means), 6)
            last[0] = time.perf_counter()      # (the all-ablated run is the curve's k = 0 point)
            times.append(last[0] - t)
            scores = eap_scores(hm, check, batch_size=a.batch_size, graph=graph, means=means, baseline=base)
        circ = prune_to_target(hm, data, scores, a.target, points=a.points, progress=tick, rel_tol=a.rel_tol,
                               means=means, baseline=base)
        out["faithfulness"] = {"target": a.target, "pairs": a.pairs, "points": a.points, "rel_tol": a.rel_tol,
                               "ablation": a.ablation, "baseline_logit_diff": base, "seconds": round(time.perf_counter() - t, 1),
                               "circuit_runs": len(times), "seconds_per_run": round(sum(times) / len(times), 2),
                               "peak_mib": round(peak()), "reached_target": circ.settings["reached_target"],
                               "n_edges": len(circ.edges), "faithfulness": circ.faithfulness,
                               "curve": [{"n_edges": k, "faithfulness": f} for k, f in circ.curve],
                               "nodes": circ.nodes()}
    if a.reference:
        t = time.perf_counter()
        ref = activation_patching(hm, check, "heads", batch_size=a.batch_size)
        top5 = [r["component"] for r in ref.results if r.get("position") is None][:5]
        scores = circ.scores if a.faithfulness else eap
        order = [e for e in scores.ranked() if not np.isnan(scores.scores[e])]

        def nodes_of(edges) -> set:
            return {graph.senders[graph.edges[e][0]].name for e in edges} | \
                   {graph.receivers[graph.edges[e][1]].name.split(":")[0] for e in edges}

        sizes = sorted(set(size_grid(len(order), a.points)) | set(a.sizes)
                       | ({len(circ.edges)} if a.faithfulness else set()))

        def by_size(order) -> list[dict]:
            return [{"n_edges": k, "heads_in": [h for h in top5 if h in nodes_of(order[:k])],
                     "n_nodes": len(nodes_of(order[:k]))} for k in sizes if k > 0]

        out["reference"] = {
            "method": "activation patching of every head's output (denoising)", "seconds": round(time.perf_counter() - t, 1),
            "top5": [{"head": h, "effect": next(r["effect"] for r in ref.results if r["component"] == h)} for h in top5],
            "scores": scores.method + (f" ({a.ablation} ablation)" if a.faithfulness else ""),
            "by_size": by_size(order)}
        if scores is not eap:       # mean ablation: the corrupt-scored EAP ranking too
            out["reference"]["by_size_corrupt_eap"] = by_size([e for e in eap.ranked() if not np.isnan(eap.scores[e])])
        if a.faithfulness:
            nodes = set(circ.nodes())
            out["reference"]["circuit_n_edges"] = len(circ.edges)
            out["reference"]["in_circuit"] = [h for h in top5 if h in nodes]
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
    if "faithfulness" in out:
        fa = out["faithfulness"]
        print(f"faithfulness ({fa['ablation']} ablation), {fa['pairs']} pairs: circuit at target {fa['target']}: {fa['n_edges']} edges, "
              f"faithfulness {fa['faithfulness']:.3f}{'' if fa['reached_target'] else ' (target not reached)'}; "
              f"{fa['circuit_runs']} circuit runs, {fa['seconds']} s ({fa['seconds_per_run']} s each), "
              f"peak {fa['peak_mib']} MiB")
        print("  curve: " + "  ".join(f"{p['n_edges']}:{p['faithfulness']:.3f}" for p in fa["curve"]))
    if "reference" in out:
        ref = out["reference"]
        print(f"reference ({ref['method']}, {ref['seconds']} s), top 5: "
              + ", ".join(f"{r['head']} {r['effect']:+.3f}" for r in ref["top5"]))
        if "in_circuit" in ref:
            print(f"  in the circuit at target {a.target} ({ref['circuit_n_edges']} edges): {len(ref['in_circuit'])} "
                  f"of 5 ({', '.join(ref['in_circuit']) or 'none'})")
        for key, what in (("by_size", ref["scores"]), ("by_size_corrupt_eap", "eap (corrupt)")):
            for r in ref.get(key, []):
                print(f"  top {r['n_edges']:>6} {what} edges ({r['n_nodes']} nodes): {len(r['heads_in'])} of 5 "
                      f"({', '.join(r['heads_in']) or 'none'})")


if __name__ == "__main__":
    main()
