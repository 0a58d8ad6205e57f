"""Datasette metadata for any store file name (issue #14): keyed by the file's stem at run time,
canned queries that run on such a store, `autointerp serve --datasette-metadata` and
`--datasette` (against a stand-in `datasette` executable where Datasette is not installed)."""

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from populate import DATASET, build_store

from autointerp.serve import datasette as ds

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory):
    p = tmp_path_factory.mktemp("ds") / "my run 2.db"   # not autointerp.db
    build_store(p).close()
    return p


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "autointerp", "serve", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_metadata_is_keyed_by_the_file_stem(odd_store):
    meta = ds.metadata_for(odd_store)
    assert list(meta["databases"]) == ["my run 2"] == [ds.database_name(odd_store)]
    t = ds.template()["database"]
    assert meta["databases"]["my run 2"] == t and {"tables", "queries"} <= set(t)


def test_canned_queries_run_on_any_store(odd_store):
    db = ds.metadata_for(odd_store)["databases"]["my run 2"]
    conn = sqlite3.connect(f"file:{odd_store}?mode=ro", uri=True)
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    assert set(db["tables"]) <= tables
    params = {"dataset": DATASET, "min_effect": "0.1", "q": "week"}
    for name, q in db["queries"].items():
        rows = conn.execute(q["sql"], params).fetchall()
        assert rows, name


def test_every_store_table_is_described(tmp_path):
    from autointerp.store import Store

    s = Store(tmp_path / "fresh.db")
    names = [t for t in s.db.table_names() if not t.startswith("explanations_fts")]
    s.close()
    described = ds.template()["database"]["tables"]
    assert [t for t in names if t not in described] == []
    assert all(v.get("description") for v in described.values())


def test_repo_metadata_file_is_the_generated_one():
    """store/datasette-metadata.json (for the default store/autointerp.db) is what metadata_for writes."""
    assert json.loads((REPO / "store" / "datasette-metadata.json").read_text()) == ds.metadata_for("store/autointerp.db")


def test_datasette_1x_gets_queries_in_the_config(odd_store):
    meta = ds.metadata_for(odd_store)
    m0, c0 = ds.split_for_version(meta, 0)
    assert c0 is None and "queries" in m0["databases"]["my run 2"]
    m1, c1 = ds.split_for_version(meta, 1)
    assert "queries" not in m1["databases"]["my run 2"] and "tables" in m1["databases"]["my run 2"]
    assert c1["databases"]["my run 2"]["queries"] == meta["databases"]["my run 2"]["queries"]
    assert ds.datasette_major("datasette, version 0.65.1\n") == 0 and ds.datasette_major("datasette, version 1.0a19") == 1


def test_cli_writes_metadata(odd_store, tmp_path):
    r = run_cli("--store", str(odd_store), "--datasette-metadata", "-")
    assert r.returncode == 0, r.stderr
    assert list(json.loads(r.stdout)["databases"]) == ["my run 2"]
    out = tmp_path / "m.json"
    r = run_cli("--store", str(odd_store), "--datasette-metadata", str(out))
    assert r.returncode == 0 and json.loads(out.read_text()) == ds.metadata_for(odd_store)
    missing = tmp_path / "nothing.db"
    r = run_cli("--store", str(missing), "--datasette-metadata", "-")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and not missing.exists()


def fake_datasette(bin_dir: Path, version: str) -> Path:
    """A stand-in `datasette` that prints its version or records argv and the files it was given."""
    log = bin_dir / "calls.json"
    exe = bin_dir / "datasette"
    exe.write_text(f"""#!{sys.executable}
import json, sys
if sys.argv[1:] == ["--version"]:
    print("datasette, version {version}"); sys.exit(0)
a = sys.argv[1:]
files = {{f: json.load(open(a[a.index(f) + 1])) for f in ("-m", "-c") if f in a}}
json.dump({{"argv": a, "files": files}}, open({str(log)!r}, "w"))
""")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return log


