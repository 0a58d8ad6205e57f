"""Store methods for the batch job table (batch/).

A job is one unit's work for one stage ('explain': explain + score), keyed by a content hash of
everything that determines its result (mining run, prompt templates, explainer and simulator
models, settings), so a changed setting makes new jobs and an unchanged one finds its old row.

Life of a job:  pending --claim--> running --finish--> done
                                          \\--fail--> failed (attempts < limit: claimable again)
Claims run in a BEGIN IMMEDIATE transaction (the write lock is taken before the row is read), so
two processes can never both claim one job. A `running` job whose claimer is gone (the caller's
`is_stale(row)` says so: a dead pid on this host, or a claim older than a timeout) is claimable.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from .base import now

_CHUNK = 500
_JOB_COLS = ["key", "model_id", "unit", "stage", "status", "attempts", "last_error", "claimed_by", "claimed_at",
             "result_id", "created_at", "updated_at"]


def _chunks(xs: Sequence, n: int = _CHUNK):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


class JobsMixin:
    # ---- creation and reading ------------------------------------------------------------
    def ensure_jobs(self, jobs: Iterable[dict]) -> int:
        """Insert jobs (dicts with key, model_id, unit, stage) that are not there yet, as
        `pending`; existing rows are left as they are. Returns how many were new."""
        ts = now()
        rows = [(j["key"], j["model_id"], j["unit"], j.get("stage", "explain"), ts, ts) for j in jobs]
        added = 0
        with self.tx():
            for part in _chunks(rows):
                before = self.db.conn.total_changes
                self.db.conn.executemany(
                    "insert into jobs(key, model_id, unit, stage, status, attempts, created_at, updated_at) "
                    "values (?, ?, ?, ?, 'pending', 0, ?, ?) on conflict(key) do nothing", part)
                added += self.db.conn.total_changes - before
        return added

    def get_job(self, key: str) -> dict | None:
        rows = self.query("select * from jobs where key = ?", [key])
        return rows[0] if rows else None

    def jobs_by_key(self, keys: Sequence[str]) -> dict[str, dict]:
        """The rows of these jobs that exist, by key."""
        out: dict[str, dict] = {}
        keys = list(keys)
        for part in _chunks(keys):
            for r in self.query(f"select * from jobs where key in ({', '.join('?' * len(part))})", part):
                out[r["key"]] = r
        return out

    def job_counts(self, *, model_id: str | None = None, stage: str | None = None) -> dict[str, int]:
        """Jobs per status (optionally of one model / stage)."""
        sql, args = "select status, count(*) n from jobs where 1=1", []
        if model_id is not None:
            sql, args = sql + " and model_id = ?", args + [model_id]
        if stage is not None:
            sql, args = sql + " and stage = ?", args + [stage]
        return {r["status"]: r["n"] for r in self.query(sql + " group by status", args)}

    def job_scores(self, keys: Sequence[str], kind: str = "simulation") -> dict[str, float | None]:
        """For done jobs among `keys`: the `kind` score of their result (an explanation id), by key."""
        out: dict[str, float | None] = {}
        keys = list(keys)
        for part in _chunks(keys):
            rows = self.query(
                f"select j.key, s.value from jobs j left join scores s on s.explanation_id = j.result_id and s.kind = ? "
                f"where j.status = 'done' and j.key in ({', '.join('?' * len(part))})", [kind, *part])
            for r in rows:
                out[r["key"]] = r["value"]
        return out

    # ---- claims ----------------------------------------------------------------------------
    def claim_job(self, key: str, worker: str, *, max_attempts: int,
                  is_stale: Callable[[dict], bool] = lambda row: False) -> dict | None:
        """Take a job for `worker` ('host:pid') if it is claimable: pending, failed with fewer than
        `max_attempts` attempts, or running under a claim that `is_stale` says is dead. Marks it
        running, counts an attempt and returns the updated row; None if it is not claimable (done,
        failed for good, or running under a live claim)."""
        with self.tx(immediate=True):
            row = self.db.execute(f"select {', '.join(_JOB_COLS)} from jobs where key = ?", [key]).fetchone()
            if row is None:
                return None
            row = dict(zip(_JOB_COLS, row))
            st = row["status"]
            ok = (st == "pending" or (st == "failed" and row["attempts"] < max_attempts)
                  or (st == "running" and is_stale(row)))
            if not ok:
                return None
            ts = now()
            self.db.execute("update jobs set status = 'running', attempts = attempts + 1, claimed_by = ?, claimed_at = ?, "
                            "updated_at = ? where key = ?", [worker, ts, ts, key])
            row.update(status="running", attempts=row["attempts"] + 1, claimed_by=worker, claimed_at=ts, updated_at=ts)
            return row

    def finish_job(self, key: str, result_id: int | None) -> None:
        """Mark a job done with its result (an explanation id)."""
        ts = now()
        with self.tx():
            self.db.execute("update jobs set status = 'done', result_id = ?, last_error = null, claimed_at = ?, "
                            "updated_at = ? where key = ?", [result_id, ts, ts, key])

    def fail_job(self, key: str, error: str) -> int:
        """Mark a job failed with its error (one line); returns its attempts so far."""
        ts = now()
        with self.tx():
            self.db.execute("update jobs set status = 'failed', last_error = ?, updated_at = ? where key = ? and status != 'done'",
                            [error[:2000], ts, key])
            row = self.db.execute("select attempts from jobs where key = ?", [key]).fetchone()
        return int(row[0]) if row else 0

    def release_job(self, key: str, worker: str, *, undo_attempt: bool = True) -> None:
        """Give a claimed job back (pending again), e.g. when the budget ran out or on Ctrl-C;
        the attempt it counted is taken back unless undo_attempt=False."""
        ts = now()
        with self.tx():
            self.db.execute("update jobs set status = 'pending', claimed_by = null, claimed_at = null, updated_at = ?, "
                            f"attempts = {'max(attempts - 1, 0)' if undo_attempt else 'attempts'} "
                            "where key = ? and status = 'running' and claimed_by = ?", [ts, key, worker])

    def touch_jobs(self, keys: Sequence[str], worker: str) -> None:
        """Refresh the claim time of jobs this worker is running (a heartbeat: their claims stay
        fresh however long a unit takes)."""
        keys = list(keys)
        if not keys:
            return
        ts = now()
        with self.tx():
            for part in _chunks(keys):
                self.db.execute(f"update jobs set claimed_at = ? where status = 'running' and claimed_by = ? "
                                f"and key in ({', '.join('?' * len(part))})", [ts, worker, *part])

    def reset_failed_jobs(self, keys: Sequence[str]) -> int:
        """Make failed jobs among `keys` pending again with no attempts (for --retry-failed)."""
        keys = list(keys)
        n = 0
        ts = now()
        with self.tx():
            for part in _chunks(keys):
                before = self.db.conn.total_changes
                self.db.execute(f"update jobs set status = 'pending', attempts = 0, updated_at = ? where status = 'failed' "
                                f"and key in ({', '.join('?' * len(part))})", [ts, *part])
                n += self.db.conn.total_changes - before
        return n
