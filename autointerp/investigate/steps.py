"""Stored, resumable steps. A step's key is a content hash of its name, the pipeline version and
its inputs (which name the keys of the steps it depends on); a stored step with that key (from
this or any earlier investigation) is reused instead of recomputed, so a killed run resumes at
the first step that is not done and a re-run with changed settings redoes only what they touch."""

from __future__ import annotations

import time
from typing import Any, Callable

from ..core.keys import content_hash

VERSION = "investigate-v1"


class Steps:
    def __init__(self, store, inv_id: str, *, rerun: bool = False, log: Callable[[str], None] | None = None):
        self.store, self.inv_id, self.rerun = store, inv_id, rerun
        self.log = log or (lambda msg: None)
        self.timings: dict[str, dict] = {}
        self.keys: dict[str, str] = {}

    def key(self, name: str, inputs: dict) -> str:
        return content_hash(VERSION, name, inputs)

    def run(self, name: str, inputs: dict, fn: Callable[[], dict], *, valid: Callable[[dict], bool] | None = None) -> dict:
        """The step's result: stored (reused) or computed now and stored. `valid(result)` may
        reject a stored result (e.g. when what it points to was deleted from the store)."""
        key = self.key(name, inputs)
        self.keys[name] = key
        t0 = time.perf_counter()
        if not self.rerun:
            row = self.store.get_investigation_step(key)
            if row is not None and (valid is None or valid(row["result"])):
                self.store.put_investigation_step(self.inv_id, name, key, row["result"], row["seconds"])
                self.timings[name] = {"seconds": round(time.perf_counter() - t0, 3), "reused": True,
                                      "computed_seconds": row["seconds"]}
                self.log(f"{name}: reused (stored step {key[:8]})")
                return row["result"]
        self.log(f"{name}: running")
        c0 = time.process_time()
        result = fn()
        secs = round(time.perf_counter() - t0, 3)
        cpu = round(time.process_time() - c0, 3)
        self.store.put_investigation_step(self.inv_id, name, key, result, secs)
        self.timings[name] = {"seconds": secs, "cpu_seconds": cpu, "reused": False}
        self.log(f"{name}: done in {secs:.1f} s (cpu {cpu:.1f} s)")
        return result

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        """A step that is not stored (cheap, always redone), timed like the others."""
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.timings[name] = {"seconds": round(time.perf_counter() - t0, 3),
                              "cpu_seconds": round(time.process_time() - c0, 3), "reused": False}
        return out
