"""Store methods for edge-level circuits (`autointerp circuit`): the run and its scored edges."""

from __future__ import annotations

import json
from typing import Any, Iterable

from .base import now


class CircuitsMixin:
    def put_circuit(self, key: str, *, dataset: str, model_id: str, method: str, target: float | None,
                    faithfulness: float | None, clean_logit_diff: float, corrupt_logit_diff: float, n_items: int,
                    n_edges_total: int, curve: Iterable, settings: dict, edges: Iterable[dict],
                    ablation: str = "corrupt") -> int:
        """Write a circuit run and its edges in one transaction (an earlier run with the same key is
        replaced). edges: {edge, sender, receiver, score, in_circuit, rank}. Returns the run id."""
        edges = list(edges)
        with self.tx(immediate=True):
            old = self.db.execute("select id from circuits where key = ?", [key]).fetchone()
            if old:
                self.db.execute("delete from circuit_edges where circuit_id = ?", [old[0]])
                self.db.execute("delete from circuits where id = ?", [old[0]])
            cur = self.db.execute(
                "insert into circuits (key, dataset, model_id, method, ablation, target, faithfulness, clean_logit_diff, "
                "corrupt_logit_diff, n_items, n_edges, n_edges_total, curve_json, settings_json, created_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [key, dataset, model_id, method, ablation, target, faithfulness, clean_logit_diff, corrupt_logit_diff, n_items,
                 sum(1 for e in edges if e["in_circuit"]), n_edges_total, json.dumps([list(p) for p in curve]),
                 json.dumps(settings), now()])
            cid = cur.lastrowid
            self.db["circuit_edges"].insert_all(({
                "circuit_id": cid, "edge": e["edge"], "sender": e["sender"], "receiver": e["receiver"],
                "score": e["score"], "in_circuit": int(bool(e["in_circuit"])), "rank": e.get("rank")}
                for e in edges), batch_size=1000)
        return cid

    def get_circuit(self, circuit_id: int | None = None, *, key: str | None = None, in_circuit_only: bool = False
                    ) -> dict[str, Any] | None:
        """The circuit row (curve, settings decoded) with its edges (circuit edges first, by rank), or None."""
        if "circuits" not in self.db.table_names():
            return None
        by, v = ("key", key) if key is not None else ("id", circuit_id)
        r = self.one(f"select * from circuits where {by} = ?", [v], curve="[]", settings="{}")
        if r is None:
            return None
        where = " and in_circuit = 1" if in_circuit_only else ""
        r["edges"] = self.query(
            "select edge, sender, receiver, score, in_circuit, rank from circuit_edges where circuit_id = ?" + where +
            " order by in_circuit desc, rank, abs(score) desc", [r["id"]])
        for e in r["edges"]:
            e["in_circuit"] = bool(e["in_circuit"])
        return r

    def list_circuits(self, dataset: str | None = None) -> list[dict]:
        if "circuits" not in self.db.table_names():
            return []
        sql = ("select id, dataset, model_id, method, ablation, target, faithfulness, n_items, n_edges, n_edges_total, created_at "
               "from circuits")
        args: list = []
        if dataset is not None:
            sql += " where dataset = ?"
            args.append(dataset)
        return self.query(sql + " order by created_at desc, id desc", args)
