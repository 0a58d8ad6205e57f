"""Benchmark: units/hour of `autointerp batch` on the embedded LLM for a fixed slice.

    .venv/bin/python scripts/bench_batch.py                 # 4 units of layer 3 of smollm2-135m
    .venv/bin/python scripts/bench_batch.py --units 8 --device cuda --json

A fresh temporary store; one small mine of the slice's layer (--tokens, not timed in the rate),
then the first --units neurons of --layer explained and scored by the full default pipeline
(best of k=3 on calibration, simulation + detection + fuzzing, 1000 bootstrap resamples) with
the embedded LLM (the subject model's own weights, shared). Prints the mining time, the batch
time, units/hour and LLM tokens. A second pass over the same slice shows the restart cost
(every unit already done: nothing is redone).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=8192, help="tokens mined first (not in the rate)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import torch

    from autointerp.batch import BatchOptions, run_batch
    from autointerp.pipeline import ExplainSettings
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.store import Store

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.db"
        t0 = time.perf_counter()
        hm = HookedModel.load(a.model, device=a.device)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with Store(path) as st:
            mine(hm, st, n_tokens=a.tokens, layers=[a.layer], progress=False)
        mine_s = time.perf_counter() - t0
        o = BatchOptions(model=a.model, layers=str(a.layer), limit=a.units, n_tokens=a.tokens, llm=f"embedded:{a.model}",
                         device=a.device, settings=ExplainSettings(k=a.k))
        t0 = time.perf_counter()
        s = run_batch(path, o, hm=hm, progress=False, log=sys.stderr)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = run_batch(path, o, hm=hm, progress=False, log=sys.stderr)
        again_s = time.perf_counter() - t0
    out = {"model": a.model, "device": a.device, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "slice": f"first {a.units} neurons of layer {a.layer}", "k": a.k, "mine_tokens": a.tokens,
           "load_s": round(load_s, 1), "mine_s": round(mine_s, 1), "batch_s": round(batch_s, 1), "done": s.done,
           "failed": s.failed, "units_per_hour": round(s.done / batch_s * 3600, 1) if batch_s > 0 else None,
           "s_per_unit": round(batch_s / max(s.done, 1), 1), "llm_tokens": s.tokens, "scores": s.scores,
           "rerun_s": round(again_s, 2), "rerun_done": again.done}
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"bench_batch: {out['slice']} of {a.model} on {a.device} ({out['torch_threads']} threads), k={a.k}")
        print(f"  load {out['load_s']} s, mine {a.tokens} tokens {out['mine_s']} s")
        print(f"  batch: {s.done} done, {s.failed} failed in {out['batch_s']} s = {out['s_per_unit']} s/unit "
              f"= {out['units_per_hour']} units/hour; {s.tokens} LLM tokens")
        print(f"  simulation r: {s.scores}")
        print(f"  rerun of the same slice: {again.done} redone, {out['rerun_s']} s")


if __name__ == "__main__":
    main()
