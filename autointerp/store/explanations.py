"""Store methods for explanations and their scores (explain/, score/, validate/).

An explanation is of a subject (core/subjects.py): a unit of a model (model_id, unit, layer,
run_id) or one side of a model diff (diff_id, side); Subject.columns gives those columns.

Rows are keyed by content hashes (`key`) of everything that determines them, so a re-run with
identical inputs finds its row instead of recomputing: `get_explanation(key)` before calling an
LLM, `put_explanation(row)` after (idempotent: returns the existing id on a key clash).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from .base import SCORE_RECORD_COLS, now

_EXPL_COLS = ["key", "model_id", "unit", "layer", "run_id", "explainer", "method", "text",
              "template", "template_hash", "records_hash", "settings_json", "diff_id", "side"]
_SCORE_COLS = ["key", "explanation_id", "kind", "value", "ci_low", "ci_high", "n", "scorer",
               "template_hash", "details_json", "control", "margin", "margin_low", "margin_high", "reason"]


def _dumps(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)


def _expl_row(r: dict) -> dict:
    r = dict(r)
    r["settings"] = json.loads(r.pop("settings_json") or "null")
    return r


def _score_row(r: dict) -> dict:
    r = dict(r)
    r["details"] = json.loads(r.pop("details_json") or "null")
    return r


class ExplanationsMixin:
    # ---- explanations ---------------------------------------------------------------
    def put_explanation(self, *, key: str, explainer: str, method: str, text: str, model_id: str | None = None,
                        unit: str | None = None, layer: int | None = None, run_id: str | None = None,
                        diff_id: str | None = None, side: str | None = None, template: str | None = None,
                        template_hash: str | None = None, records_hash: str | None = None,
                        settings: dict | None = None) -> int:
        """Insert an explanation (idempotent on `key`); returns its id. Its subject: model_id, unit
        and layer (a unit), or diff_id and side (a model diff's side); the schema refuses a mix."""
        row = {"key": key, "model_id": model_id, "unit": unit, "layer": None if layer is None else int(layer),
               "run_id": run_id, "explainer": explainer, "method": method, "text": text, "template": template,
               "template_hash": template_hash, "records_hash": records_hash, "settings_json": _dumps(settings),
               "created_at": now(), "diff_id": diff_id, "side": side}
        with self.tx():
            self.db.execute(
                f"insert into explanations ({', '.join(row)}) values ({', '.join('?' * len(row))}) on conflict(key) do nothing",
                list(row.values()))
            return self.db.execute("select id from explanations where key = ?", [key]).fetchone()[0]

    def put_explanations_bulk(self, items: Iterable[tuple[dict, list[dict]]]) -> int:
        """Many explanations, each with its scores, in ONE transaction (bulk loads: imports,
        scripts/bench_store.py). items: (explanation: put_explanation's keywords, [score:
        put_score's keywords without explanation_id]). Idempotent on the keys like the one-row
        methods. Returns the number of explanations given."""
        n = 0
        cols = [c for c in _EXPL_COLS if c != "settings_json"] + ["settings_json", "created_at"]   # the last two: below
        scols = ["key", "explanation_id", "kind", "value", "ci_low", "ci_high", "n", "scorer", "template_hash",
                 "details_json", "created_at", "control", "margin", "margin_low", "margin_high", "reason"]
        e_sql = f"insert into explanations ({', '.join(cols)}) values ({', '.join('?' * len(cols))}) on conflict(key) do nothing"
        s_sql = f"insert into scores ({', '.join(scols)}) values ({', '.join('?' * len(scols))}) on conflict(key) do nothing"
        s_get = [c for c in scols if c not in ("explanation_id", "details_json", "created_at")]
        conn = self.db.conn
        conn.execute("PRAGMA cache_size = -65536")        # 64 MB of page cache for the big insert (as finish_mining_run)
        t = now()
        pending: list[tuple] = []     # the scores of many explanations, written by one executemany

        def flush() -> None:
            if pending:
                conn.executemany(s_sql, pending)
                pending.clear()

        with self.tx():
            for e, scores in items:
                g = e.get
                cur = conn.execute(e_sql, [_dumps(g("settings")) if c == "settings_json" else t if c == "created_at" else g(c)
                                           for c in cols])
                eid = cur.lastrowid if cur.rowcount else conn.execute("select id from explanations where key = ?",
                                                                      [e["key"]]).fetchone()[0]
                for sc in scores:
                    v = [sc.get(c) for c in s_get]     # key, kind, value, ci_low, ci_high, n, scorer, template_hash,
                    pending.append((v[0], eid, *v[1:8], _dumps(sc.get("details")), t, *v[8:]))   # control .. reason
                if len(pending) >= 5000:
                    flush()
                n += 1
            flush()
        return n

    def get_explanation(self, key: str | None = None, *, id: int | None = None) -> dict | None:
        """One explanation by key or id (settings_json decoded into 'settings'), or None."""
        if (key is None) == (id is None):
            raise ValueError("give exactly one of key, id")
        rows = self.query("select * from explanations where " + ("key = ?" if key is not None else "id = ?"),
                          [key if key is not None else id])
        return _expl_row(rows[0]) if rows else None

    def explanations_for(self, model_id: str, unit: str, *, explainer: str | None = None) -> list[dict]:
        """A unit's explanations, newest first."""
        sql = "select * from explanations where model_id = ? and unit = ?"
        params: list = [model_id, unit]
        if explainer is not None:
            sql += " and explainer = ?"
            params.append(explainer)
        return [_expl_row(r) for r in self.query(sql + " order by id desc", params)]

    def search_explanations(self, query: str, *, model_id: str | None = None, limit: int = 20) -> list[dict]:
        """Full-text search over explanation text (porter stemming), best match first."""
        sql = ("select e.* from explanations e join explanations_fts f on f.rowid = e.id "
               "where explanations_fts match ?" + (" and e.model_id = ?" if model_id else "") + " order by rank limit ?")
        params = [query] + ([model_id] if model_id else []) + [limit]
        return [_expl_row(r) for r in self.query(sql, params)]

    def diff_explanations(self, diff_id: str) -> list[dict]:
        """A model diff's explanations (both sides, oldest first), each with its scores as score
        records (kind, value, interval, n, control, margin, reason, details)."""
        out = []
        for e in self.query("select id, key, side, explainer, method, text, settings_json, created_at "
                            "from explanations where diff_id = ? order by id", [diff_id]):
            e = _expl_row(e)
            e["scores"] = [{c: r[c] for c in SCORE_RECORD_COLS} for r in map(_score_row, self.query(
                f"select {', '.join(c if c != 'details' else 'details_json' for c in SCORE_RECORD_COLS)} "
                "from scores where explanation_id = ? order by id", [e["id"]]))]
            out.append(e)
        return out

    def explained_units(self, model_id: str) -> list[str]:
        return [r["unit"] for r in self.query("select distinct unit from explanations where model_id = ? order by layer, unit", [model_id])]

    # ---- scores ----------------------------------------------------------------------
    def put_score(self, *, key: str, explanation_id: int, kind: str, value: float | None,
                  ci_low: float | None = None, ci_high: float | None = None, n: int | None = None,
                  scorer: str | None = None, template_hash: str | None = None, details: Any = None,
                  control: float | None = None, margin: float | None = None, margin_low: float | None = None,
                  margin_high: float | None = None, reason: str | None = None) -> int:
        """Insert a score (idempotent on `key`); returns its id. control/margin*: the null control
        on the same records and value - control with its interval; reason: why value is None."""
        f = lambda v: None if v is None else float(v)  # noqa: E731
        row = {"key": key, "explanation_id": int(explanation_id), "kind": kind, "value": f(value),
               "ci_low": f(ci_low), "ci_high": f(ci_high),
               "n": n, "scorer": scorer, "template_hash": template_hash, "details_json": _dumps(details),
               "created_at": now(), "control": f(control), "margin": f(margin), "margin_low": f(margin_low),
               "margin_high": f(margin_high), "reason": reason}
        with self.tx():
            self.db.execute(
                f"insert into scores ({', '.join(row)}) values ({', '.join('?' * len(row))}) on conflict(key) do nothing",
                list(row.values()))
            return self.db.execute("select id from scores where key = ?", [key]).fetchone()[0]

    def get_score(self, key: str) -> dict | None:
        rows = self.query("select * from scores where key = ?", [key])
        return _score_row(rows[0]) if rows else None

    def get_score_by_id(self, score_id: int) -> dict | None:
        rows = self.query("select * from scores where id = ?", [score_id])
        return _score_row(rows[0]) if rows else None

    def scores_for(self, explanation_id: int, *, kind: str | None = None, details: bool = True) -> list[dict]:
        """An explanation's scores, oldest first (details_json decoded into 'details' unless details=False)."""
        cols = "*" if details else ", ".join(c for c in ["id", "created_at"] + _SCORE_COLS if c != "details_json")
        sql = f"select {cols} from scores where explanation_id = ?"
        params: list = [explanation_id]
        if kind is not None:
            sql += " and kind = ?"
            params.append(kind)
        rows = self.query(sql + " order by id", params)
        return [_score_row(r) if details else dict(r) for r in rows]

    def put_scores(self, explanation_id: int, rows: list[dict]) -> None:
        """Several scores of one explanation in one transaction (all or none)."""
        with self.tx():
            for r in rows:
                self.put_score(explanation_id=explanation_id, **r)

    # ---- calibrations ---------------------------------------------------------------
    def put_calibration(self, *, key: str, llm: str, model_id: str, corpus: str, templates: dict, settings: dict,
                        results: dict) -> int:
        """Store one scorer calibration (idempotent on key: a re-run replaces the results)."""
        row = {"key": key, "llm": llm, "model_id": model_id, "corpus": corpus, "templates_json": _dumps(templates),
               "settings_json": _dumps(settings), "results_json": _dumps(results), "created_at": now()}
        with self.tx():
            self.db.execute(
                f"insert into calibrations ({', '.join(row)}) values ({', '.join('?' * len(row))}) "
                "on conflict(key) do update set results_json = excluded.results_json, created_at = excluded.created_at",
                list(row.values()))
            return self.db.execute("select id from calibrations where key = ?", [key]).fetchone()[0]

    def calibrations(self, llm: str | None = None) -> list[dict]:
        """Stored calibrations, newest first (JSON columns decoded)."""
        sql = "select * from calibrations" + (" where llm = ?" if llm else "") + " order by id desc"
        out = []
        for r in self.query(sql, [llm] if llm else []):
            r = dict(r)
            for c in ("templates", "settings", "results"):
                r[c] = json.loads(r.pop(f"{c}_json") or "null")
            out.append(r)
        return out
