"""Graphs round-trip through the store (schema v4); a v3 store opens and gains the tables."""

from __future__ import annotations

import random

import pytest

from autointerp.graph import build_graph
from autointerp.mine.sae_train import train_transcoders
from autointerp.models.transcoders import TranscoderSet, model_fingerprint
from autointerp.store import SCHEMA_VERSION, Store

from tinykit import WORDS


@pytest.fixture(scope="module")
def graph(tiny_llama, tmp_path_factory):
    rng = random.Random(0)
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "\n" for _ in range(80)))
    tcs, rep = train_transcoders(tiny_llama, [0, 1, 2], 32, l1=0.2, n_tokens=32 * 24, corpus=str(p), context_len=32,
                                 minibatch=64, lr=3e-3, eval_contexts=8, name="tcs")
    ts = TranscoderSet(name="tcs", model=tiny_llama.spec, by_layer=tcs, report=rep, fingerprint=model_fingerprint(tiny_llama))
    return build_graph(tiny_llama, ts, "the cat sat on the mat", max_logits=2)


def test_graph_round_trips(graph, tmp_path):
    s = Store(tmp_path / "s.db")
    key, row, nodes, edges, data = graph.store_records()
    gid = s.put_graph(key, row, nodes, edges, data)
    back = s.get_graph(gid)
    assert back["prompt"] == graph.prompt and back["transcoder_set"] == "tcs"
    assert back["raw_logit"] == pytest.approx(graph.direct["raw_logit"])
    assert back["replacement_score"] == pytest.approx(graph.scores["replacement_score"])
    assert len(back["nodes"]) == graph.n_nodes and back["n_nodes"] == sum(n["kept"] for n in back["nodes"])
    assert sorted((e["source"], e["target"], round(e["weight"], 6)) for e in back["edges"]) == \
        sorted((e["source"], e["target"], round(e["weight"], 6)) for e in edges)
    lat = [n for n in back["nodes"] if n["kind"] == "latent"]
    assert lat and all(n["unit"] == f"L{n['layer']}/F{n['latent']}@tcs" for n in lat)
    c = back["data"]["completeness"]
    assert c["raw_logit"] == pytest.approx(c["bias_terms"] + sum(x["contribution"] for x in c["contributions"]), rel=1e-3)
    # the same key replaces (no duplicate), validation is stored with the graph
    gid2 = s.put_graph(key, row, nodes, edges, data)
    assert [g["id"] for g in s.list_graphs()] == [gid2]
    s.set_graph_validation(gid2, {"correlation": 0.9, "mae": 0.1, "k": 3})
    assert s.get_graph(gid2)["validation"]["mae"] == 0.1
    assert s.query("select count(*) as n from graph_nodes")[0]["n"] == graph.n_nodes      # the old nodes are gone


def test_a_v3_store_opens_and_gains_the_graph_tables(tmp_path):
    p = tmp_path / "s.db"
    s = Store(p)
    for t in ("graph_edges", "graph_nodes", "graphs"):
        s.db.execute(f"drop table {t}")
    s.db.execute("update meta set value = '3' where key = 'schema_version'")
    s.close()
    assert Store(p, readonly=True).list_graphs() == []        # read-only: still v3, no graphs, no error
    s = Store(p)
    assert s.schema_version == SCHEMA_VERSION == 5
    assert {"graphs", "graph_nodes", "graph_edges"} <= set(s.db.table_names())


def test_v4_lets_a_transcoder_set_share_its_name_across_layers(tiny_llama, tmp_path):
    """v3 -> v4 rebuilds saes with UNIQUE (name, layer), rows kept; then a set's transcoders register
    under one name (one per layer), while a plain SAE or a second one at a layer is still refused."""
    import sqlite3

    from autointerp.errors import UsageError

    p = tmp_path / "s.db"
    s = Store(p)
    s.put_model(tiny_llama.spec, tiny_llama.info())
    info = {"id": "a" * 24, "name": "tcs", "hook": "blocks.0.mlp.in", "hook_out": "blocks.0.mlp.out",
            "architecture": "transcoder", "d_in": 64, "d_sae": 8, "path": "/x"}
    s.put_sae(info, tiny_llama.spec, {})
    ddl = s.db.execute("select sql from sqlite_master where name = 'saes'").fetchone()[0]
    s.db.execute("drop table saes")
    s.db.execute(ddl.replace("name        TEXT NOT NULL,", "name        TEXT NOT NULL UNIQUE,").replace(
        ",\n    UNIQUE (name, layer)", ""))
    s.db.execute("insert into saes (id, name, model_id, hook, hook_out, layer, architecture, d_in, d_sae, normalisation, "
                 "path, cfg_json, created_at) values (?, 'tcs', ?, 'blocks.0.mlp.in', 'blocks.0.mlp.out', 0, "
                 "'transcoder', 64, 8, 'none', '/x', '{}', 'x')", ["a" * 24, tiny_llama.spec])
    s.db.execute("update meta set value = '3' where key = 'schema_version'")
    s.close()
    s = Store(p)
    assert s.schema_version == 5 and s.get_sae("tcs")["id"] == "a" * 24
    s.put_sae({**info, "id": "b" * 24, "hook": "blocks.1.mlp.in", "hook_out": "blocks.1.mlp.out"}, tiny_llama.spec, {})
    assert s.get_sae("tcs", 1)["id"] == "b" * 24 and s.get_sae("tcs", 0)["id"] == "a" * 24
    with pytest.raises(UsageError, match="different SAE named 'tcs'"):
        s.put_sae({**info, "id": "c" * 24}, tiny_llama.spec, {})                          # the same layer
    with pytest.raises(UsageError, match="different SAE named 'tcs'"):
        s.put_sae({**info, "id": "d" * 24, "hook": "blocks.2.resid_post", "hook_out": None,
                   "architecture": "topk"}, tiny_llama.spec, {})                           # not a transcoder
    with pytest.raises(sqlite3.IntegrityError):
        s.db.execute("insert into saes (id, name, model_id, hook, layer, architecture, d_in, d_sae, normalisation, "
                     "cfg_json, created_at) values ('e', 'tcs', ?, 'h', 1, 'transcoder', 1, 1, 'none', '{}', 'x')",
                     [tiny_llama.spec])
