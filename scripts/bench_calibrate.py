"""Benchmark: each embedded simulator option's discrimination on the built-in planted units.

For every LLM (default: the packaged aliases that are installed) and every simulator variant
(all-at-once logprobs, per-token yes/no with the record as a shared prefix, contrastive against
a decoy), runs `calibrate` with the simulation scorer only and prints the AUROC of true vs decoy
explanations with its 95% bootstrap interval over units, and the seconds per planted unit.
Detection and fuzzing are measured once per LLM (they do not depend on the simulator).

    .venv/bin/python scripts/bench_calibrate.py [--llms smollm2-135m,qwen2.5-0.5b] [--tokens 16384] [--json]

Run it alone: it is CPU-bound and its timings are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llms", default=None, help="comma-separated embedded model specs [default: installed aliases]")
    ap.add_argument("--variants", default="logprobs,yesno,contrastive")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--n-test", type=int, default=5)
    ap.add_argument("--judges", action="store_true", help="also detection and fuzzing")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from autointerp.llm import get_llm
    from autointerp.models.hooked import HookedModel
    from autointerp.models.loader import packaged_models
    from autointerp.pipeline.calibrate import CalibrateSettings, calibrate
    from autointerp.score.splits import SplitSizes
    from autointerp.store import Store

    llms = a.llms.split(",") if a.llms else [m["alias"] for m in packaged_models() if m.get("installed")]
    subject = HookedModel.load("smollm2-135m")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "bench.db")
        exact = calibrate(store, None, tokenizer=subject.tokenizer, model_id=subject.spec,
                          settings=CalibrateSettings(n_tokens=a.tokens, scorers=("exact",), explain=False,
                                                     sizes=SplitSizes(n_train=6, n_calib=0, n_test=a.n_test)))
        n_units = exact["summary"]["n_units"]
        r = exact["scorers"]["exact"]
        rows.append({"llm": "-", "scorer": "exact", "auroc": r["auroc"], "low": r["low"], "high": r["high"],
                     "s_per_unit": r["seconds"] / max(n_units, 1)})
        for spec in llms:
            kw = {"model": subject.model, "tokenizer": subject.tokenizer} if spec == subject.spec else {}
            llm = get_llm(f"embedded:{spec}", store=store, **kw)
            for v in a.variants.split(","):
                t0 = time.perf_counter()
                rep = calibrate(store, llm, tokenizer=subject.tokenizer, model_id=subject.spec,
                                settings=CalibrateSettings(n_tokens=a.tokens, scorers=("simulation",), simulator=v,
                                                           explain=False, sizes=SplitSizes(n_train=6, n_calib=0,
                                                                                            n_test=a.n_test)))
                r = rep["scorers"]["simulation"]
                rows.append({"llm": spec, "scorer": f"simulation:{v}", "auroc": r["auroc"], "low": r["low"],
                             "high": r["high"], "s_per_unit": (time.perf_counter() - t0) / max(n_units, 1)})
                print(json.dumps(rows[-1]), flush=True)
            if a.judges:
                t0 = time.perf_counter()
                rep = calibrate(store, llm, tokenizer=subject.tokenizer, model_id=subject.spec,
                                settings=CalibrateSettings(n_tokens=a.tokens, scorers=("detection", "fuzzing"),
                                                           explain=False, sizes=SplitSizes(n_train=6, n_calib=0,
                                                                                            n_test=a.n_test)))
                for name in ("detection", "fuzzing"):
                    r = rep["scorers"][name]
                    rows.append({"llm": spec, "scorer": name, "auroc": r["auroc"], "low": r["low"], "high": r["high"],
                                 "n_null": r["n_null"], "s_per_unit": (time.perf_counter() - t0) / max(n_units, 1) / 2})
                    print(json.dumps(rows[-1]), flush=True)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'llm':<14} {'scorer':<24} {'AUROC':>6}  95% CI        s/unit")
    for r in rows:
        au = f"{r['auroc']:.3f}" if r["auroc"] is not None else "  n/a"
        iv = f"[{r['low']:.2f}, {r['high']:.2f}]" if r["low"] is not None else "            "
        print(f"{r['llm']:<14} {r['scorer']:<24} {au:>6}  {iv}  {r['s_per_unit']:.2f}")


if __name__ == "__main__":
    main()
