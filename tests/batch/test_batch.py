"""autointerp batch: a real kill -9 midway then a restart, failing units, readers during a run,
shards, cooperating workers, budget stop, dry run and bad input. A tiny random Llama saved as a
model directory is the subject model; the real local HTTP test server is the LLM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time

import pytest

from _batchkit import D_MLP, N_LAYERS, batch_args, cli_inproc, cli_popen

ALL_UNITS = {f"L{L}/N{i}" for L in range(N_LAYERS) for i in range(D_MLP)}
LAYER0 = {f"L0/N{i}" for i in range(D_MLP)}


def _ro(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def _rows(path, sql, args=()):
    c = _ro(path)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute(sql, args)]
    finally:
        c.close()


def _check_one_result_per_key(path, units):
    """Every unit's job done, with its result; one LLM explanation per unit and per key, one
    score per (explanation, kind)."""
    jobs = _rows(path, "select * from jobs")
    assert {j["unit"] for j in jobs} == units
    assert all(j["status"] == "done" for j in jobs), [(j["unit"], j["status"], j["last_error"]) for j in jobs if j["status"] != "done"]
    assert len({j["key"] for j in jobs}) == len(jobs) == len(units)
    expl = _rows(path, "select unit, key, id from explanations where explainer != 'baseline'")
    assert sorted(e["unit"] for e in expl) == sorted(units)  # exactly one each
    assert {j["result_id"] for j in jobs} == {e["id"] for e in expl}
    assert not _rows(path, "select explanation_id, kind, count(*) cnt from scores group by explanation_id, kind having cnt > 1")
    base = _rows(path, "select unit, count(*) n from explanations where explainer = 'baseline' group by unit")
    assert all(b["n"] == 1 for b in base) and {b["unit"] for b in base} == units


# ---- kill -9 midway, a reader during the run, restart ------------------------------------------
def test_kill9_midway_then_restart(tiny_dir, corpus_file, llm_server, batch_env, tmp_path):
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.store import Store

    srv = llm_server(delay=0.03)
    store = tmp_path / "b.db"
    # mined here, so the batch subprocesses (which then need no torch) start fast; the batch
    # would mine the same run itself (test_failing_units... does)
    with Store(store) as st:
        mine(HookedModel.load(str(tiny_dir), device="cpu"), st, corpus=str(corpus_file), n_tokens=4096, layers=[0],
             progress=False)
    args = batch_args(tiny_dir, corpus_file, srv.url, "--store", store, "--layers", "0")
    log = open(tmp_path / "run1.log", "w")
    t_start = time.time()
    p = cli_popen(args, batch_env, stdout=log, stderr=log)
    done_before: dict[str, dict] = {}
    slowest_read = 0.0
    deadline = time.time() + 120
    try:
        while time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
            t0 = time.perf_counter()
            try:  # a reader during the batch: never blocked (WAL)
                rows = _rows(store, "select unit, status, result_id, updated_at from jobs")
                _rows(store, "select count(*) from explanations")
            except sqlite3.OperationalError as e:  # the store is still being created
                assert "no such table" in str(e)
                continue
            slowest_read = max(slowest_read, time.perf_counter() - t0)
            done = [r for r in rows if r["status"] == "done"]
            if done:
                done_before = {r["unit"]: r for r in done}
                break
        assert p.poll() is None, "the batch ended before it could be killed: " + (tmp_path / "run1.log").read_text()[-2000:]
        os.kill(p.pid, signal.SIGKILL)
        t_kill = time.time()
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
        log.close()
    assert done_before, "no job was done within the time limit"
    assert slowest_read < 2.0, f"a reader waited {slowest_read:.2f}s"
    jobs = _rows(store, "select * from jobs")
    assert len({j["unit"] for j in jobs}) == len(jobs)
    n_done_at_kill = sum(j["status"] == "done" for j in jobs)
    assert 0 < n_done_at_kill < len(LAYER0)
    explains_before = srv.explain_prompts.copy()

    r = cli_popen([*args, "--json"], batch_env, stdout=-1, stderr=-1, text=True)
    out, err = r.communicate(timeout=240)
    assert r.returncode == 0, err[-2000:]
    print(f"killed at {t_kill - t_start:.1f}s, restart took {time.time() - t_kill:.1f}s")
    summary = json.loads(out)
    assert summary["units"] == len(LAYER0)
    assert summary["todo"] == len(LAYER0) - n_done_at_kill and summary["done"] == summary["todo"]
    assert summary["after"] == {"done": len(LAYER0)}
    _check_one_result_per_key(store, LAYER0)
    # nothing done was redone: the rows done before the kill are untouched
    after = {j["unit"]: j for j in _rows(store, "select * from jobs")}
    for u, row in done_before.items():
        assert after[u]["result_id"] == row["result_id"] and after[u]["updated_at"] == row["updated_at"]
        assert after[u]["attempts"] == 1
    # every unit's explain prompt went to the LLM (the kill may have cost at most the in-flight ones again)
    assert len(srv.explain_prompts) == len(LAYER0) and set(explains_before) <= set(srv.explain_prompts)


# ---- failing units ------------------------------------------------------------------------------
def test_failing_units_left_failed_rest_done(tiny_dir, corpus_file, llm_server, batch_env, tmp_path, capsys):
    srv = llm_server(fail_every=3)
    store = tmp_path / "f.db"
    args = batch_args(tiny_dir, corpus_file, srv.url, "--store", store, "--layers", "0", "--json")
    code, out, err = cli_inproc(args, capsys)
    assert code == 0, err
    s = json.loads(out)
    jobs = {j["unit"]: j for j in _rows(store, "select * from jobs")}
    failed = {u for u, j in jobs.items() if j["status"] == "failed"}
    assert failed and len(failed) == 2  # every 3rd distinct explain prompt of 6 units
    assert s["failed"] == 2 and s["done"] == 4 and s["after"] == {"done": 4, "failed": 2}
    for u in failed:
        assert jobs[u]["attempts"] == 3 and "HTTP 400" in jobs[u]["last_error"]
        assert not _rows(store, "select id from explanations where unit = ? and explainer != 'baseline'", [u])
    assert all(j["status"] == "done" and j["result_id"] for u, j in jobs.items() if u not in failed)
    assert {f["unit"] for f in s["failures"]} == failed
    assert s["scores"]["n"] == 4 and s["scores"]["q1"] <= s["scores"]["median"] <= s["scores"]["q3"]
    # the same command again: nothing new to do, no LLM call, failed units stay failed
    before = srv.s.hits["/v1/chat/completions"]
    code, out, err = cli_inproc(args, capsys)
    assert code == 0, err
    s2 = json.loads(out)
    assert s2["todo"] == 0 and s2["done"] == 0 and s2["skipped"] == 6
    assert srv.s.hits["/v1/chat/completions"] == before


# ---- shards, merged ----------------------------------------------------------------------------
def test_shards_cover_every_unit_once_and_merge(tiny_dir, corpus_file, llm_server, batch_env, tmp_path, capsys):
    from autointerp.store import Store

    srv = llm_server()
    stores = [tmp_path / "s0.db", tmp_path / "s1.db"]
    for i, st in enumerate(stores):
        code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, srv.url, "--store", st, "--layers", "0",
                                               "--shard", f"{i}/2", "--json"), capsys)
        assert code == 0, err
        assert json.loads(out)["done"] == 3
    units = [{j["unit"] for j in _rows(st, "select unit from jobs where status = 'done'")} for st in stores]
    assert units[0].isdisjoint(units[1]) and units[0] | units[1] == {f"L0/N{i}" for i in range(D_MLP)}
    assert units[0] == {"L0/N0", "L0/N2", "L0/N4"}  # position i mod n of the (layer, index) order
    with Store(tmp_path / "all.db") as all_:
        all_.merge_from(stores)
    expl = _rows(tmp_path / "all.db", "select unit from explanations where explainer != 'baseline'")
    assert sorted(e["unit"] for e in expl) == sorted(units[0] | units[1])


# ---- two workers on one store ------------------------------------------------------------------
def test_two_workers_share_one_store(tiny_dir, corpus_file, llm_server, batch_env, tmp_path):
    from autointerp.batch import BatchOptions, run_batch
    from autointerp.pipeline import ExplainSettings

    srv = llm_server(delay=0.01)
    store = tmp_path / "c.db"
    s = ExplainSettings(k=1, scorers=("simulation",), simulator="json", n_boot=20)
    o = BatchOptions(model=str(tiny_dir), layers="0", corpus=str(corpus_file), n_tokens=4096, llm="openai:test",
                     llm_base_url=srv.url, device="cpu", settings=s, concurrency=2)
    first = run_batch(store, o.model_copy(update={"limit": 1}), progress=False)  # mines, does L0/N0
    assert first.done == 1 and first.mined
    out: list = []
    ts = [threading.Thread(target=lambda: out.append(run_batch(store, o, progress=False))) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert len(out) == 2 and sum(x.done for x in out) == D_MLP - 1
    _check_one_result_per_key(store, {f"L0/N{i}" for i in range(D_MLP)})
    assert len(srv.explain_prompts) == D_MLP
    # no unit done twice (the job claims): each explain prompt was sent once; each unit costs at most
    # 1 explain + 3 x 10 test simulations (explanation, baseline, control). Two units may share a
    # control simulation (same random records, same control text): cached, or raced by two threads.
    reqs = [r["body"] for r in srv.s.requests
            if r["path"] == "/v1/chat/completions" and srv._role(r["body"]) != "probe"]   # probes: once a client
    explains = [json.dumps(b, sort_keys=True) for b in reqs if b.get("max_tokens") == 40]
    assert len(explains) == len(set(explains)) == D_MLP
    assert D_MLP * 21 <= len(reqs) <= D_MLP * 31


# ---- budget ----------------------------------------------------------------------------------------
def test_budget_stops_cleanly_exit_3(tiny_dir, corpus_file, llm_server, batch_env, tmp_path, capsys):
    srv = llm_server()
    store = tmp_path / "b.db"
    code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, srv.url, "--store", store, "--layers", "0",
                                           "--max-llm-tokens", "700", "--json"), capsys)
    assert code == 3
    assert err.strip().splitlines()[-1].startswith("error: LLM token budget reached")
    s = json.loads(out)
    assert s["stopped"] and 1 <= s["done"] < D_MLP and s["remaining"] >= 1
    jobs = _rows(store, "select status, attempts from jobs")
    assert {j["status"] for j in jobs} <= {"done", "pending"}  # nothing left running or failed
    assert sum(j["status"] == "done" for j in jobs) == s["done"]
    assert all(j["attempts"] <= 1 for j in jobs)


# ---- dry run -----------------------------------------------------------------------------------
def test_dry_run_writes_nothing(tiny_dir, corpus_file, llm_server, batch_env, tmp_path, capsys):
    srv = llm_server()
    store = tmp_path / "d.db"
    args = batch_args(tiny_dir, corpus_file, srv.url, "--store", store, "--layers", "0")
    code, out, err = cli_inproc([*args, "--dry-run", "--json"], capsys)
    assert code == 0, err
    s = json.loads(out)
    assert not store.exists() and srv.s.hits == {}
    assert s["todo"] == D_MLP and s["needs_mining"] == [0] and s["estimate"]["total_tokens"] > 0
    # the estimate is the real pipeline run against the dry-run backend: 1 explain call, then one
    # JSON simulation per test record (5 top + 5 random) for the explanation, the baseline and the control
    per = s["estimate"]["per_unit"]
    assert per["calls"] == 1 + 3 * 10 and per["explain_prompt"] > 0 and per["simulate_prompt"] > per["explain_prompt"]
    code, out, err = cli_inproc([*args, "--limit", "2"], capsys)
    assert code == 0, err
    snap = store.read_bytes(), (tmp_path / "d.db-wal").read_bytes() if (tmp_path / "d.db-wal").exists() else b""
    code, out, err = cli_inproc([*args, "--dry-run"], capsys)
    assert code == 0, err
    assert "jobs: done 2, new 4" in out and "would do 4 units: L0/N2, L0/N3, L0/N4, L0/N5" in out
    assert "estimated LLM tokens" in out
    assert (store.read_bytes(), (tmp_path / "d.db-wal").read_bytes() if (tmp_path / "d.db-wal").exists() else b"") == snap


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, msg", [
    (["--unit", "L7/N0"], "layer 7 out of range"),
    (["--unit", "L0/N99"], "index 99 out of range"),
    (["--unit", "neuron5"], "bad unit id"),
    (["--layers", "0-9"], "out of range (model has layers 0..1)"),
    (["--shard", "2/2"], "bad --shard"),
    (["--shard", "one/two"], "bad --shard"),
    (["--limit", "-1"], "--limit"),
])
def test_bad_input_one_line_nonzero_store_untouched(extra, msg, tiny_dir, corpus_file, batch_env, tmp_path, capsys):
    store = tmp_path / "x.db"
    code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, "http://127.0.0.1:9/v1", "--store", store, *extra), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], err
    assert not store.exists()


def test_not_an_autointerp_store(tiny_dir, corpus_file, batch_env, tmp_path, capsys):
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("create table people(name text)")
    c.commit()
    c.close()
    text = tmp_path / "notes.db"
    text.write_text("not a database at all\n" * 50)
    for st in (other, text):
        before = st.read_bytes()
        code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, "http://127.0.0.1:9/v1", "--store", st), capsys)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "not an autointerp store" in lines[0], err
        assert st.read_bytes() == before
        assert not (tmp_path / f"{st.name}-wal").exists()


# ---- the exact baseline for every unit, no LLM ------------------------------------------------------
def test_explainer_baseline_scores_every_unit_without_an_llm(tiny_dir, corpus_file, batch_env, tmp_path, capsys):
    store = tmp_path / "b.db"
    # no LLM server exists: a URL nobody listens on proves no call is made
    args = ["batch", "--model", str(tiny_dir), "--corpus", str(corpus_file), "--tokens", "4096", "--device", "cpu",
            "--llm", "openai:none", "--llm-base-url", "http://127.0.0.1:9/v1", "--explainer", "baseline",
            "--n-boot", "50", "--store", store, "--json"]
    code, out, err = cli_inproc(args, capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["done"] == len(ALL_UNITS) and s["failed"] == 0
    assert s["scores"]["kind"] == "simulation_exact" and s["scores"]["n"] >= 1
    assert not _rows(store, "select id from llm_calls")
    rows = _rows(store, "select e.unit, e.explainer, s.kind, s.value, s.control, s.margin, s.reason from explanations e "
                        "join scores s on s.explanation_id = e.id")
    assert {r["explainer"] for r in rows} == {"baseline"} and {r["kind"] for r in rows} == {"simulation_exact"}
    assert {r["unit"] for r in rows} == ALL_UNITS
    for r in rows:   # every exact score has its control and margin, or is null with a reason
        assert (r["value"] is not None and r["control"] is not None and r["margin"] is not None) or r["reason"]
    # again: nothing to do
    code, out, err = cli_inproc(args, capsys)
    assert code == 0 and json.loads(out)["todo"] == 0
