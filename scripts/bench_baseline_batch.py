"""Benchmark: the exact-baseline score for every MLP neuron of a model, no LLM at all.

    .venv/bin/python scripts/bench_baseline_batch.py                    # all 30 layers of smollm2-135m
    .venv/bin/python scripts/bench_baseline_batch.py --layers 0-1 --json

Runs what `autointerp batch --explainer baseline --tokens N` runs, in one process: mines the
layers (all neurons, one streamed pass) and then, for every neuron, builds the baseline from its
train records and scores it by exact simulation on its test split, with its control and margin,
all stored. Prints mining seconds, scoring seconds, units/s and the projected time for all
neurons of the model when fewer layers were run. Run it alone (CPU-bound).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default=None, help="e.g. 0-3 [default: all]")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--store", default=None, help="keep the store here [default: a temporary file]")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from autointerp.batch import BatchOptions, run_batch
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.pipeline import ExplainSettings
    from autointerp.store import Store

    with tempfile.TemporaryDirectory() as d:
        path = Path(a.store) if a.store else Path(d) / "baseline.db"
        hm = HookedModel.load(a.model)
        t0 = time.perf_counter()
        with Store(path) as st:
            mine(hm, st, n_tokens=a.tokens, layers=a.layers, progress=sys.stderr.isatty())
        mine_s = time.perf_counter() - t0
        o = BatchOptions(model=a.model, layers=a.layers, n_tokens=a.tokens, llm=f"embedded:{a.model}", device="cpu",
                         settings=ExplainSettings(explainer="baseline", n_boot=a.n_boot))
        t0 = time.perf_counter()
        s = run_batch(path, o, hm=hm, progress=False, log=open("/dev/null", "w"))
        score_s = time.perf_counter() - t0
        n_all = hm.n_layers * hm.d_mlp
        n = s.done + s.skipped
        out = {"model": a.model, "layers": a.layers or "all", "tokens": a.tokens, "units": s.units, "done": s.done,
               "failed": s.failed, "mine_s": round(mine_s, 1), "score_s": round(score_s, 1),
               "units_per_s": round(s.done / score_s, 1) if score_s else None,
               "exact_scores": s.scores, "all_neurons": n_all,
               "projected_all_s": round((mine_s + score_s) * n_all / max(n, 1), 1) if n < n_all else round(mine_s + score_s, 1)}
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['model']}: {out['done']}/{out['units']} neurons ({out['layers']} layers, {out['tokens']} tokens): "
          f"mine {out['mine_s']} s, exact baseline scores {out['score_s']} s ({out['units_per_s']} units/s); "
          f"all {n_all} neurons: {out['projected_all_s'] / 60:.1f} min" + (" (projected)" if n < n_all else ""))
    sc = out["exact_scores"]
    if sc.get("n"):
        print(f"exact-simulation r of the baseline: median {sc['median']:+.3f}, quartiles [{sc['q1']:+.3f}, {sc['q3']:+.3f}]")


if __name__ == "__main__":
    main()
