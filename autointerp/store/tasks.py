"""Store methods for the task pipeline's tables: datasets, pairs, patch runs and results, head scores."""

from __future__ import annotations

import json
from typing import Any, Iterable

from ..errors import DatasetError
from .base import decoded, now


class TasksMixin:
    # ---- datasets and pairs --------------------------------------------------------
    def put_dataset(self, name: str, task: str, source: str, items: Iterable[Any], *, model_id: str | None = None,
                    stats: dict | None = None, settings: dict | None = None, hash: str | None = None,
                    replace: bool = False) -> None:
        """Write a dataset and its items in one transaction (all or nothing). Items are PairItem-like
        (clean, corrupt, answer, wrong, meta, clean_logit_diff, corrupt_logit_diff). An existing
        dataset of that name is an error unless replace=True (which drops its patch runs too)."""
        items = list(items)
        with self.tx(immediate=True):
            exists = self.db.execute("select 1 from datasets where name = ?", [name]).fetchone()
            if exists and not replace:
                raise DatasetError(f"dataset {name!r} exists: pick another --name or pass --replace")
            if exists:
                self.db.execute("delete from patch_results where run_id in (select id from patch_runs where dataset = ?)", [name])
                self.db.execute("delete from patch_runs where dataset = ?", [name])
                self.db.execute("delete from pairs where dataset = ?", [name])
                self.db.execute("delete from datasets where name = ?", [name])
            self.db["datasets"].insert({
                "name": name, "task": task, "source": source, "model_id": model_id, "n_items": len(items),
                "hash": hash, "stats_json": json.dumps(stats or {}), "settings_json": json.dumps(settings or {}),
                "created_at": now()})
            self.db["pairs"].insert_all(({
                "dataset": name, "idx": i, "clean": it.clean, "corrupt": it.corrupt, "answer": it.answer,
                "wrong": it.wrong, "clean_logit_diff": it.clean_logit_diff, "corrupt_logit_diff": it.corrupt_logit_diff,
                "meta_json": json.dumps(it.meta or {})} for i, it in enumerate(items)), batch_size=500)

    def get_dataset(self, name: str) -> dict | None:
        """{name, task, source, model_id, n_items, hash, stats, settings, created_at, items: [dict]} or None."""
        d = self.one("select * from datasets where name = ?", [name], stats="{}", settings="{}")
        if d is None:
            return None
        items = [decoded(it, meta="{}") for it in self.query("select * from pairs where dataset = ? order by idx", [name])]
        for it in items:
            it.pop("dataset")
        d["items"] = items
        return d

    def list_datasets(self) -> list[dict]:
        rows = self.query("select name, task, source, model_id, n_items, stats_json, created_at from datasets order by created_at, name")
        for r in rows:
            r["stats"] = json.loads(r.pop("stats_json") or "{}")
        return rows

    def delete_dataset(self, name: str) -> bool:
        with self.tx():
            self.db.execute("delete from patch_results where run_id in (select id from patch_runs where dataset = ?)", [name])
            self.db.execute("delete from patch_runs where dataset = ?", [name])
            self.db.execute("delete from pairs where dataset = ?", [name])
            return self.db.execute("delete from datasets where name = ?", [name]).rowcount > 0

    # ---- patch runs ------------------------------------------------------------------
    def put_patch_run(self, key: str, *, dataset: str, model_id: str, what: str, method: str, direction: str | None,
                      clean_logit_diff: float | None, corrupt_logit_diff: float | None, settings: dict | None,
                      results: Iterable[dict]) -> int:
        """Write a run and its per-component rows (component, layer, position (-1 = all), effect) in one
        transaction; an existing run with the same key is replaced. Returns the run id."""
        with self.tx(immediate=True):
            self.db.execute("delete from patch_runs where key = ?", [key])
            cur = self.db.execute(
                "insert into patch_runs(key, dataset, model_id, what, method, direction, clean_logit_diff, corrupt_logit_diff,"
                " settings_json, created_at) values (?,?,?,?,?,?,?,?,?,?)",
                [key, dataset, model_id, what, method, direction, clean_logit_diff, corrupt_logit_diff,
                 json.dumps(settings or {}), now()])
            run_id = cur.lastrowid
            self.db["patch_results"].insert_all(({
                "run_id": run_id, "component": r["component"], "layer": r.get("layer"),
                "position": -1 if r.get("position") is None else r["position"], "effect": float(r["effect"])}
                for r in results), batch_size=1000)
        return run_id

    def _run_row(self, row: dict, with_results: bool) -> dict:
        row["settings"] = json.loads(row.pop("settings_json") or "{}")
        if with_results:
            res = self.query("select component, layer, position, effect from patch_results where run_id = ?", [row["id"]])
            for r in res:
                if r["position"] == -1:
                    r["position"] = None
            row["results"] = res
        return row

    def get_patch_run(self, key: str | None = None, *, run_id: int | None = None, with_results: bool = True) -> dict | None:
        rows = self.query("select * from patch_runs where " + ("key = ?" if key is not None else "id = ?"),
                          [key if key is not None else run_id])
        return self._run_row(rows[0], with_results) if rows else None

    def list_patch_runs(self, dataset: str | None = None, model_id: str | None = None) -> list[dict]:
        where, params = [], []
        if dataset:
            where.append("dataset = ?")
            params.append(dataset)
        if model_id:
            where.append("model_id = ?")
            params.append(model_id)
        sql = "select * from patch_runs" + (" where " + " and ".join(where) if where else "") + " order by id"
        return [self._run_row(r, False) for r in self.query(sql, params)]

    # ---- head wiki ---------------------------------------------------------------------
    def put_head_scores(self, model_id: str, scores: dict[str, dict[str, float]]) -> None:
        """scores: {unit: {detector: score}}; replaces earlier scores of the same (unit, detector)."""
        t = now()
        with self.tx():
            self.db["head_scores"].upsert_all(
                ({"model_id": model_id, "unit": u, "detector": d, "score": float(s), "created_at": t}
                 for u, ds in scores.items() for d, s in ds.items()),
                pk=("model_id", "unit", "detector"))

    def get_head_scores(self, model_id: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self.query("select unit, detector, score from head_scores where model_id = ?", [model_id]):
            out.setdefault(r["unit"], {})[r["detector"]] = r["score"]
        return out
