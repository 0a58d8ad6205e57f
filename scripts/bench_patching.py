"""Benchmark: all-heads activation patching one component per forward vs batched, and attribution
patching, on SmolLM2-135M with the built-in IOI dataset.

    .venv/bin/python scripts/bench_patching.py [--n-pairs 16] [--layers 0-29] [--max-batch 256] [--device cpu]

Prints one line per method: components, forward passes, seconds, components/s, and the largest
difference between the batched and one-per-forward effects (they must agree), and the rank
correlation of attribution with activation patching.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def parse_layers(s: str | None, n: int) -> list[int]:
    if not s:
        return list(range(n))
    out = []
    for part in s.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-pairs", type=int, default=16)
    ap.add_argument("--layers", default=None, help="e.g. 0-29 or 0,5,10 [default: all]")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from autointerp.models.hooked import HookedModel
    from autointerp.patching import activation_patching, attribution_patching, rank_correlation
    from autointerp.tasks import builtin_pairs

    hm = HookedModel.load(a.model, device=a.device, progress=False)
    torch.set_grad_enabled(False)
    t = time.perf_counter()
    items, stats = builtin_pairs(hm, "ioi", a.n_pairs, seed=0)
    t_val = time.perf_counter() - t
    layers = parse_layers(a.layers, hm.n_layers)
    n_comp = len(layers) * hm.n_heads
    rows = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        rows[name] = {"seconds": round(dt, 2), "components": n_comp, "forwards": res.settings.get("forwards"),
                      "backwards": res.settings.get("backwards", 0), "components_per_s": round(n_comp / dt, 2)}
        return res

    slow = timed("activation, one component per forward",
                 lambda: activation_patching(hm, items, "heads", layers=layers, batch_size=len(items), one_per_forward=True))
    fast = timed(f"activation, batched (max_batch {a.max_batch})",
                 lambda: activation_patching(hm, items, "heads", layers=layers, batch_size=len(items), max_batch=a.max_batch))
    with torch.enable_grad():
        attr = timed("attribution (2 forwards + 1 backward)",
                     lambda: attribution_patching(hm, items, "heads", layers=layers, batch_size=len(items)))
    es, ef = slow.effects(), fast.effects()
    out = {"model": hm.spec, "device": str(hm.device), "threads": torch.get_num_threads(), "n_pairs": len(items),
           "validation": {"seconds": round(t_val, 2), **stats}, "layers": f"{layers[0]}..{layers[-1]}" if layers == list(
               range(layers[0], layers[-1] + 1)) else layers, "results": rows,
           "speedup_batched": round(rows[next(iter(rows))]["seconds"] / rows[list(rows)[1]]["seconds"], 2),
           "max_abs_diff_batched_vs_single": max(abs(es[k] - ef[k]) for k in es),
           "attribution_rank_correlation": rank_correlation(attr, fast),
           "clean_logit_diff": fast.clean_logit_diff, "corrupt_logit_diff": fast.corrupt_logit_diff,
           "top_heads": fast.results[:5]}
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{hm.spec} on {out['device']} ({out['threads']} threads), IOI {len(items)} pairs, heads of layers "
          f"{out['layers']} ({n_comp} components); validation {t_val:.1f}s ({stats['accepted']}/{stats['candidates']} accepted)")
    for name, r in rows.items():
        print(f"  {name:<42} {r['seconds']:>8.2f} s  {r['forwards']:>4} fwd  {r['components_per_s']:>8.2f} comp/s")
    print(f"  batched speed-up x{out['speedup_batched']}; max |batched - single| = {out['max_abs_diff_batched_vs_single']:.2e}; "
          f"attribution rank correlation with activation {out['attribution_rank_correlation']:.3f}")
    print("  top heads: " + ", ".join(f"{r['component']} {r['effect']:+.3f}" for r in out["top_heads"]))


if __name__ == "__main__":
    main()
