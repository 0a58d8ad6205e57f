"""batch --mined: explain workers read one mined store read-only (the second phase of
scripts/slurm_batch.sh) instead of each copying it. A tiny random Llama is the subject model, the
real local HTTP test server the LLM; the mined store's bytes must not change."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat

import pytest

from _batchkit import D_MLP, batch_args, cli_inproc


def _rows(path, sql):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


def _digest(path) -> dict:
    """The mined store's data, byte for byte: the file and its -wal, if any (not the -shm: the
    WAL's shared-memory index, where readers take their read locks)."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.parent.iterdir())
            if not f.name.endswith("-shm")}


@pytest.fixture
def mined(tiny_dir, corpus_file, batch_env, tmp_path, capsys):
    """A store with layer 0 mined, checkpointed into one file, its files read-only on disk."""
    p = tmp_path / "mined" / "mined.db"
    p.parent.mkdir()
    code, _, err = cli_inproc(["mine", "--model", tiny_dir, "--corpus", corpus_file, "--tokens", "4096", "--layers", "0",
                               "--device", "cpu", "--store", p], capsys)
    assert code == 0, err
    c = sqlite3.connect(p)
    c.execute("pragma wal_checkpoint(TRUNCATE)")
    c.close()
    for f in p.parent.iterdir():
        f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    yield p
    for f in p.parent.iterdir():
        f.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_workers_read_the_mined_store_and_merge_to_the_single_run(mined, tiny_dir, corpus_file, llm_server, batch_env,
                                                                  tmp_path, capsys):
    srv = llm_server()
    before = _digest(mined)
    workers = [tmp_path / f"explain-{i}.db" for i in range(2)]
    for i, w in enumerate(workers):
        code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, srv.url, "--layers", "0", "--shard", f"{i}/2",
                                               "--mined", mined, "--store", w, "--json"), capsys)
        assert code == 0, err
        s = json.loads(out)
        assert s["done"] == D_MLP // 2 and s["mined"] is None
    assert _digest(mined) == before                                        # the mined store is untouched
    (rid,), = _rows(mined, "select id from mining_runs")
    for w in workers:
        # no copy of the mined store: only the run's own rows, the jobs and the results
        assert _rows(w, "select id, status from mining_runs") == [(rid, "done")]
        for t in ("records", "contexts", "unit_stats", "unit_logits"):
            assert _rows(w, f"select count(*) from {t}") == [(0,)], t
        assert _rows(w, "select count(*) from explanations where run_id = ? and explainer != 'baseline'".replace(
            "?", f"'{rid}'")) == [(D_MLP // 2,)]

    # merged: what one process's mine + batch gives (the same run, records, explanations, scores)
    out_db = tmp_path / "out.db"
    code, _, err = cli_inproc(["merge", mined, *workers, "--into", out_db], capsys)
    assert code == 0, err
    single = tmp_path / "single.db"
    code, _, err = cli_inproc(["mine", "--model", tiny_dir, "--corpus", corpus_file, "--tokens", "4096", "--layers", "0",
                               "--device", "cpu", "--store", single], capsys)
    assert code == 0, err
    code, _, err = cli_inproc(batch_args(tiny_dir, corpus_file, srv.url, "--layers", "0", "--store", single), capsys)
    assert code == 0, err
    for q in ("select id, settings_json, n_done, status from mining_runs",
              "select unit, kind, bin, ctx_idx, max_act, acts from records order by unit, kind, bin, ctx_idx",
              "select unit, explainer, run_id, text from explanations order by unit, explainer, text",
              "select e.unit, s.kind, s.value, s.ci_low, s.ci_high from scores s join explanations e on e.id = s.explanation_id "
              "order by e.unit, s.kind, e.explainer",
              "select key, unit, status from jobs order by unit"):
        a, b = _rows(single, q), _rows(out_db, q)
        assert a and a == b, q


def test_a_second_run_redoes_nothing_and_a_dry_run_reads_the_mined_store(mined, tiny_dir, corpus_file, llm_server,
                                                                         batch_env, tmp_path, capsys):
    srv = llm_server()
    w = tmp_path / "w.db"
    args = batch_args(tiny_dir, corpus_file, srv.url, "--layers", "0", "--mined", mined, "--store", w)
    code, out, err = cli_inproc([*args, "--dry-run", "--json"], capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["todo"] == D_MLP and s["needs_mining"] == [] and s["estimate"]["total_tokens"] > 0 and not w.exists()
    code, out, err = cli_inproc([*args, "--limit", "2", "--json"], capsys)
    assert code == 0 and json.loads(out)["done"] == 2, err
    hits = dict(srv.s.hits)
    code, out, err = cli_inproc([*args, "--limit", "2", "--json"], capsys)
    s = json.loads(out)
    assert code == 0 and s["done"] == 2 and s["before"] == {"done": 2, "new": D_MLP - 2}, err
    code, out, err = cli_inproc([*args, "--json"], capsys)
    assert code == 0 and json.loads(out)["done"] == D_MLP - 4
    code, out, err = cli_inproc([*args, "--json"], capsys)
    assert code == 0 and json.loads(out)["done"] == 0 and json.loads(out)["after"] == {"done": D_MLP}
    assert hits  # the LLM server was used by the first run


@pytest.mark.parametrize("case, msg", [
    ("missing", "no mined store at"),
    ("layer", "has no finished mining run of layer(s) 1"),
    ("itself", "--mined names the batch's own --store"),
])
def test_bad_mined_store_one_line_nothing_written(case, msg, mined, tiny_dir, corpus_file, batch_env, tmp_path, capsys):
    w = tmp_path / "w.db"
    src, extra = mined, ["--layers", "0"]
    if case == "missing":
        src = tmp_path / "nowhere.db"
    elif case == "layer":
        extra = ["--layers", "0-1"]
    elif case == "itself":
        w = mined
    before = _digest(mined)
    code, out, err = cli_inproc(batch_args(tiny_dir, corpus_file, "http://127.0.0.1:9/v1", *extra, "--mined", src,
                                           "--store", w), capsys)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], err
    assert _digest(mined) == before
    if case != "itself":
        assert not w.exists()
    if case != "itself":
        assert not list(tmp_path.glob("w.db*"))
    assert os.access(mined, os.R_OK)
