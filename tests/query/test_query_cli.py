"""The query/stats/export commands: output, --json, one-line errors, exit codes, store untouched."""

import csv
import hashlib
import io
import json
import subprocess
import sys

from populate import DATASET, UNITS


def run(*args, store=None):
    cmd = [sys.executable, "-m", "autointerp", *map(str, args)]
    if store is not None:
        cmd += ["--store", str(store)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def one_error_line(r, code=None):
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode != 0 and (code is None or r.returncode == code), (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_query_text_and_json(populated):
    r = run("query", "day of the week", store=populated)
    assert r.returncode == 0, r.stderr
    assert "L0/N3" in r.stdout and "+0.62 [0.54, 0.70]" in r.stdout and "days of the week" in r.stdout
    r = run("query", "attends", "--min-score", "0.5", "--json", store=populated)
    rows = json.loads(r.stdout)
    assert [x["unit"] for x in rows] == ["L2/H1"] and rows[0]["ci_high"] == 0.75
    r = run("query", "--layer", "1", "--explainer", "baseline", "--json", store=populated)
    assert {x["unit"] for x in json.loads(r.stdout)} == {u for u in UNITS if u.startswith("L1/")}


def test_query_dataset(populated):
    r = run("query", "--dataset", DATASET, "--min-effect", "0.1", "--min-score", "0.35", store=populated)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[1].startswith("L2/H1") and "+0.550" in lines[1] and lines[2].startswith("L1/H0") and len(lines) == 3
    r = run("query", "--dataset", DATASET, "--min-effect", "0.1", "--json", store=populated)
    assert [x["unit"] for x in json.loads(r.stdout)] == ["L2/H1", "L1/N5", "L2/N1", "L1/H0"]


def test_stats_and_export(populated, tmp_path):
    r = run("stats", store=populated)
    assert r.returncode == 0, r.stderr
    assert "coverage" in r.stdout and "LLM: 14 calls" in r.stdout and "median=" in r.stdout
    st = json.loads(run("stats", "--json", store=populated).stdout)
    assert st["scores"]["n"] == len(UNITS)
    out = tmp_path / "expl.csv"
    r = run("export", "--format", "csv", "--what", "explanations", "--out", out, store=populated)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 2 * len(UNITS) and {"unit", "score", "text"} <= set(rows[0])
    r = run("export", "--what", "records", store=populated)
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 6 * len(UNITS) and isinstance(recs[0]["acts"], list)
    r = run("export", "--what", "patching", "--format", "csv", store=populated)
    assert r.stdout.splitlines()[0].startswith("dataset,model_id,run_key")


def test_bad_input_one_line(populated, tmp_path):
    digest = hashlib.sha256(populated.read_bytes()).hexdigest()
    assert "out of range" in one_error_line(run("query", "x", "--layer", "9", store=populated), 2)
    assert "no dataset 'nope'" in one_error_line(run("query", "--dataset", "nope", store=populated), 2)
    assert "no model 'nope'" in one_error_line(run("query", "x", "--model", "nope", store=populated), 2)
    one_error_line(run("query", store=populated), 2)
    one_error_line(run("query", "x", "--min-score", "abc", store=populated), 2)
    one_error_line(run("export", "--format", "xml", store=populated), 2)
    notastore = tmp_path / "notes.db"
    notastore.write_text("not sqlite\n" * 50)
    before = notastore.read_bytes()
    assert "not an autointerp store" in one_error_line(run("query", "x", store=notastore), 1)
    assert "not an autointerp store" in one_error_line(run("stats", store=notastore), 1)
    assert notastore.read_bytes() == before
    assert "no store at" in one_error_line(run("stats", store=tmp_path / "missing.db"), 1)
    assert not (tmp_path / "missing.db").exists()
    assert hashlib.sha256(populated.read_bytes()).hexdigest() == digest
