"""The README's example outputs are the code's: the fast examples are rerun and compared
(scripts/readme.py --check --fast); `--update` regenerates them all."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fast_readme_examples_match_the_code(tmp_path):
    import os

    env = {**os.environ, "AUTOINTERP_STORE": str(tmp_path / "readme.db")}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check", "--fast"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "checked:" in p.stderr          # at least one example was rerun


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
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_script", ROOT / "scripts" / "readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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
def _reference_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_reference", ROOT / "scripts" / "readme_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    mod = _reference_module()
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
    mod = _reference_module()
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
