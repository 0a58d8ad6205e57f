"""Benchmark and validation of `autointerp diff` on a planted difference (issue #17).

Model B = SmolLM2-135M with the output weights of its strongest induction heads (by the head
wiki's induction detector) zeroed, saved as a local model directory and loaded back from it.
Then `diff_models(A, B)` must rank the zeroed heads first (weights, head outputs, DLA,
patching) and put repeated-text contexts at the top of the black-box diff (A better). The
repeated-text counts of the top 10 contexts are given for both context rankings (--rank max:
largest per-token Δ; sum: total Δ of the context), from two black-box passes: how many peak
tokens complete a bigram seen earlier in the context, and how many repeat an earlier token.

Also measured: the black-box pass against a plain forward of both models over the same batches
(the pass should cost about one forward of each per token), and the process RSS after a short
and a 4x longer black-box pass (memory flat in corpus length).

    flock /tmp/heavy.lock nice -n 10 .venv/bin/python scripts/bench_diff.py [--tokens 4096] [--heads 3] [--rank sum]
        [--out runs/smollm2-no-induction]   (an existing directory made by `autointerp plant` is used as B)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def repeat_counts(records) -> dict:
    """Of these contexts, how many have a peak token that completes a bigram seen earlier in the
    context (is_repeat_context), and how many a peak token that occurred earlier at all."""
    from autointerp.compare import is_repeat_context

    def seen(r) -> bool:
        first = len(r.input_ids) - len(r.acts)
        i = max(range(len(r.acts)), key=lambda j: r.acts[j])
        return r.input_ids[first + i] in r.input_ids[first:first + i]

    return {"n": len(records), "peak_completes_bigram": sum(is_repeat_context(r) for r in records),
            "peak_repeats_token": sum(seen(r) for r in records)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--out", default=None, help="where model B is saved [default: a temporary folder]")
    ap.add_argument("--tasks", default="ioi")
    ap.add_argument("--rank", default=None, choices=["max", "sum"], help="context ranking of the diff [default: its default]")
    ap.add_argument("--explain", default="llm", choices=["none", "baseline", "llm"],
                    help="llm: the default embedded LLM explains the top contexts (does it say 'repetition'?)")
    args = ap.parse_args()

    from autointerp.compare import RANKS, blackbox_diff, is_repeat_context, plant_heads
    from autointerp.corpus import DEFAULT_CORPUS, iter_batches, open_source
    from autointerp.pipeline import DiffSettings, diff_models
    from autointerp.models import HookedModel
    from autointerp.store import Store

    torch.set_num_threads(2)
    out: dict = {"model": args.model, "tokens": args.tokens}
    t = time.perf_counter()
    a = HookedModel.load(args.model, progress=False)
    tmp = tempfile.mkdtemp(prefix="bench-diff-")
    b_dir = Path(args.out) if args.out else Path(tmp) / "smollm2-no-induction"
    if (b_dir / "plant.json").exists():            # made earlier by `autointerp plant` (or this script)
        planted = json.loads((b_dir / "plant.json").read_text())
        if planted["model"] != args.model or len(planted["heads"]) != args.heads:
            sys.exit(f"{b_dir}: planted from {planted['model']} with {len(planted['heads'])} heads, not "
                     f"{args.model} with {args.heads}; pick another --out")
    else:
        planted = plant_heads(HookedModel.load(args.model, progress=False), b_dir, args.heads).model_dump()
    heads = [h["unit"] for h in planted["heads"]]
    out["zeroed_heads"] = {h["unit"]: h["score"] for h in planted["heads"]}
    b = HookedModel.load(str(b_dir), progress=False)
    out["setup_s"] = round(time.perf_counter() - t, 1)

    # speed: the black-box pass vs a plain forward of both models over the same batches
    src = open_source(DEFAULT_CORPUS)
    t = time.perf_counter()
    with torch.no_grad():
        for _, ids in iter_batches(a.tokenizer, src, 64, 8, limit=args.tokens // 64):
            a.model(input_ids=ids, use_cache=False)
            b.model(input_ids=ids, use_cache=False)
    out["plain_forwards_s"] = round(time.perf_counter() - t, 2)
    rss0 = rss_mb()
    bb = blackbox_diff(a, b, DEFAULT_CORPUS, n_tokens=args.tokens)
    out["blackbox_s"] = bb.seconds
    rss1 = rss_mb()
    blackbox_diff(a, b, DEFAULT_CORPUS, n_tokens=4 * args.tokens)
    rss2 = rss_mb()
    out["rss_mb"] = {"before": round(rss0), f"after_{args.tokens}": round(rss1), f"after_{4 * args.tokens}": round(rss2)}
    out["repeats_top10"] = {}
    for rank in RANKS:
        r_bb = bb if rank == bb.rank else blackbox_diff(a, b, DEFAULT_CORPUS, n_tokens=args.tokens, rank=rank)
        out["repeats_top10"][rank] = {side: repeat_counts(r_bb.top[side][:10]) for side in ("a_better", "b_better")}

    store = Store(Path(tmp) / "bench.db")
    s = DiffSettings(n_tokens=args.tokens, tasks=[x for x in args.tasks.split(",") if x], task_items=24,
                     explain=args.explain, **({"rank": args.rank} if args.rank else {}))
    res = diff_models(store, settings=s, hm_a=a, hm_b=b)
    out["diff_id"] = res.id
    out["side"] = res.side
    out["rank"] = res.blackbox.rank
    out["summary"] = {k: v for k, v in res.summary.items() if k != "top_components"}
    ranks = {}
    for analysis, rows in res.components.items():
        if analysis.startswith("weight_t") or analysis.startswith("neuron") or analysis == "weight_neuron":
            continue
        order = [r["component"] for r in rows]
        ranks[analysis] = {h: (order.index(h) + 1 if h in order else None) for h in heads}
        ranks[analysis]["top5"] = order[:5]
    out["ranks_of_zeroed_heads"] = ranks
    out["top_tensors"] = [(r["component"], r["value"]) for r in res.components.get("weight_tensor", [])[:4]]
    out["patching"] = res.patching
    out["tasks"] = res.tasks and [{k: t[k] for k in ("task", "n_items", "logit_diff_a", "logit_diff_b", "accuracy_a",
                                                        "accuracy_b")} for t in res.tasks]
    out["top_a_better"] = [{"score": round(sc, 2), "peak": round(r.max_act, 2), "text": "".join(r.tokens)[:120]}
                           for r, sc in zip(res.blackbox.top["a_better"][:5], res.blackbox.scores["a_better"])]
    e = res.explanation or {}
    out["explanation"] = {kind: {"text": e[kind]["text"],
                                 "scores": {k: (v.get("value"), v.get("control")) for k, v in e[kind]["scores"].items()}}
                          for kind in ("llm", "baseline") if kind in e}
    if "llm" in e:
        out["explanation"]["mentions_repetition"] = any(w in e["llm"]["text"].lower()
                                                        for w in ("repeat", "repetit", "again", "copy", "same"))
    out["timings"] = res.timings
    json.dump(out, sys.stdout, indent=2, default=str)
    print()


if __name__ == "__main__":
    main()
