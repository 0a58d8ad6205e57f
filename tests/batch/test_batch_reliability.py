"""batch: a run in which every unit failed exits non-zero with one summary line (issue #24 item 6,
#25 item 8); a per-unit deadline bounds every LLM request of a unit, against the real local
HTTP test server made slow."""

from __future__ import annotations

import json
import time

from _batchkit import batch_args, cli_inproc


def test_every_unit_failed_exits_nonzero_with_one_line(tiny_dir, corpus_file, llm_server, batch_env, tmp_path, capsys):
    srv = llm_server(fail_every=1)                         # every explain prompt answered HTTP 400
    store = tmp_path / "f.db"
    code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, srv.url, "--store", store, "--layers", "0",
                                           "--max-attempts", "1", "--json"), capsys)
    assert code == 1, (code, err)
    s = json.loads(out)                                    # the summary still comes out, for machines
    assert s["failed"] == 6 and s["done"] == 0
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "every unit" in lines[0] and "6 of 6" in lines[0] and "HTTP 400" in lines[0], err


def test_unit_deadline_bounds_a_slow_endpoint(tiny_dir, corpus_file, llm_server, batch_env, tmp_path, capsys):
    srv = llm_server(delay=2.0)                            # every request takes 2 s; --llm-timeout alone allows 60
    store = tmp_path / "d.db"
    t0 = time.monotonic()
    code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, srv.url, "--store", store, "--layers", "0",
                                           "--limit", "2", "--concurrency", "2", "--max-attempts", "1",
                                           "--llm-timeout", "60", "--unit-timeout", "1", "--json"), capsys)
    took = time.monotonic() - t0
    assert code == 1, (code, err)
    s = json.loads(out)
    assert s["failed"] == 2 and s["done"] == 0
    assert all("timed out" in f["error"] for f in s["failures"]), s["failures"]
    assert took < 60, took                                 # a unit needs several 2 s requests; each unit stops at 1 s
