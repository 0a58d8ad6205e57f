#!/usr/bin/env python
"""Per-unit explain + simulate time on the embedded LLM, with and without prefix (KV) reuse,
in one run.

    .venv/bin/python scripts/bench_llm.py [--llm embedded:smollm2-135m] [--units 3] [--max-tokens 12]

Each synthetic unit is a "neuron" firing on one kind of token (capitalised words, digits,
" the", ...) over real text (gensim's news corpus if installed, else fixed sentences). Per unit:
explain = one completion of prompts/explain_completion.txt (few-shot preamble + 2 records);
simulate = prompt logprobs of "0".."10" at every token of 2 records with
prompts/simulate_all_at_once.txt. The two modes run interleaved unit by unit on the same
loaded model (no response cache), so machine noise hits both alike; the one-time cost of
computing the shared prefixes' KV caches is shown separately.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np

FALLBACK = [
    "The committee met on Monday in Geneva to discuss the new trade agreement with 27 member states.",
    "Prices rose by 4 percent in March, the third increase this year, according to the central bank.",
    "She walked along the river with her dog and watched the boats drift past the old mill.",
    "Researchers at the University of Sydney said the vaccine trial would begin in 2003.",
    "The team scored twice in the last ten minutes to win the final 3-1 before a crowd of 40,000.",
    "Heavy rain flooded the valley overnight and the army sent 200 soldiers to help the farmers.",
]

FEATURES = {
    "capitalised words": lambda t: t.strip()[:1].isupper(),
    "numbers and digits": lambda t: any(c.isdigit() for c in t),
    "the word \"the\"": lambda t: t.strip().lower() == "the",
    "punctuation marks": lambda t: bool(t.strip()) and all(not c.isalnum() for c in t.strip()),
}


def sentences(n: int) -> list[str]:
    try:
        import importlib.util

        spec = importlib.util.find_spec("gensim")
        path = Path(spec.origin).parent / "test" / "test_data" / "lee_background.cor"
        text = path.read_text(encoding="utf-8")
        sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 60 <= len(s.strip()) <= 140]
        if len(sents) >= n:
            return sents[:n]
    except Exception:
        pass
    return (FALLBACK * (n // len(FALLBACK) + 1))[:n]


def make_units(tok, n_units: int, records_per_unit: int):
    sents = sentences(n_units * records_per_unit * 2)
    names = list(FEATURES)
    units = []
    for u in range(n_units):
        feat = names[u % len(names)]
        recs = []
        for s in sents[u * records_per_unit * 2:(u + 1) * records_per_unit * 2][:records_per_unit]:
            ids = tok(s, add_special_tokens=False)["input_ids"][:24]
            toks = [tok.decode([i]) for i in ids]
            acts = [10 if FEATURES[feat](t) else 0 for t in toks]
            recs.append((toks, acts))
        units.append((feat, recs))
    return units


def fmt_records(recs) -> str:
    return "".join("<start>\n" + "".join(f"{t}\t{a}\n" for t, a in zip(toks, acts)) + "<end>\n" for toks, acts in recs)


def run_unit(llm, unit, p_explain, p_sim, max_tokens: int):
    feat, recs = unit
    t0 = time.perf_counter()
    text = p_explain.render(records=fmt_records(recs))
    expl = llm.complete(text, max_tokens=max_tokens, stop=["\n"], template=p_explain)[0].strip()
    t1 = time.perf_counter()
    prefix, head = p_sim.parts("records", explanation=expl or "nothing in particular.")
    rows = [[head + toks[0] + "\t"] + ["unknown\n" + t + "\t" for t in toks[1:]] for toks, _ in recs]
    probs = llm.prompt_logprobs_batch(prefix, rows, [str(v) for v in range(11)], template=p_sim)
    t2 = time.perf_counter()
    return expl, probs, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default="embedded:smollm2-135m")
    ap.add_argument("--units", type=int, default=3)
    ap.add_argument("--records", type=int, default=2, help="records per unit")
    ap.add_argument("--max-tokens", type=int, default=12, help="explanation length cap")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from autointerp.llm import get_llm, load_prompt
    from autointerp.llm.embedded import EmbeddedLLM

    t = time.perf_counter()
    base = get_llm(args.llm, device=args.device)
    load_s = time.perf_counter() - t
    reuse = EmbeddedLLM(base.model, base.hf, base.tok, device=args.device, reuse_prefix=True)
    plain = EmbeddedLLM(base.model, base.hf, base.tok, device=args.device, reuse_prefix=False)
    p_explain, p_sim = load_prompt("explain_completion"), load_prompt("simulate_all_at_once")
    units = make_units(base.tok, args.units, args.records)
    n_prefix = [len(base.tok(p.prefix)["input_ids"]) for p in (p_explain, p_sim)]

    t = time.perf_counter()
    reuse._prefix(p_explain.prefix)
    reuse._prefix(p_sim.prefix)
    warm_s = time.perf_counter() - t

    print(f"{args.llm} on {args.device} ({torch.get_num_threads()} threads), model load {load_s:.1f}s; "
          f"shared prefixes {n_prefix[0]} + {n_prefix[1]} tokens, KV computed once in {warm_s:.2f}s")
    print(f"{'unit':<22}{'no reuse: explain':>18}{'simulate':>10}{'total':>8}   {'reuse: explain':>15}{'simulate':>10}{'total':>8}{'speed-up':>10}")
    tot_plain, tot_reuse, max_diff, same_expl = [], [], 0.0, 0
    for i, unit in enumerate(units):
        e0, p0, ex0, si0 = run_unit(plain, unit, p_explain, p_sim, args.max_tokens)
        e1, p1, ex1, si1 = run_unit(reuse, unit, p_explain, p_sim, args.max_tokens)
        same_expl += e0 == e1
        if e0 == e1:
            max_diff = max(max_diff, max(float(np.abs(a - b).max()) for a, b in zip(p0, p1)))
        tot_plain.append(ex0 + si0)
        tot_reuse.append(ex1 + si1)
        print(f"{unit[0][:21]:<22}{ex0:>17.2f}s{si0:>9.2f}s{ex0 + si0:>7.2f}s   {ex1:>14.2f}s{si1:>9.2f}s{ex1 + si1:>7.2f}s"
              f"{(ex0 + si0) / (ex1 + si1):>9.2f}x")
        print(f"{'':<22}explanation: {e1!r}")
    mp, mr = statistics.mean(tot_plain), statistics.mean(tot_reuse)
    print(f"\nper unit (mean of {len(units)}): no reuse {mp:.2f}s, reuse {mr:.2f}s -> speed-up {mp / mr:.2f}x "
          f"(one-time prefix cost {warm_s:.2f}s, amortised over all units of a run)")
    print(f"same explanation in both modes for {same_expl}/{len(units)} units; "
          f"max |P difference| of the simulations {max_diff:.1e}")


if __name__ == "__main__":
    main()
