"""Store methods for model diffs (`autointerp diff A B`): the diff row, its top contexts, ranked
components and task comparisons (written together, in one transaction). The explanations of a
side's contexts and their scores are ordinary explanations/scores rows whose subject is the side
(diff_id, side): written by the explain pipeline, read back here with the diff."""

from __future__ import annotations

import json
from typing import Any

from .base import decoded, now


def _dumps(v: Any) -> str | None:
    return None if v is None else json.dumps(v, default=str)


class DiffsMixin:
    def put_diff(self, diff_id: str, *, model_a: str, model_b: str, mode: str, level: str, corpus: str | None,
                 n_tokens: int, settings: dict, summary: dict, contexts: list[dict], components: list[dict],
                 tasks: list[dict]) -> None:
        """Write a diff and its rows; a re-run of the same diff replaces its rows (its stored
        explanations stay: they are keyed by their inputs)."""
        t = now()
        with self.tx():
            old = self.db.execute("select created_at from diffs where id = ?", [diff_id]).fetchone()
            self.db.execute(
                "insert into diffs(id, model_a, model_b, mode, level, corpus, n_tokens, settings_json, summary_json,"
                " status, created_at, updated_at) values (?,?,?,?,?,?,?,?,?,'done',?,?) on conflict(id) do update set"
                " mode = excluded.mode, level = excluded.level, summary_json = excluded.summary_json,"
                " settings_json = excluded.settings_json, n_tokens = excluded.n_tokens, updated_at = excluded.updated_at",
                [diff_id, model_a, model_b, mode, level, corpus, int(n_tokens), _dumps(settings), _dumps(summary),
                 old[0] if old else t, t])
            for table in ("diff_contexts", "diff_components", "diff_tasks"):
                self.db.execute(f"delete from {table} where diff_id = ?", [diff_id])
            self.db.conn.executemany(
                "insert into diff_contexts(diff_id, side, rank, ctx_idx, score, tokens_json, values_json, input_ids_json)"
                " values (?,?,?,?,?,?,?,?)",
                [[diff_id, c["side"], int(c["rank"]), int(c["ctx_idx"]), c.get("score"), json.dumps(c["tokens"]),
                  json.dumps(c["values"]), _dumps(c.get("input_ids") or None)] for c in contexts])
            self.db.conn.executemany(
                "insert into diff_components(diff_id, analysis, rank, component, layer, value, details_json)"
                " values (?,?,?,?,?,?,?)",
                [[diff_id, c["analysis"], int(c["rank"]), c["component"], c.get("layer"), c.get("value"),
                  _dumps(c.get("details"))] for c in components])
            self.db.conn.executemany(
                "insert into diff_tasks(diff_id, task, n_items, logit_diff_a, logit_diff_b, accuracy_a, accuracy_b,"
                " outliers_json) values (?,?,?,?,?,?,?,?)",
                [[diff_id, r["task"], r["n_items"], r["logit_diff_a"], r["logit_diff_b"], r["accuracy_a"],
                  r["accuracy_b"], _dumps(r.get("outliers"))] for r in tasks])

    def _has_diffs(self) -> bool:
        return "diffs" in self.db.table_names()        # a read-only store made before these tables

    def list_diffs(self) -> list[dict]:
        if not self._has_diffs():
            return []
        rows = self.query("select id, model_a, model_b, mode, level, corpus, n_tokens, summary_json, updated_at "
                          "from diffs order by updated_at desc, id")
        for r in rows:
            r["summary"] = json.loads(r.pop("summary_json") or "null")
        return rows

    def get_diff(self, diff_id: str) -> dict | None:
        """A diff with its contexts, components (by analysis, ranked), tasks and explanations with
        their scores; `diff_id` may be a unique prefix (4+ characters). None if unknown."""
        if not self._has_diffs():
            return None
        d = self.row_by_id("diffs", diff_id)
        if d is None:
            return None
        decoded(d, settings="null", summary="null")
        did = d["id"]
        d["contexts"] = []
        for c in self.query("select side, rank, ctx_idx, score, tokens_json, values_json, input_ids_json from "
                            "diff_contexts where diff_id = ? order by side, rank", [did]):
            d["contexts"].append({"side": c["side"], "rank": c["rank"], "ctx_idx": c["ctx_idx"], "score": c["score"],
                                  "tokens": json.loads(c["tokens_json"]), "values": json.loads(c["values_json"]),
                                  "input_ids": json.loads(c["input_ids_json"] or "null")})
        comps: dict[str, list[dict]] = {}
        for c in self.query("select analysis, rank, component, layer, value, details_json from diff_components "
                            "where diff_id = ? order by analysis, rank", [did]):
            c["details"] = json.loads(c.pop("details_json") or "null")
            comps.setdefault(c.pop("analysis"), []).append(c)
        d["components"] = comps
        d["tasks"] = []
        for t in self.query("select * from diff_tasks where diff_id = ? order by task", [did]):
            t.pop("diff_id")
            t["outliers"] = json.loads(t.pop("outliers_json") or "null")
            d["tasks"].append(t)
        d["explanations"] = self._diff_explanations_v4(did) if self._v4_diffs() else self.diff_explanations(did)
        return d

    def _v4_diffs(self) -> bool:
        """A store of schema v4 opened read-only (not upgraded): its diff explanations are still in
        diff_explanations / diff_scores."""
        return "diff_explanations" in self.db.table_names()

    def _diff_explanations_v4(self, did: str) -> list[dict]:
        out = []
        for e in self.query("select id, key, side, explainer, method, text, settings_json, created_at from "
                            "diff_explanations where diff_id = ? order by id", [did]):
            e["settings"] = json.loads(e.pop("settings_json") or "null")
            e["scores"] = [json.loads(s["record_json"]) for s in self.query(
                "select record_json from diff_scores where explanation_id = ? order by id", [e["id"]])]
            out.append(e)
        return out
