"""batch --concurrency against a latency-bound endpoint: the real local HTTP test server with a
fixed delay per request. Units run in parallel workers and the requests of one unit (the records
of a simulation) in parallel too, so more requests are in flight at once (counted at the server) and results do not change.
(scripts/bench_batch.py --endpoint measures the same at 0.5 s a request against `autointerp llm serve`.)"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time

DELAY = 0.4   # latency dominates: the batch's own CPU work (about a second in all, under the GIL) is small next to it
UNITS = 4


def _results(path):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        expl = sorted(c.execute("select unit, explainer, text from explanations"))
        scores = sorted(c.execute("select e.unit, e.explainer, s.kind, round(s.value, 9) from scores s "
                                  "join explanations e on e.id = s.explanation_id"))
        return expl, scores
    finally:
        c.close()


def test_concurrency_scales_against_a_latency_bound_server(tiny_dir, corpus_file, llm_server, batch_env, tmp_path,
                                                           monkeypatch):
    from autointerp.batch import BatchOptions, run_batch
    from autointerp.llm.openai_backend import forget_endpoints
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.pipeline import ExplainSettings
    from autointerp.store import Store

    monkeypatch.delenv("AUTOINTERP_LLM_CONCURRENCY", raising=False)   # the default: 4 requests at once per call
    srv = llm_server()
    chat = srv.chat
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow_chat(body):  # every chat request waits DELAY (in its server thread); requests in flight counted
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            time.sleep(DELAY)
            return chat(body)
        finally:
            with lock:
                state["now"] -= 1

    srv.s.default["/v1/chat/completions"] = slow_chat
    hm = HookedModel.load(str(tiny_dir), device="cpu")
    mined = tmp_path / "mined.db"
    with Store(mined) as st:
        mine(hm, st, corpus=str(corpus_file), n_tokens=4096, layers=[0], progress=False)

    runs = {}
    for n in (1, UNITS):
        forget_endpoints()
        path = tmp_path / f"c{n}.db"
        shutil.copyfile(mined, path)
        o = BatchOptions(model=str(tiny_dir), layers="0", limit=UNITS, n_tokens=4096, corpus=str(corpus_file),
                         llm="openai:test", llm_base_url=srv.url, concurrency=n, device="cpu",
                         settings=ExplainSettings(k=1, scorers=("simulation",), simulator="json", n_boot=20))
        state["max"] = 0
        s = run_batch(path, o, hm=hm, progress=False, log=open(tmp_path / f"c{n}.log", "w"))
        runs[n] = {"max": state["max"], "summary": s, "path": path}
        assert (s.done, s.failed) == (UNITS, 0), s

    one, many = runs[1], runs[UNITS]
    # one worker: the records of a simulation still go several at once (up to the LLM's concurrency)
    assert 2 <= one["max"] <= 4, one["max"]
    # several workers: more than one unit's requests in flight at once
    assert many["max"] > 4, many["max"]
    # (the wall time is not asserted: on a shared machine it measures the load, not the batch; the
    # in-flight counts above are what concurrency changes)
    # and the results are the same
    assert _results(one["path"]) == _results(many["path"])
