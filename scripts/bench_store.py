"""Benchmark: the store at a real model's scale (issue 24): a million units, then the viewer,
search, query, show, stats, export and merge on it.

    .venv/bin/python scripts/bench_store.py --dir /tmp/storebench --keep     # 10^6 units, every step
    .venv/bin/python scripts/bench_store.py --units 100000 --json            # smaller, in a temporary folder
    # one step per run (each a few minutes at 10^6; results accumulate in DIR/results.json):
    for s in build-a build-b merge measure export; do
        .venv/bin/python scripts/bench_store.py --dir /tmp/storebench --keep --steps $s; done

The million-unit store is made the way shards are: two stores of half the units each (build-a,
build-b), each built through the store's own write path: one mining run written by
finish_mining_run (unit_stats + records, streamed, one transaction) over a pool of contexts
(put_contexts), then an explanation per unit with its simulation and detection scores by
put_explanations_bulk (the FTS index kept by its triggers); then `autointerp merge` of the two
(timed: the merge of 2 x 500k) gives the store that is measured. Synthetic records: a pool of
--contexts contexts of 64 tokens drawn (seeded) from a 2,000-word vocabulary; each unit gets
--records records (top, quantile, random) pointing into the pool with uniform random f16
activations; its explanation names 3 words of the vocabulary; scores are uniform random with
intervals.

Measured (each --reps times on random units, p50/p95 in ms): the unit page of the viewer served
for real on 127.0.0.1 (GET /unit/<model>/<unit>), the viewer's search page (GET /search?q=word),
Store.search (what `autointerp query` runs) with text and with --layer --min-score, show_unit
(`autointerp show`), Store.stats (`autointerp stats`); `autointerp export` of explanations (a
subprocess: wall time and peak RSS, for half of the store and for all of it: flat memory means
the same peak); the file sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

MODEL = "bench-model"
D_MLP = 16384


def vocab(n: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(out)


def unit_of(i: int) -> tuple[str, int]:
    return f"L{i // D_MLP}/N{i % D_MLP}", i // D_MLP


def build(path: Path, units: range, *, n_contexts: int, n_records: int, seed: int = 0, n_layers: int | None = None) -> dict:
    """A store with `units` (indices into layer-major neurons) mined and explained."""
    import numpy as np

    from autointerp.core.keys import content_hash
    from autointerp.store import Store

    words = vocab()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_layers = n_layers or max(u for u in units) // D_MLP + 1
    with Store(path) as st:
        st.put_model(MODEL, {"family": "llama", "n_layers": n_layers, "d_model": 2048, "n_heads": 32, "n_kv_heads": 8,
                             "d_head": 64, "d_mlp": D_MLP, "vocab_size": len(words)})
        corpus = content_hash("bench-store-corpus", seed)
        st.put_corpus(corpus, "bench:synthetic", MODEL, 64, {"synthetic": True})
        ctx_words = rng.integers(0, len(words), size=(n_contexts, 64))
        st.put_contexts(corpus, ((i, ids.tolist(), [" " + words[w] for w in ids]) for i, ids in enumerate(ctx_words)))
        run = content_hash("bench-store-run", seed, units.start, units.stop)
        st.start_mining_run(run, MODEL, corpus, {"synthetic": True, "layers": list(range(n_layers))})

        def unit_stats():
            for i in units:
                u, L = unit_of(i)
                yield u, L, 5.0, 0.1, 0.5, 0.05, {"edges": [0, 1], "counts": [1]}

        kinds = (["top"] * max(1, n_records // 2) + ["quantile"] * max(0, n_records // 4))
        kinds += ["random"] * (n_records - len(kinds))

        def records():
            r = np.random.default_rng(seed + 1)
            for a in range(units.start, units.stop, 1000):      # 1,000 units' activations drawn at once
                block = range(a, min(a + 1000, units.stop))
                acts = (r.random((len(block), n_records, 64)) * 5).astype("<f2")
                peaks = acts.max(axis=2).astype(float).tolist()
                for b, i in enumerate(block):
                    u, _ = unit_of(i)
                    ctx = r.choice(n_contexts, size=n_records, replace=False).tolist()
                    for j, (k, c) in enumerate(zip(kinds, ctx)):
                        yield u, k, j, c, peaks[b][j], acts[b, j].tobytes(), None

        st.finish_mining_run(run, n_contexts, {"synthetic": True}, unit_stats(), records())
        t_mined = time.perf_counter() - t0

        def explained():
            r = np.random.default_rng(seed + 2)
            for i in units:
                u, L = unit_of(i)
                w = r.integers(0, len(words), size=3)
                text = f"the words {words[w[0]]}, {words[w[1]]} and {words[w[2]]}"
                key = content_hash("bench-expl", u)
                v = float(r.uniform(-0.2, 0.9))
                yield ({"key": key, "model_id": MODEL, "unit": u, "layer": L, "run_id": run, "explainer": "openai:bench",
                        "method": "chat-bestof3", "text": text},
                       [{"key": key + ":simulation", "kind": "simulation", "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1,
                         "n": 10, "scorer": "openai:bench", "control": 0.0, "margin": v, "margin_low": v - 0.15,
                         "margin_high": v + 0.15},
                        {"key": key + ":detection", "kind": "detection", "value": float(r.uniform(0.4, 1.0)), "n": 14,
                         "scorer": "openai:bench"}])

        st.put_explanations_bulk(explained())
    return {"mine_write_s": round(t_mined, 1), "build_s": round(time.perf_counter() - t0, 1),
            "bytes": path.stat().st_size}


def pct(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50_ms": round(1000 * statistics.median(xs), 1),
            "p95_ms": round(1000 * xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))], 1), "n": len(xs)}


def timed(fn, args_list) -> dict:
    out = []
    for a in args_list:
        t = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t)
    return pct(out)


def cli_run(args: list[str]) -> dict:
    """`autointerp ARGS` in a subprocess: wall seconds and the child's peak RSS (MB)."""
    code = ("import resource, runpy, sys; sys.argv = ['autointerp'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('autointerp', run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code\nelse:\n    rc = 0\n"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc or 0)")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"bench_store: autointerp {' '.join(args)} failed: {p.stderr[-500:]}")
    rss = [int(ln.split()[1]) for ln in p.stderr.splitlines() if ln.startswith("MAXRSS")]
    return {"s": round(dt, 1), "peak_rss_mb": round(rss[-1] / 1024, 1) if rss else None}


