"""Store methods for investigations (`autointerp investigate`): the run, its steps (keyed by a
content hash of their inputs, so re-runs reuse them) and its figures."""

from __future__ import annotations

import json
from typing import Any

from .base import decoded, now


class InvestigationsMixin:
    def put_investigation(self, inv_id: str, *, task: str, model_id: str, settings: dict) -> None:
        """Create the investigation row if new (an existing one is marked running again)."""
        t = now()
        with self.tx():
            if self.db.execute("select 1 from investigations where id = ?", [inv_id]).fetchone():
                self.db.execute("update investigations set status = 'running', error = null, updated_at = ? where id = ?",
                                [t, inv_id])
            else:
                self.db["investigations"].insert({
                    "id": inv_id, "task": task, "model_id": model_id, "settings_json": json.dumps(settings),
                    "status": "running", "created_at": t, "updated_at": t})

    def update_investigation(self, inv_id: str, **fields: Any) -> None:
        """Set columns: dataset, status, error, summary (dict), report_md, out_dir."""
        cols = {}
        for k, v in fields.items():
            if k == "summary":
                cols["summary_json"] = json.dumps(v)
            elif k in ("dataset", "status", "error", "report_md", "out_dir"):
                cols[k] = v
            else:
                raise ValueError(f"unknown investigation field {k!r}")
        cols["updated_at"] = now()
        sets = ", ".join(f"{c} = ?" for c in cols)
        with self.tx():
            self.db.execute(f"update investigations set {sets} where id = ?", [*cols.values(), inv_id])

    def get_investigation(self, inv_id: str) -> dict | None:
        """The investigation row (settings, summary decoded), its steps and its figures (no PNG bytes),
        or None. `inv_id` may be a unique prefix of the id."""
        if "investigations" not in self.db.table_names():   # a read-only store made before these tables
            return None
        r = self.row_by_id("investigations", inv_id)
        if r is None:
            return None
        decoded(r, settings="{}", summary="null")
        r["steps"] = [{"result": json.loads(s.pop("result_json")), **s} for s in self.query(
            "select step, key, result_json, seconds, created_at from investigation_steps where investigation_id = ? "
            "order by created_at, rowid", [r["id"]])]
        r["figures"] = self.query("select name, caption, source_json from investigation_figures where investigation_id = ?"
                                  " order by rowid", [r["id"]])
        for f in r["figures"]:
            decoded(f, source="null")
        return r

    def list_investigations(self) -> list[dict]:
        return self.query("select id, task, model_id, dataset, status, created_at, updated_at from investigations "
                          "order by updated_at desc")

    # ---- steps -------------------------------------------------------------------------
    def get_investigation_step(self, key: str) -> dict | None:
        """A done step with this input hash (from any investigation): {step, key, result, seconds}."""
        rows = self.query("select step, key, result_json, seconds from investigation_steps where key = ? limit 1", [key])
        if not rows:
            return None
        r = rows[0]
        r["result"] = json.loads(r.pop("result_json"))
        return r

    def put_investigation_step(self, inv_id: str, step: str, key: str, result: dict, seconds: float | None) -> None:
        with self.tx():
            self.db.execute("insert into investigation_steps(investigation_id, step, key, result_json, seconds, created_at)"
                            " values (?,?,?,?,?,?) on conflict(investigation_id, step) do update set key = excluded.key,"
                            " result_json = excluded.result_json, seconds = excluded.seconds, created_at = excluded.created_at",
                            [inv_id, step, key, json.dumps(result), seconds, now()])

    # ---- figures -----------------------------------------------------------------------
    def put_investigation_figure(self, inv_id: str, name: str, png: bytes, *, caption: str = "",
                                 source: dict | None = None) -> None:
        with self.tx():
            self.db.execute("insert into investigation_figures(investigation_id, name, caption, source_json, png)"
                            " values (?,?,?,?,?) on conflict(investigation_id, name) do update set caption = excluded.caption,"
                            " source_json = excluded.source_json, png = excluded.png",
                            [inv_id, name, caption, json.dumps(source), png])

    def get_investigation_figure(self, inv_id: str, name: str) -> bytes | None:
        row = self.db.execute("select png from investigation_figures where investigation_id = ? and name = ?",
                              [inv_id, name]).fetchone()
        return bytes(row[0]) if row else None
