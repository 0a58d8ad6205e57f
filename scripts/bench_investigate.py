"""Time `autointerp investigate` end to end on the built-in IOI task: a cold run in a fresh store
(every step computed), then the same command again (every step reused). Prints per-step wall and
CPU seconds (the CPU column is the fairer figure on a shared, loaded machine) and the load average.

    .venv/bin/python scripts/bench_investigate.py [--model smollm2-135m] [--n 16] [--top 3] [--explain 1] [--no-prose]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="ioi")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--explain", type=int, default=1)
    ap.add_argument("--mine-tokens", type=int, default=4096)
    ap.add_argument("--no-prose", action="store_true")
    ap.add_argument("--llm", default=None, help="default: embedded:<model> (shares the subject's weights)")
    ap.add_argument("--out", default=None, help="report folder [default: a temp dir]")
    args = ap.parse_args()

    from autointerp.investigate import InvestigateSettings, investigate
    from autointerp.models.hooked import HookedModel
    from autointerp.store import Store

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    hm = HookedModel.load(args.model, progress=False)
    t_load = time.perf_counter() - t0
    d = Path(tempfile.mkdtemp(prefix="bench_investigate_"))
    out = Path(args.out) if args.out else d / "report"
    store = Store(d / "s.db")
    s = InvestigateSettings(n=args.n, top=args.top, n_explain=args.explain, mine_tokens=args.mine_tokens,
                            prose=not args.no_prose)
    llm = args.llm or f"embedded:{args.model}"
    runs = []
    for label in ("cold", "warm (re-run)"):
        c0, w0 = time.process_time(), time.perf_counter()
        res = investigate(store, hm, args.task, llm=llm, settings=s, out=out,
                          log=lambda m: print(f"    {m}", file=sys.stderr, flush=True))
        runs.append((label, res, time.perf_counter() - w0, time.process_time() - c0))
    print(f"model {args.model}: loaded in {t_load:.1f} s; task {args.task}, n={args.n}, top={args.top}, "
          f"explain={args.explain}, prose={'no' if args.no_prose else llm}; torch threads "
          f"{__import__('torch').get_num_threads()}, cpus {os.cpu_count()}")
    print(f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    for label, res, wall, cpu in runs:
        print(f"\n{label}: total wall {wall:.1f} s, cpu {cpu:.1f} s")
        print(f"  {'step':<11} {'wall s':>8} {'cpu s':>8}  reused")
        for k, v in res.timings.items():
            c = v.get("cpu_seconds")
            print(f"  {k:<11} {v['seconds']:>8.1f} {('-' if c is None else f'{c:.1f}'):>8}  {'yes' if v.get('reused') else 'no'}")
    sm = runs[0][1].summary
    h = sm["hypothesis"]
    print(f"\ncircuit {', '.join(sm['circuit'])}; faithfulness {h['faithfulness']}, model - circuit "
          f"{h['model_minus_circuit']}; backup {sm['backup']['backup_heads'] or 'none'} (ablated {sm['backup']['ablated']})")
    print(f"report: {runs[0][1].report_path}")


if __name__ == "__main__":
    main()