def measure(path: Path, units: range, reps: int, seed: int = 1) -> dict:
    from autointerp.pipeline import show_unit
    from autointerp.serve.app import make_server
    from autointerp.store import Store

    rng = random.Random(seed)
    sample = [unit_of(rng.choice(units))[0] for _ in range(reps)]
    words = vocab()
    queries = [rng.choice(words) for _ in range(reps)]
    out: dict = {}
    srv = make_server(path, port=0, quiet=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    def get(url):
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
            assert r.status == 200

    try:
        get(f"{base}/unit/{MODEL}/{sample[0]}")   # first request opens the store
        out["unit_page"] = timed(lambda u: get(f"{base}/unit/{MODEL}/{u}"), sample)
        out["search_page"] = timed(lambda q: get(f"{base}/search?q={q}"), queries)
    finally:
        srv.shutdown()
        srv.server_close()
    with Store(path, readonly=True, create=False) as st:
        out["query_text"] = timed(lambda q: st.search(q, limit=20), queries)
        out["query_min_score_layer"] = timed(lambda u: st.search(None, model=MODEL, layer=int(u[1:u.index("/")]),
                                                                 min_score=0.5, limit=20), sample)
        out["show"] = timed(lambda u: show_unit(st, MODEL, u), sample)
        out["stats"] = timed(lambda _: st.stats(), range(max(3, reps // 8)))
    return out


STEPS = ("build-a", "build-b", "merge", "measure", "export")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--records", type=int, default=4, help="records per unit (pointing into the context pool)")
    ap.add_argument("--contexts", type=int, default=20_000, help="the pool of 64-token contexts")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--steps", default=",".join(STEPS),
                    help="comma-separated, in this order: " + ", ".join(STEPS) + " (separate runs may share --dir)")
    ap.add_argument("--dir", type=Path, default=None, help="where the stores and results.json live (kept with --keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    steps = [x.strip() for x in a.steps.split(",") if x.strip()]
    if bad := [x for x in steps if x not in STEPS]:
        raise SystemExit(f"bench_store: unknown step {bad[0]!r} (steps: {', '.join(STEPS)})")
    d = a.dir or Path(tempfile.mkdtemp(prefix="bench-store-", dir="/work/tmp" if Path("/work/tmp").is_dir() else None))
    d.mkdir(parents=True, exist_ok=True)
    res_path = d / "results.json"
    out: dict = json.loads(res_path.read_text()) if res_path.exists() else {}
    if out.get("units", a.units) != a.units:
        raise SystemExit(f"bench_store: {d} holds a bench of {out['units']} units, not {a.units}")
    out.update({"units": a.units, "records_per_unit": a.records, "contexts": a.contexts, "cpus": os.cpu_count()})
    half = a.units // 2
    full = d / "full.db"

    def log(step: str) -> None:
        out.setdefault("load", {})[step] = [round(x, 2) for x in os.getloadavg()]
        res_path.write_text(json.dumps(out, indent=2))
        print(f"bench_store: {step} {json.dumps(out.get(step))} (load {out['load'][step]})", file=sys.stderr, flush=True)

    try:
        # the million-unit store is the merge of two stores of half the units each, built through
        # the write path (two mining runs, like two groups of layers mined apart): so the build and
        # the merge of 2 x 500k are measured once each, without building 10^6 units twice
        for step, rng, name in (("build-a", range(0, half), "a.db"), ("build-b", range(half, a.units), "b.db")):
            if step in steps:
                for f in d.glob(name + "*"):
                    f.unlink()
                out[step] = build(d / name, rng, n_contexts=a.contexts, n_records=a.records, seed=0,
                                  n_layers=(a.units - 1) // D_MLP + 1)
                log(step)
        if "merge" in steps:
            for f in d.glob("full.db*"):
                f.unlink()
            out["merge"] = cli_run(["merge", str(d / "a.db"), str(d / "b.db"), "--into", str(full)])
            out["merge"]["bytes"] = full.stat().st_size
            log("merge")
        if "measure" in steps:
            out["measure"] = measure(full, range(a.units), a.reps)
            log("measure")
        if "export" in steps:
            # flat memory: the same peak RSS for half the store (a.db) and all of it
            out["export_half"] = cli_run(["export", "--what", "explanations", "--store", str(d / "a.db"),
                                          "--out", str(d / "h.jsonl")])
            out["export"] = cli_run(["export", "--what", "explanations", "--store", str(full), "--out", str(d / "e.jsonl")])
            out["export"]["bytes"] = (d / "e.jsonl").stat().st_size
            for f in ("h.jsonl", "e.jsonl"):
                (d / f).unlink(missing_ok=True)
            log("export")
    finally:
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"bench_store: {a.units} units ({a.records} records each over {a.contexts} contexts)")
    for step in ("build-a", "build-b"):
        if step in out:
            print(f"  {step:22s} {out[step]['build_s']} s ({out[step]['bytes'] / 1e9:.2f} GB; load {out['load'][step][0]})")
    if "merge" in out:
        print(f"  merge of 2 x {half}  {out['merge']['s']} s, peak RSS {out['merge']['peak_rss_mb']} MB, "
              f"{out['merge']['bytes'] / 1e9:.2f} GB (load {out['load']['merge'][0]})")
    if "measure" in out:
        m = out["measure"]
        for k in ("unit_page", "search_page", "query_text", "query_min_score_layer", "show", "stats"):
            print(f"  {k:22s} p50 {m[k]['p50_ms']} ms, p95 {m[k]['p95_ms']} ms (n={m[k]['n']})")
        print(f"  (load {out['load']['measure'][0]})")
    if "export" in out:
        print(f"  export                 {out['export']['s']} s, peak RSS {out['export']['peak_rss_mb']} MB "
              f"(half the store: {out['export_half']['s']} s, {out['export_half']['peak_rss_mb']} MB; "
              f"load {out['load']['export'][0]})")


if __name__ == "__main__":
    main()