@pytest.mark.parametrize("version", ["0.65.1", "1.0a19"])
def test_cli_starts_datasette_with_metadata_for_the_file(odd_store, tmp_path, version):
    log = fake_datasette(tmp_path, version)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    if (Path(sys.executable).parent / "datasette").exists():
        pytest.skip("a real datasette sits next to this Python; the stand-in on PATH would not be used")
    r = run_cli("--store", str(odd_store), "--datasette", "--port", "8765", env=env)
    assert r.returncode == 0, r.stderr
    call = json.loads(log.read_text())
    argv, files = call["argv"], call["files"]
    assert argv[:2] == ["serve", str(odd_store)] and argv[argv.index("--port") + 1] == "8765"
    assert list(files["-m"]["databases"]) == ["my run 2"]
    if version.startswith("0."):
        assert "queries" in files["-m"]["databases"]["my run 2"] and "-c" not in files
    else:
        assert set(files["-c"]["databases"]["my run 2"]["queries"]) == set(ds.template()["database"]["queries"])


def test_cli_without_datasette_is_one_line(odd_store, tmp_path):
    if (Path(sys.executable).parent / "datasette").exists():
        pytest.skip("datasette is installed next to this Python")
    env = {**os.environ, "PATH": str(tmp_path)}   # nothing called datasette there
    r = run_cli("--store", str(odd_store), "--datasette", env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "pip install datasette" in lines[0], r.stderr


def test_template_is_packaged():
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["autointerp"]
    assert "serve/datasette_metadata.json" in data


def _real_datasette() -> str | None:
    import shutil

    for c in (os.environ.get("AUTOINTERP_DATASETTE"), str(REPO / ".peers" / "datasette" / "bin" / "datasette"),
              str(Path(sys.executable).parent / "datasette"), shutil.which("datasette")):
        if c and Path(c).exists():
            return c
    return None


def test_real_datasette_serves_any_file_name_with_its_metadata(odd_store, tmp_path):
    """Datasette itself (its own venv; a subprocess on 127.0.0.1) started by `serve --datasette` on
    'my run 2.db': the table descriptions and the canned queries are there, and a canned query runs."""
    import socket
    import time
    import urllib.parse
    import urllib.request

    exe = _real_datasette()
    if exe is None:
        pytest.skip("Datasette is not installed (pip install datasette, in any venv; AUTOINTERP_DATASETTE=its path)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "autointerp", "serve", "--store", str(odd_store), "--datasette",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)    # its own group: Datasette (a child of it) goes too
    base = f"http://127.0.0.1:{port}"
    db = ds.url_name("my run 2")
    assert db == "my~20run~202"

    def get_json(path):
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return json.loads(r.read())

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                meta = get_json("/-/metadata.json")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "Datasette did not answer in 90 s"
                time.sleep(0.5)
        t = ds.template()["database"]
        version = get_json("/-/versions.json")["datasette"]["version"]
        if version.startswith("0."):
            assert meta["databases"]["my run 2"]["tables"]["explanations"]["description"] == \
                t["tables"]["explanations"]["description"]
        dbinfo = get_json(f"/{db}.json")
        assert {"explanations", "scores", "records"} <= {x["name"] for x in dbinfo["tables"]}
        assert set(t["queries"]) <= {q["name"] for q in dbinfo["queries"]}
        with urllib.request.urlopen(f"{base}/{db}/explanations", timeout=10) as r:   # the table's description shown
            assert html_unescape(r.read().decode()).count(t["tables"]["explanations"]["description"]) >= 1
        rows = get_json(f"/{db}/search_explanations.json?" + urllib.parse.urlencode({"q": "week", "_shape": "array"}))
        assert rows and any("week" in r["text"] for r in rows)
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def html_unescape(s: str) -> str:
    import html

    return html.unescape(s)
