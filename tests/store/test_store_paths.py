"""Store paths and lightly damaged stores: `#`/`?` in a path open that file (read-only stays
read-only), and a store that is empty, not autointerp's or has an unreadable schema version is
one clear error line; read commands never create or convert a file."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from autointerp.errors import StoreError
from autointerp.store import Store




def one_error(res, *words):
    code, _out, err = res
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err and "OperationalError" not in err and "ValueError" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["a#b.db", "a?b.db", "a%23b.db", "a b#c?.db"])
def test_store_path_with_uri_characters(cli, tmp_path, name):
    runs = tmp_path / "runs"
    runs.mkdir()
    p = runs / name
    Store(p).close()
    code, out, err = cli("stats", "--store", p, "--json")
    assert code == 0, err
    made = {x.name for x in runs.iterdir()} - {name, name + "-wal", name + "-shm"}
    assert not made                                                   # no stray `runs/a` made
    with Store(p, readonly=True) as st:                               # read-only really is read-only
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            st.db.execute("insert into meta(key, value) values ('x', 'y')")
    from autointerp.store.query import open_source

    open_source(p).close()


def test_unreadable_schema_version_is_one_line(cli, tmp_path):
    p = tmp_path / "s.db"
    Store(p).close()
    c = sqlite3.connect(p)
    c.execute("update meta set value = 'abc' where key = 'schema_version'")
    c.commit()
    c.close()
    one_error(cli("stats", "--store", p), "schema version 'abc' unreadable")
    one_error(cli("query", "x", "--store", p), "schema version 'abc' unreadable")
    one_error(cli("merge", p, "--into", tmp_path / "t.db"), "schema version 'abc' unreadable")
    with pytest.raises(StoreError, match="unreadable"):
        Store(p)                                                      # a writable open neither migrates it


@pytest.mark.parametrize("args", [["stats"], ["query", "x"], ["show", "L0/N1"], ["circuit", "--show", "1"],
                                  ["export"]])
def test_empty_file_is_not_a_store_and_stays_empty(cli, tmp_path, args):
    p = tmp_path / "empty.db"
    p.write_bytes(b"")
    one_error(cli(*args, "--store", p), "not an autointerp store")
    assert p.read_bytes() == b""
    assert sorted(x.name for x in tmp_path.iterdir()) == ["empty.db"]


def test_other_sqlite_and_junk_files(cli, tmp_path):
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("create table t(x)")
    c.commit()
    c.close()
    d = digest(other)
    one_error(cli("stats", "--store", other), "not an autointerp store")
    one_error(cli("circuit", "--show", "1", "--store", other), "not an autointerp store")
    assert digest(other) == d
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"hello, I am not SQLite" * 100)
    one_error(cli("stats", "--store", junk), "not an autointerp store")
