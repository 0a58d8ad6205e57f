"""Benchmark: the v4 -> v5 store upgrade (one explanation store) at scale.

    .venv/bin/python scripts/bench_migrate_v5.py --units 100000
    .venv/bin/python scripts/bench_migrate_v5.py --units 1000000 --json

Builds a schema-v4 store from the v4 schema text (tests/store/schema_v4.sql) with --units unit
explanations (each with --scores scores, its FTS index kept by the v4 triggers) and --diff-sides
model-diff side explanations in diff_explanations / diff_scores, then opens it with this
autointerp (which upgrades it: the explanations table is rebuilt, the diff rows move in, the FTS
index is rebuilt) and reports the upgrade's wall time and peak RSS, the file size before and
after, and checks that every row arrived (counts, and one diff explanation read back).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

import sqlite_utils

ROOT = Path(__file__).resolve().parents[1]
V4 = ROOT / "tests" / "store" / "schema_v4.sql"
NOW = "2026-12-01T00:00:00+00:00"


def build_v4(path: Path, units: int, n_scores: int, sides: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(2000)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V4.read_text())
    conn.executescript("insert into meta values ('app', 'autointerp'); insert into meta values ('schema_version', '4');")
    sqlite_utils.Database(conn)["explanations"].enable_fts(["text", "unit", "explainer"], create_triggers=True,
                                                          tokenize="porter")
    conn.execute("begin")
    conn.execute("insert into models values ('m', 'llama', 30, 576, 9, 3, 64, 1536, 49152, ?)", [NOW])
    for i in range(units):
        layer, idx = divmod(i, 1536)
        cur = conn.execute("insert into explanations(key, model_id, unit, layer, explainer, method, text, created_at) "
                           "values (?, 'm', ?, ?, 'baseline', 'baseline', ?, ?)",
                           [f"u{i}", f"L{layer}/N{idx}", layer, " ".join(rng.sample(words, 3)), NOW])
        eid = cur.lastrowid
        conn.executemany("insert into scores(key, explanation_id, kind, value, n, details_json, created_at) "
                         "values (?,?,?,?,?,?,?)", [(f"u{i}:{k}", eid, f"kind{k}", rng.random(), 10,
                                                     '{"per_record": [0.1, 0.2]}', NOW) for k in range(n_scores)])
    conn.execute("insert into diffs(id, model_a, model_b, mode, level, created_at, updated_at) "
                 "values ('d0', 'a', 'b', 'token', 'blackbox', ?, ?)", [NOW, NOW])
    for j in range(sides):
        conn.execute("insert into diff_explanations(key, diff_id, side, explainer, method, text, created_at) "
                     "values (?, 'd0', ?, 'baseline', 'baseline', ?, ?)", [f"d{j}", ("a_better", "b_better")[j % 2],
                                                                            " ".join(rng.sample(words, 3)), NOW])
        rec = {"kind": "simulation_exact", "value": 0.5, "n": 12, "control": 0.1, "margin": 0.4, "details": None}
        conn.execute("insert into diff_scores(key, explanation_id, kind, value, record_json, created_at) "
                     "values (?, ?, 'simulation_exact', 0.5, ?, ?)", [f"d{j}:s", j + 1, json.dumps(rec), NOW])
    conn.execute("commit")
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--scores", type=int, default=3)
    ap.add_argument("--diff-sides", type=int, default=20)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from autointerp.store import Store

    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        p = Path(d) / "v4.db"
        t0 = time.perf_counter()
        build_v4(p, a.units, a.scores, a.diff_sides)
        build_s = time.perf_counter() - t0
        size_before = p.stat().st_size
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        with Store(p) as s:
            upgrade_s = time.perf_counter() - t0
            counts = {t: s.db[t].count for t in ("explanations", "scores")}
            ok = (s.schema_version == 5 and "diff_explanations" not in s.db.table_names()
                  and counts == {"explanations": a.units + a.diff_sides, "scores": a.units * a.scores + a.diff_sides}
                  and len(s.get_diff("d0")["explanations"]) == a.diff_sides and len(s.search("w1", limit=5)) > 0)
            s.db.execute("pragma wal_checkpoint(truncate)")
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {"units": a.units, "scores_per_unit": a.scores, "diff_sides": a.diff_sides, "build_v4_s": round(build_s, 1),
               "upgrade_s": round(upgrade_s, 2), "peak_rss_mb": round(rss1 / 1024, 1),
               "rss_growth_mb": round((rss1 - rss0) / 1024, 1), "size_before_mb": round(size_before / 2**20, 1),
               "size_after_mb": round(p.stat().st_size / 2**20, 1), "rows_ok": ok}
    print(json.dumps(out, indent=1) if a.json else
          f"{a.units} units x {a.scores} scores + {a.diff_sides} diff sides: v4 built in {out['build_v4_s']} s; "
          f"upgrade to v5 {out['upgrade_s']} s, peak RSS {out['peak_rss_mb']} MB (+{out['rss_growth_mb']}); "
          f"{out['size_before_mb']} -> {out['size_after_mb']} MB; rows {'all there' if ok else 'MISSING'}")


if __name__ == "__main__":
    main()
