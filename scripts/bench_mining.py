#!/usr/bin/env python
"""Benchmark mining against a bare forward pass, and peak memory for two corpus lengths.

For each corpus length, in its own subprocess (so peak RSS is per length):
  * the same contexts (gensim-wiki by default) are tokenised once;
  * bare forward: HookedModel.forward over them, all layers, return_logits=False, timed twice
    (before and after the mine; the mean is reported, the spread shows machine noise);
  * mining: autointerp.mine.mine over the same tokens, all layers, all MLP neurons, into a fresh
    store. "mining tok/s" is the streaming loop (read, tokenise, forward, merge, store contexts,
    progress); the final write (records, stats, logit effects) is reported separately;
  * peak RSS at the end of the mining loop and at the end of the process.

    .venv/bin/python scripts/bench_mining.py                      # smollm2-135m, 16k and 32k tokens
    .venv/bin/python scripts/bench_mining.py --tokens 8192,16384 --json
    .venv/bin/python scripts/bench_mining.py --sae-latents 4096 --sae-layer 6   # SAE overhead (target <= 1.2x)

--wide N --latent-chunk C: peak RSS and time of mining only the latents of a random TopK SAE of
N latents (L0 = --sae-k; the memory of the state does not depend on what the latents mean) on
--sae-layer, in chunks of C latents (one pass over the corpus per chunk), each run in its own
process, for each corpus length of --tokens; --wide-baseline B adds one pass of a B-latent SAE
(the cost reference):

    .venv/bin/python scripts/bench_mining.py --wide 131072 --latent-chunk 16384,32768 --wide-baseline 16384 --tokens 2048,4096

--sae-latents N: mining one layer's MLP neurons with and without an SAE of N latents attached on
that layer's residual stream (random weights in SAELens shape; the cost depends on the density,
not on what the latents mean: --sae-arch topk has L0 = --sae-k like a trained TopK SAE, relu
fires about half the latents on every token, a worst case), in one process, alternating the two runs twice; the ratio of the streaming-loop
times is the SAE's overhead. --sae-mine all compares the whole-model mine with and without it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(a) -> dict:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from autointerp.corpus import iter_batches
    from autointerp.mine import miner
    from autointerp.models import HookedModel
    from autointerp.store import Store

    hm = HookedModel.load(a.model, device=a.device, dtype=a.dtype, progress=False)
    n_ctx = a.length // a.context_len
    batches = [ids.to(hm.device) for _, ids in iter_batches(hm.tokenizer, a.corpus, a.context_len, a.batch_size,
                                                                limit=n_ctx)]
    n_tok = sum(int(b.numel()) for b in batches)

    def sync():
        if hm.device.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> tuple[float, float]:
        sync()
        t, c = time.perf_counter(), time.process_time()
        for ids in batches:
            hm.forward(ids, None, return_logits=False, stop_at_layer=hm.n_layers)
        sync()
        return time.perf_counter() - t, time.process_time() - c

    hm.forward(batches[0], None, return_logits=False)            # warm-up
    b1, b1c = bare()
    rss_before = rss_mb()

    loop = {}
    c0 = time.process_time()

    def after_batch(n_done: int) -> None:
        loop["rss"] = rss_mb()
        loop["cpu"] = time.process_time() - c0

    miner._after_batch = after_batch
    with tempfile.TemporaryDirectory() as d:
        store = Store(os.path.join(d, "bench.db"))
        t = time.perf_counter()
        rid = miner.mine(hm, store, corpus=a.corpus, n_tokens=a.length, context_len=a.context_len,
                         batch_size=a.batch_size, units="neurons", progress=False)
        total = time.perf_counter() - t
        st = store.get_mining_run(rid)["stats"]
        n_records = sum(store.count_records(rid).values())
        db_mb = os.path.getsize(os.path.join(d, "bench.db")) / 1e6
        store.close()
    b2, b2c = bare()
    bare_s = (b1 + b2) / 2
    return {
        "length": a.length, "tokens": n_tok, "mined_tokens": st["n_tokens"], "layers": hm.n_layers,
        "neurons": hm.n_layers * hm.d_mlp, "device": str(hm.device), "threads": torch.get_num_threads(),
        "bare_s": [round(b1, 2), round(b2, 2)], "bare_tok_s": round(n_tok / bare_s, 1),
        "mine_loop_s": st["loop_s"], "mine_tok_s": st["tokens_per_s"],
        "ratio": round(st["tokens_per_s"] / (n_tok / bare_s), 3),
        "cpu_ratio": round(((b1c + b2c) / 2) / loop["cpu"], 3) if loop.get("cpu") else None,
        "finalize_s": round(total - st["loop_s"], 1), "end_to_end_tok_s": round(n_tok / total, 1),
        "records": n_records, "db_mb": round(db_mb, 1),
        "rss_mb_model_and_tokens": round(rss_before, 1), "rss_mb_peak_loop": round(loop.get("rss", 0), 1),
        "rss_mb_peak": round(rss_mb(), 1), "loadavg": os.getloadavg()[0],
    }


def sae_overhead(a) -> dict:
    import torch

    from autointerp.core.hooks import act_name
    from autointerp.mine import mine
    from autointerp.models import HookedModel
    from autointerp.models.sae import SAE
    from autointerp.store import Store

    hm = HookedModel.load(a.model, device=a.device, dtype=a.dtype, progress=False)
    g = torch.Generator().manual_seed(0)
    d, n = hm.d_model, a.sae_latents
    W_enc, W_dec = torch.randn(d, n, generator=g) / d ** 0.5, torch.randn(n, d, generator=g) / n ** 0.5
    if a.sae_arch == "topk":      # L0 = k exactly, as a trained TopK SAE
        sae = SAE(architecture="topk", k=a.sae_k, W_enc=W_enc, b_enc=torch.zeros(n), W_dec=W_dec, b_dec=torch.zeros(d),
                  hook=act_name("resid_post", a.sae_layer), name="bench")
    else:                         # a random ReLU SAE: about half the latents fire on every token (a worst case)
        sae = SAE(architecture="standard", W_enc=W_enc, b_enc=torch.full((n,), -0.5), W_dec=W_dec, b_dec=torch.zeros(d),
                  hook=act_name("resid_post", a.sae_layer), name="bench")
    tokens = int(a.tokens.split(",")[0])
    times: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        layers = None if a.sae_mine == "all" else [a.sae_layer]
        for rep in range(a.sae_reps):
            for kind in ("without", "with"):
                with Store(os.path.join(tmp, f"{kind}{rep}.db")) as st:
                    rid = mine(hm, st, corpus=a.corpus, n_tokens=tokens, layers=layers, progress=False,
                               batch_size=a.batch_size, saes=[sae] if kind == "with" else ())
                    stats = st.get_mining_run(rid)["stats"]
                times[kind].append(float(stats["loop_s"]))
    w, wo = min(times["with"]), min(times["without"])
    return {"model": a.model, "layer": a.sae_layer, "arch": a.sae_arch, "l0": stats["latents"][0]["l0"], "mined_layers": a.sae_mine, "latents": n, "tokens": tokens, "loop_s_without": times["without"],
            "loop_s_with": times["with"], "overhead": round(w / wo, 3), "target": 1.2,
            "loadavg": os.getloadavg()[0]}


def random_topk_sae(hm, n: int, k: int, layer: int):
    import torch

    from autointerp.core.hooks import act_name
    from autointerp.models.sae import SAE

    g = torch.Generator().manual_seed(0)
    d = hm.d_model
    return SAE(architecture="topk", k=k, W_enc=torch.randn(d, n, generator=g) / d ** 0.5, b_enc=torch.zeros(n),
               W_dec=torch.randn(n, d, generator=g) / n ** 0.5, b_dec=torch.zeros(d),
               hook=act_name("resid_post", layer), name=f"rnd{n}")


def wide_child(a) -> dict:
    """One mine of a random TopK SAE's latents (a.wide_n latents, chunks of a.wide_chunk) over
    a.length tokens: peak RSS (whole process) and times."""
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from autointerp.mine import miner
    from autointerp.models import HookedModel
    from autointerp.store import Store

    hm = HookedModel.load(a.model, device=a.device, dtype=a.dtype, progress=False)
    sae = random_topk_sae(hm, a.wide_n, a.sae_k, a.sae_layer)
    rss_ready = rss_mb()
    with tempfile.TemporaryDirectory() as d:
        with Store(os.path.join(d, "wide.db")) as store:
            t = time.perf_counter()
            rid = miner.mine(hm, store, corpus=a.corpus, n_tokens=a.length, context_len=a.context_len,
                             batch_size=a.batch_size, units="latents", saes=[sae], progress=False,
                             latent_chunk=a.wide_chunk or None)
            total = time.perf_counter() - t
            st = store.get_mining_run(rid)["stats"]
            n_records = sum(store.count_records(rid).values())
        db_mb = os.path.getsize(os.path.join(d, "wide.db")) / 1e6
    return {"latents": a.wide_n, "chunk": a.wide_chunk or a.wide_n, "passes": st.get("latent_passes", 1),
            "tokens": a.length, "loop_s": st["loop_s"], "total_s": round(total, 1), "finalize_s": st.get("finalize_s"),
            "records": n_records, "db_mb": round(db_mb, 1), "l0": st["latents"][0]["l0"],
            "rss_mb_model_and_sae": round(rss_ready, 1), "rss_mb_peak": round(rss_mb(), 1),
            "threads": torch.get_num_threads(), "loadavg": os.getloadavg()[0]}


def wide(a) -> list[dict]:
    configs = [(a.wide, int(c)) for c in a.latent_chunk.split(",")]
    if a.wide_baseline:
        configs.insert(0, (a.wide_baseline, 0))
    rows = []
    for length in [int(x) for x in a.tokens.split(",")]:
        for n, chunk in configs:
            cmd = [sys.executable, __file__, "--wide-child", str(length), "--wide", str(n), "--latent-chunk", str(chunk),
                   "--model", a.model, "--corpus", a.corpus, "--context-len", str(a.context_len), "--batch-size",
                   str(a.batch_size), "--device", a.device, "--dtype", a.dtype, "--threads", str(a.threads),
                   "--sae-layer", str(a.sae_layer), "--sae-k", str(a.sae_k)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
            if out.returncode != 0 or line is None:
                sys.exit(f"child for {n} latents / chunk {chunk} / {length} tokens failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(line[6:]))
            if not a.json:
                r = rows[-1]
                print(f"{r['latents']:>7} latents, chunk {r['chunk']:>6} ({r['passes']} passes), {r['tokens']:>6} tokens: "
                      f"loop {r['loop_s']:>7.1f} s, total {r['total_s']:>7.1f} s, peak RSS {r['rss_mb_peak']:>7.0f} MB "
                      f"(model + SAE {r['rss_mb_model_and_sae']:.0f} MB), records {r['records']:,}, L0 {r['l0']:.0f}, "
                      f"load {r['loadavg']:.1f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpus", default="gensim-wiki")
    ap.add_argument("--tokens", default="16384,32768", help="two (or more) corpus lengths, comma-separated")
    ap.add_argument("--context-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sae-latents", type=int, default=0, help="measure the overhead of an SAE of this many latents")
    ap.add_argument("--sae-layer", type=int, default=6)
    ap.add_argument("--sae-mine", choices=["one", "all"], default="one",
                    help="mine only the SAE's layer (neurons of that layer, the strict comparison) or all layers")
    ap.add_argument("--sae-reps", type=int, default=2)
    ap.add_argument("--sae-arch", choices=["topk", "relu"], default="topk",
                    help="topk: random TopK SAE, L0 = --sae-k (as trained SAEs); relu: random ReLU SAE, L0 ~ d_sae/2")
    ap.add_argument("--sae-k", type=int, default=64)
    ap.add_argument("--wide", type=int, default=0, help="peak RSS of mining a random TopK SAE of this many latents")
    ap.add_argument("--latent-chunk", default="0", help="with --wide: latents per pass, comma-separated (0: one pass)")
    ap.add_argument("--wide-baseline", type=int, default=0, help="with --wide: also one pass of an SAE this wide")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--wide-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.wide_child is not None:
        a.length, a.wide_n, a.wide_chunk = a.wide_child, a.wide, int(a.latent_chunk)
        print("BENCH " + json.dumps(wide_child(a)), flush=True)
        return
    if a.wide:
        rows = wide(a)
        if a.json:
            print(json.dumps(rows, indent=2))
        return
    if a.sae_latents:
        r = sae_overhead(a)
        if a.json:
            print(json.dumps(r, indent=2))
        else:
            print(f"{a.model} SAE on layer {r['layer']}, mining {r['mined_layers']} layer(s), {r['tokens']} tokens: mining loop {min(r['loop_s_without']):.2f} s "
                  f"without, {min(r['loop_s_with']):.2f} s with {r['latents']} SAE latents ({r['arch']}, L0 {r['l0']:.0f}): {r['overhead']:.2f}x "
                  f"(target <= 1.2x; best of {a.sae_reps} each; load {r['loadavg']:.1f})")
        return
    if a.child is not None:
        a.length = a.child
        print("BENCH " + json.dumps(child(a)), flush=True)
        return
    rows = []
    for length in [int(x) for x in a.tokens.split(",")]:
        cmd = [sys.executable, __file__, "--child", str(length), "--model", a.model, "--corpus", a.corpus,
               "--context-len", str(a.context_len), "--batch-size", str(a.batch_size), "--device", a.device,
               "--dtype", a.dtype, "--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
        if out.returncode != 0 or line is None:
            sys.exit(f"child for {length} tokens failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[6:]))
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    r0 = rows[0]
    print(f"model {a.model} ({r0['layers']} layers, {r0['neurons']:,} neurons), {r0['device']}, "
          f"{r0['threads']} threads, batch {a.batch_size}x{a.context_len}")
    print(f"{'tokens':>8} {'bare tok/s':>10} {'mine tok/s':>10} {'ratio':>6} {'cpu ratio':>9} {'write s':>8} "
          f"{'e2e tok/s':>9} {'RSS loop MB':>11} {'RSS peak MB':>11} {'records':>9} {'load':>5}")
    for r in rows:
        print(f"{r['tokens']:>8} {r['bare_tok_s']:>10} {r['mine_tok_s']:>10} {r['ratio']:>6} {r['cpu_ratio'] or '-':>9} "
              f"{r['finalize_s']:>8} {r['end_to_end_tok_s']:>9} {r['rss_mb_peak_loop']:>11} {r['rss_mb_peak']:>11} "
              f"{r['records']:>9} {r['loadavg']:>5.1f}")
    if len(rows) > 1:
        d = rows[-1]["rss_mb_peak_loop"] - rows[0]["rss_mb_peak_loop"]
        print(f"peak RSS (loop) difference between lengths: {d:+.1f} MB")


if __name__ == "__main__":
    main()
