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
