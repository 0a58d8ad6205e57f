"""Store methods for llm_calls (one row per LLM call, cache hits and failures included) and
llm_cache (responses of deterministic calls, keyed by a content hash of the request)."""

from __future__ import annotations

import json
import threading
from typing import Any

from .base import now

_LOCK = threading.RLock()  # LLM calls may come from several threads (map_chat, async helpers)


class LLMMixin:
    def record_llm_call(self, backend: str, model: str, kind: str, template: str | None = None,
                        template_hash: str | None = None, prompt_tokens: int | None = None,
                        completion_tokens: int | None = None, latency_s: float | None = None,
                        cost_usd: float | None = None, cache_hit: bool = False, error: str | None = None) -> int:
        row = dict(backend=backend, model=model, kind=kind, template=template, template_hash=template_hash,
                   prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_s=latency_s,
                   cost_usd=cost_usd, cache_hit=int(bool(cache_hit)), error=error, created_at=now())
        with _LOCK, self.tx():   # plain SQL: sqlite-utils' insert reads the table's columns on every call
            return self.db.conn.execute(f"insert into llm_calls ({', '.join(row)}) values ({', '.join('?' * len(row))})",
                                        list(row.values())).lastrowid

    def llm_cache_get(self, key: str) -> Any | None:
        with _LOCK:
            row = self.db.execute("select response_json from llm_cache where key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else None

    def llm_cache_put(self, key: str, backend: str, model: str, response: Any) -> None:
        with _LOCK, self.tx():
            self.db.execute(
                "insert into llm_cache(key, backend, model, response_json, created_at) values (?, ?, ?, ?, ?) "
                "on conflict(key) do nothing",
                [key, backend, model, json.dumps(response, separators=(",", ":")), now()])

    def llm_calls(self, *, backend: str | None = None, model: str | None = None, limit: int | None = None) -> list[dict]:
        sql, args = "select * from llm_calls where 1=1", []
        if backend:
            sql, args = sql + " and backend = ?", args + [backend]
        if model:
            sql, args = sql + " and model = ?", args + [model]
        sql += " order by id"
        if limit:
            sql += f" limit {int(limit)}"
        with _LOCK:
            return self.query(sql, args)

    def llm_usage(self) -> dict:
        """Totals over llm_calls: calls, cache hits, errors, tokens and cost of calls actually made."""
        with _LOCK:
            row = self.query(
                "select count(*) calls, coalesce(sum(cache_hit),0) cache_hits, count(error) errors, "
                "coalesce(sum(case when cache_hit=0 then coalesce(prompt_tokens,0)+coalesce(completion_tokens,0) end),0) tokens, "
                "coalesce(sum(cost_usd),0) cost_usd from llm_calls")[0]
        return row
