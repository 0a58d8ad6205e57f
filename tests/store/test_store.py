import sqlite3

import pytest

from autointerp.errors import StoreError
from autointerp.store import SCHEMA_VERSION, Store, content_hash, pack_f16, unpack_f16

INFO = dict(family="llama", n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=16, vocab_size=100)


def test_create_idempotent_wal_fk(tmp_path):
    p = tmp_path / "s.db"
    s = Store(p)
    assert s.schema_version == SCHEMA_VERSION
    assert s.db.journal_mode == "wal"
    assert s.db.execute("pragma foreign_keys").fetchone()[0] == 1
    s.put_model("m", INFO)
    s.close()
    s2 = Store(p)  # reopening creates nothing new and loses nothing
    assert s2.get_model("m")["d_mlp"] == 16
    assert "explanations_fts" in s2.db.table_names()


def test_transaction_rolls_back_and_keeps_earlier_rows(tmp_path):
    s = Store(tmp_path / "s.db")
    s.put_model("m", INFO)
    with pytest.raises(RuntimeError):
        with s.tx():
            s.db["models"].insert({**INFO, "id": "m2", "created_at": "x"})
            raise RuntimeError("boom")
    assert s.get_model("m2") is None
    assert s.get_model("m") is not None


def test_foreign_keys_enforced(tmp_path):
    s = Store(tmp_path / "s.db")
    with pytest.raises(sqlite3.IntegrityError):
        with s.tx():
            s.db.execute("insert into corpora(id, name, model_id, context_len, n_contexts, created_at) values ('c', 'x', 'nope', 64, 1, 'now')")


def test_not_an_autointerp_store(tmp_path):
    p = tmp_path / "other.db"
    c = sqlite3.connect(p)
    c.execute("create table t(a)")
    c.commit()
    c.close()
    before = p.read_bytes()
    with pytest.raises(StoreError, match="not an autointerp store"):
        Store(p)
    assert p.read_bytes() == before
    junk = tmp_path / "junk.db"
    junk.write_text("hello" * 200)
    with pytest.raises(StoreError, match="not an autointerp store"):
        Store(junk)


def test_newer_schema_refused(tmp_path):
    p = tmp_path / "s.db"
    s = Store(p)
    s.db.execute("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    s.close()
    with pytest.raises(StoreError, match="newer"):
        Store(p)


def _circuit(s, key):
    s.put_model("m", INFO)
    s.db.execute("insert or ignore into datasets (name, task, source, n_items, created_at) values ('d', 't', 's', 4, 'now')")
    return s.put_circuit(key, dataset="d", model_id="m", method="eap", target=0.8, faithfulness=0.9,
                         clean_logit_diff=2.0, corrupt_logit_diff=-1.0, n_items=4, n_edges_total=10, curve=[[0, 0.0]],
                         settings={}, edges=[{"edge": "embed -> logits", "sender": "embed", "receiver": "logits",
                                              "score": -0.5, "in_circuit": True, "rank": 0}])


@pytest.mark.parametrize("with_circuits", [True, False])
def test_v2_store_migrates_circuit_ablation(tmp_path, with_circuits):
    """v2 -> v3 adds circuits.ablation ('corrupt' for the circuits already there); a v2 store made
    before circuits existed gets the table from the schema, with the column."""
    p = tmp_path / "s.db"
    s = Store(p)
    cid = _circuit(s, "old")
    if with_circuits:
        s.db.execute("alter table circuits drop column ablation")
    else:
        s.db.execute("drop table circuit_edges")
        s.db.execute("drop table circuits")
    s.db.execute("update meta set value = '2' where key = 'schema_version'")
    s.close()
    s = Store(p)
    assert s.schema_version == SCHEMA_VERSION == 5
    assert "ablation" in s.db["circuits"].columns_dict
    if with_circuits:
        assert s.get_circuit(cid)["ablation"] == "corrupt"
    new = s.put_circuit("new", dataset="d", model_id="m", method="eap", target=0.8, faithfulness=0.9,
                        clean_logit_diff=2.0, corrupt_logit_diff=-1.0, n_items=4, n_edges_total=10, curve=[],
                        settings={}, edges=[], ablation="mean")
    assert s.get_circuit(new)["ablation"] == "mean"


def test_missing_store_readonly(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        Store(tmp_path / "nothing.db", readonly=True)


def test_helpers():
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash("x") != content_hash("y")
    x = [0.0, 1.5, -2.25, 3.0]
    assert list(unpack_f16(pack_f16(x))) == x


def test_put_explanations_bulk_writes_like_the_one_row_path_and_search_finds_the_best_score(tmp_path):
    """The bulk path (scripts/bench_store.py's million units) stores what put_explanation +
    put_scores store, idempotently, and search ranks by each explanation's best simulation score."""
    from autointerp.store import Store

    def item(i, values):
        return ({"key": f"e{i}", "model_id": "m", "unit": f"L0/N{i}", "layer": 0, "explainer": "x", "method": "chat",
                 "text": f"commas and quotes {i}", "settings": {"k": 3}},
                [{"key": f"e{i}:s{j}", "kind": "simulation", "value": v, "ci_low": None if v is None else v - 0.1,
                  "ci_high": None if v is None else v + 0.1, "n": 10, "details": {"j": j}} for j, v in enumerate(values)])

    with Store(tmp_path / "s.db") as st:
        st.put_model("m", {"family": "llama", "n_layers": 1, "d_model": 8, "n_heads": 2, "n_kv_heads": 2, "d_head": 4,
                           "d_mlp": 8, "vocab_size": 10})
        assert st.put_explanations_bulk([item(0, [0.2, 0.7, None]), item(1, [0.5]), item(2, [None])]) == 3
        assert st.put_explanations_bulk([item(0, [0.2, 0.7, None])]) == 1          # again: nothing new
        assert st.db["explanations"].count == 3 and st.db["scores"].count == 5
        e0 = st.get_explanation("e0")
        assert e0["settings"] == {"k": 3} if "settings" in e0 else '"k"' in e0["settings_json"]
        assert [sc["details"] for sc in st.scores_for(e0["id"])] == [{"j": 0}, {"j": 1}, {"j": 2}]
        rows = st.search("commas")
        assert sorted((r["unit"], r["score"]) for r in rows) == [("L0/N0", 0.7), ("L0/N1", 0.5), ("L0/N2", None)]
        assert next(r for r in rows if r["unit"] == "L0/N0")["ci_low"] == pytest.approx(0.6)
        assert [(r["unit"], r["score"]) for r in st.search(None, layer=0, min_score=0.6)] == [("L0/N0", 0.7)]
