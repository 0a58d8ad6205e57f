"""Store methods for attribution graphs (`autointerp graph`): the graph, its nodes, its kept edges."""

from __future__ import annotations

import json
from typing import Any

from .base import now


class GraphsMixin:
    def put_graph(self, key: str, row: dict, nodes: list[dict], edges: list[dict], data: dict) -> int:
        """Write a graph with its nodes and edges in one transaction (an earlier graph with the same key
        is replaced). row: the graphs columns; nodes: graph_nodes rows (idx, kind, ...); edges:
        {source, target, weight}. Returns the graph id."""
        with self.tx(immediate=True):
            old = self.db.execute("select id from graphs where key = ?", [key]).fetchone()
            if old:
                self.db.execute("delete from graph_edges where graph_id = ?", [old[0]])
                self.db.execute("delete from graph_nodes where graph_id = ?", [old[0]])
                self.db.execute("delete from graphs where id = ?", [old[0]])
            cols = ["model", "prompt", "transcoder_set", "transcoder_set_id", "target", "raw_logit", "bias_terms",
                    "completeness_error", "replacement_score", "completeness_score", "node_share", "edge_share",
                    "n_nodes", "n_edges"]
            vals = [key] + [row[c] for c in cols] + [json.dumps(row.get("validation")) if row.get("validation") else None,
                                                    json.dumps(data), now()]
            cur = self.db.execute(f"insert into graphs (key, {', '.join(cols)}, validation_json, data_json, created_at) "
                                  f"values ({', '.join('?' * len(vals))})", vals)
            gid = cur.lastrowid
            keys = ("idx", "kind", "layer", "pos", "latent", "unit", "token", "activation", "influence", "kept")
            self.db["graph_nodes"].insert_all(({"graph_id": gid, **{k: n.get(k) for k in keys}} for n in nodes),
                                              batch_size=1000)
            self.db["graph_edges"].insert_all(({"graph_id": gid, "source": e["source"], "target": e["target"],
                                                "weight": e["weight"]} for e in edges), batch_size=1000)
        return gid

    def set_graph_validation(self, graph_id: int, validation: dict) -> None:
        with self.tx():
            self.db.execute("update graphs set validation_json = ? where id = ?", [json.dumps(validation), graph_id])

    def with_explanations(self, g: dict) -> dict:
        """g (a get_graph row) with each kept latent node's newest explanation (an LLM's before the
        baseline's) and its first score's value, control and margin."""
        for n in g["nodes"]:
            if n["kind"] != "latent" or not n["kept"]:
                continue
            ex = self.explanations_for(g["model"], n["unit"])
            if not ex:
                continue
            e = sorted(ex, key=lambda e: e["explainer"] == "baseline")[0]
            n["explanation"] = e["text"]
            sc = self.scores_for(e["id"], details=False)
            if sc:
                s = sc[0]
                n.update(score=s["value"], control=s.get("control"), margin=s.get("margin"), score_kind=s["kind"])
        return g

    def get_graph(self, graph_id: int, *, kept_only: bool = False) -> dict[str, Any] | None:
        """The graph row (data and validation decoded) with its nodes (by idx) and edges, or None."""
        if "graphs" not in self.db.table_names():
            return None
        g = self.one("select * from graphs where id = ?", [graph_id], data="{}", validation="null")
        if g is None:
            return None
        where = " and kept = 1" if kept_only else ""
        g["nodes"] = self.query("select idx, kind, layer, pos, latent, unit, token, activation, influence, kept "
                                "from graph_nodes where graph_id = ?" + where + " order by idx", [graph_id])
        for n in g["nodes"]:
            n["kept"] = bool(n["kept"])
        g["edges"] = self.query("select source, target, weight from graph_edges where graph_id = ? "
                                "order by abs(weight) desc", [graph_id])
        return g

    def list_graphs(self) -> list[dict]:
        if "graphs" not in self.db.table_names():
            return []
        return self.query("select id, prompt, model, transcoder_set, target, replacement_score, completeness_score, "
                          "n_nodes, n_edges, created_at from graphs order by id")
