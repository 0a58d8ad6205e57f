"""The README's example outputs are the code's: the fast examples are rerun and compared
(scripts/readme.py --check --fast); `--update` regenerates them all."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


import pytest


@pytest.mark.slow
def test_fast_readme_examples_match_the_code(tmp_path):
    """The blocks marked fast (models, trace, llm check, heads: SmolLM2, seconds each) rerun on an
    empty store print what the README shows (timings, rates and the store's path masked)."""
    import os

    env = {**os.environ, "AUTOINTERP_STORE": str(tmp_path / "readme.db")}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check", "--fast"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    checked = [ln for ln in p.stderr.splitlines() if ln.startswith("checked: ")]
    assert {"checked: autointerp models", "checked: autointerp llm check", "checked: autointerp heads"} <= set(checked)
    assert any(c.startswith("checked: autointerp trace") for c in checked)


@pytest.mark.slow
def test_readme_examples_on_the_readme_store_keep_their_shape(tmp_path):
    """The blocks marked shape=... (show, query, stats, batch --dry-run: their output depends on a
    store an LLM filled for minutes) rerun on a small store built by the real CLI (SmolLM2, one unit
    mined and explained by the baseline) print lines shaped like the README's."""
    import os

    env = {**os.environ, "AUTOINTERP_STORE": str(tmp_path / "shape.db")}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check", "--shape"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-6000:]
    checked = {ln.split(": ", 1)[1] for ln in p.stderr.splitlines() if ln.startswith("shape checked: ")}
    assert checked == {"autointerp show L3/N42", "autointerp query tokens", "autointerp stats",
                       "autointerp batch --layers 3 --limit 3 --dry-run"}


def _script(name: str):
    """scripts/NAME.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shape_compares_labels_not_values():
    mod = _script("readme")
    readme = ["store store/readme.db  models: smollm2-135m", "", "coverage (units with an LLM explanation / units mined)",
              "  layer kind     mined explained scored coverage mean score",
              "      3 neuron    1536         3      3       0%     -0.035",
              "      5 neuron    1536         0      0       0%     +0.100",
              "  #1 baseline (baseline, 2026-12-02T05:14:29+00:00): the tokens \"of\" and \"for\"",
              "LLM: 181 calls, $0.0000"]
    now = ["store /tmp/x/s.db  models: smollm2-135m", "", "coverage (units with an LLM explanation / units mined)",
           "  layer kind     mined explained scored coverage mean score",
           "      3 neuron    1536         0      0      12%     +0.366",
           "  #4 baseline (baseline, 2026-12-06T10:12:03+00:00): the tokens \"ums\" and \"ids\"",
           "LLM: 0 calls, $0.0000"]
    assert mod.shape_diff(readme, now, "8", store="/tmp/x/s.db") is None          # 2 rows match 1 row
    assert mod.shape_lines("1-3,7-8", 8) == [0, 1, 2, 6, 7] and mod.shape_lines("3", 8) == [0, 1, 2]
    renamed = [ln.replace("coverage (", "covered (") for ln in now]
    assert "coverage (units" in mod.shape_diff(readme, renamed, "8", store="/tmp/x/s.db")
    reordered = now[:2] + now[3:4] + now[2:3] + now[4:]
    assert mod.shape_diff(readme, reordered, "4", store="/tmp/x/s.db") is not None   # the order counts
    assert mod.shape_diff(readme, now[:5], "8", store="/tmp/x/s.db") is not None     # a line gone
    assert mod.shape_diff(readme, now, "1-4", store="/tmp/x/s.db") is None


def test_check_fails_on_a_drifted_example(tmp_path):
    import os

    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- readme: fast -->\n```console\n$ autointerp --version\nautointerp, version 0.0.0-not-this\n```\n")
    env = {**os.environ, "AUTOINTERP_STORE": str(tmp_path / "r.db")}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check", "--fast", "--readme", str(readme)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "differs from the code" in p.stderr
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--update", "--readme", str(readme)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "0.0.0-not-this" not in readme.read_text() and "$ autointerp --version" in readme.read_text()


def test_update_keeps_edits_made_while_the_examples_ran(tmp_path, monkeypatch):
    """--update splices each regenerated block into the README as it is when the examples have
    run, so prose edited meanwhile (here: by the first example itself) is kept."""
    mod = _script("readme")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n```console\n$ autointerp one\nold\n```\nmiddle\n```console\n$ autointerp two\nold\n```\n")

    def fake_run(cmd, env):
        if cmd == "autointerp one":          # someone edits the README while the examples run
            readme.write_text(readme.read_text().replace("intro", "intro, edited").replace("middle", "middle, edited"))
        return f"new output of {cmd}"

    monkeypatch.setattr(mod, "run", fake_run)
    assert mod.main(["--update", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "intro, edited" in text and "middle, edited" in text
    assert "new output of autointerp one" in text and "new output of autointerp two" in text and "\nold\n" not in text


# ---- the generated reference (scripts/readme_reference.py) ---------------------------------------
def test_readme_reference_is_generated_from_the_code():
    """The command reference (--help of every command), the store table (schema.sql) and the
    configuration table (the settings model) in README.md are what the code generates now."""
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_reference.py"), "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-6000:]
    text = (ROOT / "README.md").read_text()
    for cmd in ("autointerp sae train", "autointerp llm serve", "autointerp explain", "autointerp graph"):
        assert f"<code>{cmd}</code>" in text and f"$ {cmd} --help" in text
    assert "| `llm_timeout` | `AUTOINTERP_LLM_TIMEOUT` | `--llm-timeout` |" in text
    assert "| `records` | an activation record" in text


def test_reference_check_fails_with_a_diff_when_the_code_changes(tmp_path, monkeypatch):
    mod = _script("readme_reference")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- reference: commands -->\n<!-- /reference -->\n<!-- reference: store -->\n"
                      "<!-- /reference -->\nmiddle\n<!-- reference: config -->\n<!-- /reference -->\nend\n")
    assert mod.main(["--check", "--readme", str(readme)]) == 1           # empty sections: drift
    assert mod.main(["--update", "--readme", str(readme)]) == 0
    assert mod.main(["--check", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("\nend\n")
    # a schema change (a new commented column) is drift: --check names it in the diff
    schema = tmp_path / "schema.sql"
    schema.write_text(mod.SCHEMA.read_text().replace("    d_mlp       INTEGER NOT NULL,",
                                                     "    d_mlp       INTEGER NOT NULL,\n    d_new INTEGER,   -- a new column", 1))
    monkeypatch.setattr(mod, "SCHEMA", schema)
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        assert mod.main(["--check", "--readme", str(readme)]) == 1
    assert "README reference differs from the code" in err.getvalue()
    assert "+- **`models`**:" in err.getvalue() and "`d_new` integer (a new column)" in err.getvalue()
    # a README without one of the sections is an error, not a silent pass
    (tmp_path / "R2.md").write_text("<!-- reference: store -->\n<!-- /reference -->\n")
    assert mod.main(["--check", "--readme", str(tmp_path / "R2.md")]) == 1


def test_schema_comments_become_the_meanings():
    mod = _script("readme_reference")
    sql = ("-- header\n\nCREATE TABLE IF NOT EXISTS a (\n    x TEXT PRIMARY KEY\n);\n\n"
           "-- group one\nCREATE TABLE IF NOT EXISTS b (\n    id INTEGER,   -- the id\n"
           "    lo REAL, hi REAL,   -- the interval\n                        -- (continued)\n"
           "    s  TEXT NOT NULL DEFAULT 'x', -- default, with (a, b) commas\n    UNIQUE (id, lo)\n);\n"
           "CREATE TABLE IF NOT EXISTS c (\n    y INTEGER\n);\n")
    t = mod.schema_tables(sql)
    assert [(x["name"], x["meaning"]) for x in t] == [("a", ""), ("b", "group one"), ("c", "group one")]
    assert [(c["name"], c["type"], c["note"]) for c in t[1]["columns"]] == [
        ("id", "INTEGER", "the id"), ("lo", "REAL", ""), ("hi", "REAL", "the interval (continued)"),
        ("s", "TEXT", "default, with (a, b) commas")]
