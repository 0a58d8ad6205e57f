#!/usr/bin/env python
"""`pairs` for task descriptions that are not built in, offline: SmolLM2-135M as the subject
model and as the LLM (or `--llm qwen2.5-coder-0.5b`), the LLM embedded (constrained decoding) and behind the test server
(`autointerp llm serve`) in each mode.

    .venv/bin/python scripts/bench_pairs.py [--backends embedded,structured,vllm] [--tasks 0,1,2]
        [--n 24] [--llm qwen2.5-coder-0.5b] [--max-llm-calls 6] [--time-budget 240] [--json out.json]

Backends: embedded = in-process constrained decoding; structured = the test server's
`--mode structured` (response_format json_schema, found by the probe); vllm / llamacpp /
chat-only = the server without structured output (parse-and-retry). Each backend gets a fresh
store (no cached LLM answers). Per task it prints: validated items (of --n), the rejection
reasons with counts, seconds (the whole make_dataset: LLM calls + validation), LLM calls and
why it stopped. The descriptions are ones a user would write; none is in the few-shot examples
of prompts/pairs_frame_chat.txt and pairs_answers_chat.txt (even/odd, capital cities, opposites)
or a built-in task.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

TASKS = [
    "gendered pronoun after a name",
    "the language spoken in a country",
    "the color of a common fruit or vegetable",
    "the sound an animal makes",
    "the day of the week after a given day",
    "is or are after a singular or plural subject",
]
BACKENDS = ("embedded", "structured", "vllm", "llamacpp", "chat-only")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="subject model (and the LLM unless --llm)")
    ap.add_argument("--llm", default=None, help="the embedded LLM that writes the tasks (default: --model), "
                                                 "e.g. qwen2.5-coder-0.5b")
    ap.add_argument("--backends", default="embedded,structured,vllm")
    ap.add_argument("--tasks", default=",".join(str(i) for i in range(len(TASKS))), help="indices into TASKS")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--max-llm-calls", type=int, default=6)
    ap.add_argument("--time-budget", type=float, default=240.0)
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args()

    from autointerp.errors import AutointerpError
    from autointerp.llm.embedded import EmbeddedLLM
    from autointerp.llm.openai_backend import OpenAILLM
    from autointerp.llm.serve import start_server
    from autointerp.models.hooked import HookedModel
    from autointerp.store import Store
    from autointerp.tasks import make_dataset
    from autointerp.tasks.llm_pairs import describe

    t = time.perf_counter()
    hm = HookedModel.load(a.model, device="cpu")
    emb = EmbeddedLLM(a.llm or a.model, device="cpu")
    print(f"loaded {a.model} as subject and {a.llm or a.model} as LLM in {time.perf_counter() - t:.1f} s; load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    tasks = [TASKS[int(i)] for i in a.tasks.split(",")]
    for backend in a.backends.split(","):
        if backend not in BACKENDS:
            raise SystemExit(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
        srv = None
        if backend == "embedded":
            llm = emb
        else:
            srv = start_server(llm=emb, mode=backend)
            llm = OpenAILLM(a.llm or a.model, base_url=srv.url, timeout=600)
        with tempfile.TemporaryDirectory() as d:
            store = Store(os.path.join(d, "bench.db"))
            llm.store = store
            how = llm.structured_support() or "parse-and-retry"
            for i, task in enumerate(tasks):
                t0 = time.perf_counter()
                load0 = os.getloadavg()[0]
                try:
                    ds = make_dataset(store, hm, task, a.n, name=f"t{i}", llm=llm, max_llm_calls=a.max_llm_calls,
                                      time_budget=a.time_budget)
                    st, valid, err = ds.stats, ds.n_items, None
                    used = store.get_dataset(ds.name)["settings"]
                    plan = {"templates": used["templates"], "map": [f"{v['value']}->{v['answer']}" for v in used["values"]]}
                    # what the kept items say (validation checks the subject's behaviour, not that the LLM's map is true)
                    shown = [f"{it.meta.get('x')}->{it.answer.strip()} / {it.meta.get('x_corrupt')}->{it.wrong.strip()}"
                             for it in ds.items[:3]]
                except AutointerpError as e:
                    st, valid, err, shown, plan = None, 0, str(e), [], None
                secs = time.perf_counter() - t0
                calls = store.db.execute("SELECT COUNT(*) FROM llm_calls WHERE kind != 'probe'").fetchone()[0]
                store.db.execute("DELETE FROM llm_calls")
                row = {"llm": a.llm or a.model, "backend": backend, "structured": how, "task": task, "valid": valid, "n": a.n,
                       "seconds": round(secs, 1), "llm_calls": calls, "load": round((load0 + os.getloadavg()[0]) / 2, 1),
                       "rejected": describe(st["rejected"]) if st else None, "stopped": st.get("stopped") if st else "error",
                       "error": err.splitlines()[0] if err else None, "error_full": err,
                       "kept_examples": shown, "plan": plan}
                rows.append(row)
                print(f"{backend:<10} {task[:44]:<44} valid {valid:>2}/{a.n}  {secs:6.1f} s  {calls} LLM calls  "
                      f"load {row['load']}  " + (f"rejected: {row['rejected']}" if st else f"FAILED: {err}"), flush=True)
        if srv is not None:
            srv.close()
    print("\n| LLM | backend (structured output) | task | valid | seconds | LLM calls | load | rejections (or why none) "
          "| first kept items (value->answer / corrupt value->wrong) |")
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        why = r["rejected"] if r["rejected"] is not None else _why(r["error_full"])
        print(f"| {r['llm']} | {r['backend']} ({r['structured']}) | {r['task']} | {r['valid']}/{r['n']} | {r['seconds']} | "
              f"{r['llm_calls']} | {r['load']} | {why} | {'; '.join(r['kept_examples']) or '—'} |")
    print("\nThe LLM's templates and value->answer maps behind each dataset (validation checks that the subject "
          "follows the map, not that the map is true):")
    for r in rows:
        if r["plan"]:
            print(f"- {r['llm']} {r['backend']}, {r['task']}: {' | '.join(r['plan']['templates'])}; "
                  f"{', '.join(r['plan']['map'])}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


def _why(err: str | None) -> str:
    """A failed task's reasons (the error's 'dropped'/'rejected'/'LLM' lines), not its headline."""
    lines = [x.strip() for x in (err or "").splitlines()[1:]]
    return "; ".join(x for x in lines if not x.startswith(("try:", "e.g."))) or (err or "")


if __name__ == "__main__":
    main()
