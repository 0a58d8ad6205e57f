"""merge: shards combine into the store that a single run writes; bad sources leave the target untouched."""

import hashlib
import json
import sqlite3
import subprocess
import sys

import pytest

from autointerp.errors import StoreError, UsageError
from autointerp.store import Store
from populate import UNITS, build_store


def snapshot(path) -> dict:
    """Every row by its natural key, with integer ids replaced by what they point at."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    q = lambda sql: sorted(tuple(r) for r in c.execute(sql))  # noqa: E731
    snap = {
        "models": q("select id, n_layers from models"),
        "contexts": q("select corpus_id, idx, tokens_json from contexts"),
        "mining_runs": q("select id, n_done, status from mining_runs"),
        "unit_stats": q("select run_id, unit, max_act from unit_stats"),
        "unit_logits": q("select model_id, unit, promoted_json from unit_logits"),
        "records": q("select run_id, unit, kind, bin, ctx_idx, max_act, hex(acts), hex(extra) from records"),
        "explanations": q("select key, unit, explainer, text from explanations"),
        # the explanation <-> score link, by keys
        "scores": q("select s.key, e.key, s.kind, s.value, s.ci_low, s.ci_high from scores s join explanations e on e.id = s.explanation_id"),
        "llm_calls": q("select backend, model, kind, prompt_tokens, completion_tokens, cost_usd, created_at from llm_calls"),
        "datasets": q("select name, n_items from datasets"),
        "pairs": q("select dataset, idx, clean from pairs"),
        "patch_runs": q("select key, dataset, what from patch_runs"),
        "patch_results": q("select r.key, p.component, p.position, p.effect from patch_results p join patch_runs r on r.id = p.run_id"),
        "head_scores": q("select model_id, unit, detector, score from head_scores"),
        "fts": q("select e.key from explanations_fts f join explanations e on e.rowid = f.rowid where explanations_fts match 'week'"),
    }
    # simulated activations still point at the right records after ids were remapped
    recs = {r[0]: r[1:] for r in c.execute("select id, run_id, unit, kind, bin, ctx_idx from records")}
    links = []
    for key, unit, details in c.execute("select s.key, e.unit, s.details_json from scores s join explanations e on e.id = s.explanation_id "
                                        "where s.details_json is not null"):
        for it in json.loads(details)["records"]:
            links.append((key, recs[it["record_id"]], unit, it["kind"], it["bin"], it["ctx_idx"]))
    snap["details_links"] = sorted(links)
    c.close()
    return snap


def test_merge_of_shards_equals_direct(tmp_path):
    direct = tmp_path / "direct.db"
    build_store(direct).close()
    shards = [tmp_path / f"shard{i}.db" for i in range(3)]
    for i, p in enumerate(shards):
        build_store(p, part=i, n_parts=3).close()
    # shards' integer ids overlap (each starts at 1): the merge must remap them
    ids = [sqlite3.connect(p).execute("select min(id) from explanations").fetchone()[0] for p in shards]
    assert ids == [1, 1, 1]
    into = tmp_path / "all.db"
    with Store(into) as s:
        added = s.merge_from(shards)
    assert added["explanations"] == 2 * len(UNITS)
    want, got = snapshot(direct), snapshot(into)
    for table in want:
        assert got[table] == want[table], table
    # every record's simulated activations are linked to a record of the same unit
    assert all(link[1][1] == link[2] for link in got["details_links"])
    # merging again (or a shard twice) adds nothing
    with Store(into) as s:
        again = s.merge_from(shards + [shards[0]])
    assert sum(again.values()) == 0
    assert snapshot(into) == got


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_source_leaves_target_untouched(tmp_path):
    good = tmp_path / "good.db"
    build_store(good, part=0, n_parts=2).close()
    into = tmp_path / "all.db"
    build_store(into, part=1, n_parts=2).close()
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("create table t(x)")
    c.commit()
    c.close()
    text = tmp_path / "notes.db"
    text.write_text("hello, not a database\n" * 100)
    before = digest(into), snapshot(into)
    for bad in (other, text, tmp_path / "missing.db"):
        with Store(into) as s:
            with pytest.raises(StoreError):
                s.merge_from([good, bad])
        assert (digest(into), snapshot(into)) == before
    with Store(into) as s:
        with pytest.raises(UsageError, match="target itself"):
            s.merge_from([into])


def test_failing_merge_rolls_back(tmp_path):
    good = tmp_path / "good.db"
    build_store(good, part=0, n_parts=2).close()
    broken = tmp_path / "broken.db"
    build_store(broken, part=1, n_parts=2).close()
    c = sqlite3.connect(broken)  # a score pointing at no explanation (foreign keys off here)
    c.execute("insert into scores(key, explanation_id, kind, value, created_at) values ('dangling', 999, 'simulation', 0.1, 'x')")
    c.commit()
    c.close()
    into = tmp_path / "all.db"
    Store(into).close()
    before = snapshot(into)
    with Store(into) as s:
        with pytest.raises(Exception):
            s.merge_from([good, broken])
        assert s.counts()["explanations"] == 0
    assert snapshot(into) == before


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "autointerp", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_merge_cli(tmp_path):
    shards = [tmp_path / f"s{i}.db" for i in range(2)]
    for i, p in enumerate(shards):
        build_store(p, part=i, n_parts=2).close()
    into = tmp_path / "out" / "all.db"
    into.parent.mkdir()
    r = run_cli("merge", *shards, "--into", into, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["added"]["explanations"] == 2 * len(UNITS)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t(x)").connection.commit()
    fresh = tmp_path / "fresh.db"
    r = run_cli("merge", shards[0], other, "--into", fresh)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not an autointerp store" in lines[0]
    assert not fresh.exists()  # a bad source: the target is not even created
    before = digest(into)
    r = run_cli("merge", shards[0], "--into", other)  # a target that is not an autointerp store
    assert r.returncode == 1 and "not an autointerp store" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert digest(into) == before
