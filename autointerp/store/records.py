"""Store methods for the mining stage's tables: corpora, contexts, mining_runs, unit_stats,
unit_logits, records (see store/store.py). Used by autointerp/mine/."""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

from .base import now, pack_i32, unpack_i32


def _j(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


class RecordsMixin:
    # ---- corpora and contexts ----------------------------------------------------
    def put_corpus(self, corpus_id: str, name: str, model_id: str, context_len: int, settings: dict) -> None:
        """Register a corpus (idempotent; n_contexts grows as contexts are stored)."""
        with self.tx():
            self.db.execute(
                "insert or ignore into corpora(id, name, model_id, context_len, n_contexts, settings_json, created_at) "
                "values (?, ?, ?, ?, 0, ?, ?)", [corpus_id, name, model_id, context_len, _j(settings), now()])

    def get_corpus(self, corpus_id: str) -> dict | None:
        rows = self.query("select * from corpora where id = ?", [corpus_id])
        return rows[0] if rows else None

    def put_contexts(self, corpus_id: str, contexts: Iterable[tuple[int, Sequence[int], Sequence[str]]]) -> None:
        """Store contexts (idx, token_ids, decoded text tokens); already stored ones are kept."""
        with self.tx():
            self._put_contexts(corpus_id, contexts)

    def _put_contexts(self, corpus_id: str, contexts) -> None:
        rows = [(corpus_id, int(i), pack_i32(ids), _j(list(toks))) for i, ids, toks in contexts]
        if not rows:
            return
        self.db.conn.executemany(
            "insert or ignore into contexts(corpus_id, idx, token_ids, tokens_json) values (?, ?, ?, ?)", rows)
        top = max(r[1] for r in rows) + 1
        self.db.execute("update corpora set n_contexts = max(n_contexts, ?) where id = ?", [top, corpus_id])

    def get_contexts(self, corpus_id: str, idxs: Iterable[int] | None = None) -> dict[int, dict]:
        """{idx: {"token_ids": np.int32 array, "tokens": [str]}} for the given (or all) contexts."""
        if idxs is None:
            rows = self.db.execute("select idx, token_ids, tokens_json from contexts where corpus_id = ? order by idx",
                                   [corpus_id]).fetchall()
        else:
            want = sorted({int(i) for i in idxs})
            rows = []
            for k in range(0, len(want), 500):
                chunk = want[k:k + 500]
                rows += self.db.execute(
                    f"select idx, token_ids, tokens_json from contexts where corpus_id = ? and idx in ({','.join('?' * len(chunk))})",
                    [corpus_id, *chunk]).fetchall()
        return {i: {"token_ids": unpack_i32(b), "tokens": json.loads(t)} for i, b, t in rows}

    # ---- mining runs -------------------------------------------------------------
    def start_mining_run(self, run_id: str, model_id: str, corpus_id: str, settings: dict) -> dict:
        """The run row, created (status running, n_done 0) if it does not exist yet."""
        with self.tx(immediate=True):
            t = now()
            self.db.execute(
                "insert or ignore into mining_runs(id, model_id, corpus_id, settings_json, n_done, status, created_at, updated_at) "
                "values (?, ?, ?, ?, 0, 'running', ?, ?)", [run_id, model_id, corpus_id, _j(settings), t, t])
        return self.get_mining_run(run_id)

    def get_mining_run(self, run_id: str) -> dict | None:
        rows = self.query("select * from mining_runs where id = ?", [run_id])
        return _run_row(rows[0]) if rows else None

    def checkpoint_mining_run(self, run_id: str, n_done: int, state_path: str | None,
                              contexts: tuple[str, Iterable] | None = None) -> None:
        """Record progress (and the contexts mined since the last call) in one transaction."""
        with self.tx():
            if contexts is not None:
                self._put_contexts(*contexts)
            self.db.execute("update mining_runs set n_done = ?, state_path = ?, updated_at = ? where id = ?",
                            [n_done, state_path, now(), run_id])

    def finish_mining_run(self, run_id: str, n_done: int, stats: dict, unit_stats: Iterable[tuple],
                          records: Iterable[tuple], unit_logits: tuple[str, Iterable[tuple]] | None = None,
                          contexts: tuple[str, Iterable] | None = None, replace: bool = True) -> None:
        """Write a run's results in ONE transaction and mark it done (replace=False: keep the rows
        put_mining_rows wrote before, for the other chunks of units).

        unit_stats: (unit, layer, max, mean, std, frac_active, hist dict); records: (unit, kind, bin,
        ctx_idx, max_act, acts_blob, extra_blob or None), streamed, best in the order of the UNIQUE
        index; unit_logits: (model_id, [(unit, promoted [[tok, w]...], suppressed)]) stored only for
        units that have none yet."""
        self.db.execute("PRAGMA cache_size = -65536")          # 64 MB of page cache for the big insert
        with self.tx(immediate=True):
            if contexts is not None:
                self._put_contexts(*contexts)
            if replace:
                # a finish that died half-way rolled back; these deletes only matter for a forced re-finish
                self.db.execute("delete from records where run_id = ?", [run_id])
                self.db.execute("delete from unit_stats where run_id = ?", [run_id])
            self._put_unit_rows(run_id, unit_stats, records)
            self._put_unit_logits(unit_logits)
            self.db.execute("update mining_runs set n_done = ?, status = 'done', state_path = null, stats_json = ?, "
                            "updated_at = ? where id = ?", [n_done, _j(stats), now(), run_id])

    def put_mining_rows(self, run_id: str, unit_stats: Iterable[tuple], records: Iterable[tuple],
                        unit_logits: tuple[str, Iterable[tuple]] | None = None,
                        contexts: tuple[str, Iterable] | None = None) -> None:
        """The rows of a part of a run's units (a chunk of SAE latents mined in its own pass), in
        one transaction; the run stays unfinished until finish_mining_run(replace=False)."""
        self.db.execute("PRAGMA cache_size = -65536")
        with self.tx(immediate=True):
            if contexts is not None:
                self._put_contexts(*contexts)
            self._put_unit_rows(run_id, unit_stats, records)
            self._put_unit_logits(unit_logits)

    def _put_unit_rows(self, run_id: str, unit_stats: Iterable[tuple], records: Iterable[tuple]) -> None:
        # "or replace": a chunk written again after a crash before its checkpoint gives the same rows
        self.db.conn.executemany(
            "insert or replace into unit_stats(run_id, unit, layer, max_act, mean_act, std_act, frac_active, hist_json) "
            "values (?, ?, ?, ?, ?, ?, ?, ?)",
            ((run_id, u, L, mx, mean, std, fa, _j(h)) for u, L, mx, mean, std, fa, h in unit_stats))
        self.db.conn.executemany(
            "insert or replace into records(run_id, unit, kind, bin, ctx_idx, max_act, acts, extra) "
            "values (?, ?, ?, ?, ?, ?, ?, ?)", ((run_id, *r) for r in records))

    def _put_unit_logits(self, unit_logits: tuple[str, Iterable[tuple]] | None) -> None:
        if unit_logits is not None:
            model_id, rows = unit_logits
            self.db.conn.executemany(
                "insert or ignore into unit_logits(model_id, unit, promoted_json, suppressed_json) values (?, ?, ?, ?)",
                ((model_id, u, _j(p), _j(s)) for u, p, s in rows))

    def finish_mining_shard(self, run_id: str, n_done: int, state_path: str, stats: dict,
                            unit_logits: tuple[str, Iterable[tuple]] | None = None,
                            contexts: tuple[str, Iterable] | None = None) -> None:
        """Mark a corpus shard of a mining run finished (status 'shard'), in one transaction: its
        final state stays in state_path for `autointerp merge`, which writes the records."""
        with self.tx(immediate=True):
            if contexts is not None:
                self._put_contexts(*contexts)
            self._put_unit_logits(unit_logits)
            self.db.execute("update mining_runs set n_done = ?, status = 'shard', state_path = ?, stats_json = ?, "
                            "updated_at = ? where id = ?", [n_done, state_path, _j(stats), now(), run_id])

    def set_mining_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """Mark a run that is not done: 'failed' (with the error in stats_json) or 'running' again."""
        with self.tx():
            self.db.execute("update mining_runs set status = ?, stats_json = ?, updated_at = ? where id = ? "
                            "and status not in ('done', 'shard')", [status, _j({"error": error}) if error else None, now(), run_id])

    def set_mining_stats(self, run_id: str, stats: dict) -> None:
        with self.tx():
            self.db.execute("update mining_runs set stats_json = ? where id = ?", [_j(stats), run_id])

    def find_mining_runs(self, model_id: str, corpus: str | None = None, context_len: int | None = None,
                         status: str | None = "done") -> list[dict]:
        """Runs of a model, newest first; corpus matches the corpus name or id."""
        sql = ("select r.*, c.name as corpus_name, c.context_len from mining_runs r join corpora c on c.id = r.corpus_id "
               "where r.model_id = ?")
        args: list[Any] = [model_id]
        if status is not None:
            sql += " and r.status = ?"
            args.append(status)
        if corpus is not None:
            sql += " and (c.name = ? or c.id = ?)"
            args += [corpus, corpus]
        if context_len is not None:
            sql += " and c.context_len = ?"
            args.append(context_len)
        sql += " order by r.updated_at desc, r.rowid desc"
        return [_run_row(r) for r in self.query(sql, args)]

    # ---- results -----------------------------------------------------------------
    def get_records(self, run_id: str, unit: str, kinds: Sequence[str] | None = None) -> list[dict]:
        """A unit's records joined with their contexts' tokens, ordered by kind, bin, ctx_idx."""
        sql = ("select x.kind, x.bin, x.ctx_idx, x.max_act, x.acts, x.extra, c.tokens_json, c.token_ids "
               "from records x join mining_runs r on r.id = x.run_id "
               "left join contexts c on c.corpus_id = r.corpus_id and c.idx = x.ctx_idx "
               "where x.run_id = ? and x.unit = ?")
        args: list[Any] = [run_id, unit]
        if kinds:
            sql += f" and x.kind in ({','.join('?' * len(kinds))})"
            args += list(kinds)
        sql += " order by x.kind, x.bin, x.ctx_idx"
        return self.query(sql, args)

    def count_records(self, run_id: str) -> dict[str, int]:
        return {r["kind"]: r["n"] for r in self.query(
            "select kind, count(*) as n from records where run_id = ? group by kind", [run_id])}

    def get_unit_stats(self, run_id: str, unit: str) -> dict | None:
        rows = self.query("select * from unit_stats where run_id = ? and unit = ?", [run_id, unit])
        if not rows:
            return None
        r = rows[0]
        r["hist"] = json.loads(r.pop("hist_json")) if r.get("hist_json") else None
        return r

    def get_unit_logits(self, model_id: str, unit: str) -> dict | None:
        rows = self.query("select * from unit_logits where model_id = ? and unit = ?", [model_id, unit])
        if not rows:
            return None
        r = rows[0]
        return {"promoted": json.loads(r["promoted_json"]), "suppressed": json.loads(r["suppressed_json"])}

    def unit_logits_layers(self, model_id: str, units: Sequence[str]) -> set[str]:
        """The given units that already have their direct logit effect stored."""
        have: set[str] = set()
        units = list(units)
        for k in range(0, len(units), 500):
            chunk = units[k:k + 500]
            have |= {r["unit"] for r in self.query(
                f"select unit from unit_logits where model_id = ? and unit in ({','.join('?' * len(chunk))})",
                [model_id, *chunk])}
        return have


def _run_row(r: dict) -> dict:
    r = dict(r)
    r["settings"] = json.loads(r.pop("settings_json") or "{}")
    r["stats"] = json.loads(r.pop("stats_json") or "null") if "stats_json" in r else None
    return r
