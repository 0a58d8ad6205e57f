"""A plain (non-editable) install carries what the defaults need: the prompts (as data files),
the schema, the planted units and the viewer's files."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_prompts_and_package_data(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (whl,) = tmp_path.glob("autointerp-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    prompts = {f.name for f in (ROOT / "prompts").glob("*.txt")}
    shipped = {Path(n).name for n in names if "/share/autointerp/prompts/" in n}
    assert prompts and prompts <= shipped, prompts - shipped
    for f in ("autointerp/store/schema.sql", "autointerp/mine/planted_units.json"):
        assert f in names
    assert any(n.startswith("autointerp/serve/static/") for n in names)


def test_packaged_prompts_found_outside_a_checkout(tmp_path, monkeypatch):
    import autointerp.config as config

    share = tmp_path / "share" / "autointerp" / "prompts"
    share.mkdir(parents=True)
    (share / "explain_chat.txt").write_text("x")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert config.packaged_prompts() == share
