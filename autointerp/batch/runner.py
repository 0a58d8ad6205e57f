"""run_batch / plan_batch: explain and score every unit of a model, unattended and restartable.

    from autointerp.batch import BatchOptions, run_batch
    summary = run_batch("store/autointerp.db", BatchOptions(model="smollm2-135m", layers="3", limit=4))

How it survives anything:
  * one job row per unit (store `jobs`), keyed by a content hash of what determines its result
    (batch/plan.py); the work itself is explain_exemplars, whose stored rows are keyed too, so a
    unit redone after a crash finds its explanation and scores and calls no LLM;
  * a worker claims a job in a BEGIN IMMEDIATE transaction; `running` jobs of a dead process
    (same host, pid gone) or with a claim older than claim_timeout_s (claims of live workers
    are refreshed by a heartbeat) are taken over; so kill -9 at any moment, then the same
    command again, redoes nothing done and loses nothing;
  * a failed unit (LLMError, anything but the budget) is retried later in the run, up to
    max_attempts over all runs, then left `failed` with its error; BudgetExceeded stops every
    worker after its unit, gives the unfinished job back and returns (the CLI exits 3).

Concurrency: K worker threads, each with its own store connection, share one LLM object and one
Budget. Remote endpoints (openai backend: vLLM, llama.cpp server, OpenAI) serve K requests at
once, so K ~ the server's parallelism is the knob that matters there. The embedded LLM is not
thread-safe for parallel forward passes: its backend serialises every call with a per-model
lock, so with the embedded LLM K > 1 only overlaps the CPU work between calls (scoring, store
writes) and K = 1 is the sensible choice.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import AutointerpError, BudgetExceeded, StoreError, UsageError
from ..core.stats import summary
from ..core.units import Unit
from ..llm.deadline import deadline as llm_deadline
from .plan import (STAGE, BatchOptions, UnitJob, check_options, is_todo, layer_runs, llm_name, mark_dead, plan_jobs,
                   select_units, template_hashes, unit_kind)


class BatchSummary(BaseModel):
    store: str
    model_id: str
    llm: str
    dry_run: bool = False
    units: int = 0                          # units selected (after --layers/--unit/--shard)
    before: dict[str, int] = {}             # their job statuses before the run ('new': no job yet)
    todo: int = 0                           # units this run set out to do (after --limit)
    done: int = 0                           # done by this run
    failed: int = 0                         # left failed (attempts used up) by this run
    retries: int = 0                        # failed attempts that were retried in this run
    skipped: int = 0                        # selected but not this run's: already done, failed for good,
                                            # beyond --limit, or taken by another worker
    dead: int = 0                           # SAE latents that never fired in their run (not explained)
    sae: dict | None = None                 # the SAE whose latents these are (name, id, hook, d_sae, ...)
    remaining: int = 0                      # to do but not finished (budget reached, interrupted)
    after: dict[str, int] = {}              # job statuses of the selected units after the run
    scores: dict[str, Any] = {}             # simulation score distribution over the selected done units
    tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    units_per_hour: float | None = None
    mined: str | None = None                # the mining run made by this run, if any
    needs_mining: list[int] = []            # dry run: layers with no mining run yet
    stopped: str | None = None              # why the run stopped early (budget)
    failures: list[dict] = []               # units failed for good: unit, attempts, error
    units_todo: list[str] = []              # dry run: the units that would run
    estimate: dict | None = None            # dry run: estimated tokens and cost


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def make_is_stale(me: str, timeout_s: float):
    """A running claim is stale when its process is gone (same host, pid not alive) or its claim
    time (refreshed by the owner's heartbeat) is older than timeout_s."""
    host = socket.gethostname()

    def is_stale(row: dict) -> bool:
        by = row.get("claimed_by") or ""
        if by == me:
            return False  # ours: one of this process's threads holds it
        h, _, p = by.rpartition(":")
        if h == host and p.isdigit() and not _pid_alive(int(p)):
            return True
        try:
            t = datetime.fromisoformat(row["claimed_at"])
        except (TypeError, ValueError):
            return True
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return (datetime.now(timezone.utc) - t).total_seconds() > timeout_s

    return is_stale


def score_stats(values: list[float]) -> dict:
    s = summary(values)
    if not s["n"]:
        return {"n": 0}
    return {"n": s["n"], **{k: round(s[k], 4) for k in ("mean", "median", "q1", "q3", "min", "max")}}


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:500]


# ---- shared planning ---------------------------------------------------------------------------
def _model_sizes(path: Path, model_id: str, o: BatchOptions, hm):
    """The model's sizes: from the store when it knows the model, else from the loaded model.
    An existing store is opened read-only here (a foreign file is refused untouched)."""
    from ..store import Store

    sizes = None
    if path.exists():
        ro = Store(path, readonly=True, create=False)
        try:
            sizes = ro.get_model(model_id)
        finally:
            ro.close()
    if sizes is None:
        if hm is None:
            from ..models.hooked import HookedModel

            hm = HookedModel.load(model_id, device=o.device, dtype=o.dtype)
        sizes = hm.info()
    return sizes, hm


def _mined_path(o: BatchOptions, path: Path) -> Path | None:
    """--mined: the mined store the runs, records and statistics are read from (read-only); it
    must exist and must not be the batch's own store."""
    if not o.mined:
        return None
    m = Path(o.mined)
    if not m.is_file():
        raise StoreError(f"no mined store at {m} (--mined: `autointerp mine` there, or `merge` its shards, first)")
    if path.exists() and m.resolve() == path.resolve():
        raise UsageError("--mined names the batch's own --store: drop --mined, or give this worker its own --store")
    return m


def _check_mined(src, mined: Path, layers, runs: dict[int, str]) -> None:
    """With --mined, every selected layer has a finished run in the mined store (the worker mines nothing)."""
    missing = [L for L in layers if L not in runs]
    if missing:
        raise UsageError(f"{mined} has no finished mining run of layer(s) {', '.join(map(str, missing))} with these "
                         "settings (--mined: the worker mines nothing; mine them there, or check --corpus/--tokens)")


def _quiet_loading(tty: bool) -> None:
    """Off a terminal (cron logs, captured output), no transformers progress bars."""
    if tty:
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _counts(jobs: list[UnitJob]) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in jobs:
        out[j.status] = out.get(j.status, 0) + 1
    return out


def _todo(jobs: list[UnitJob], o: BatchOptions) -> list[UnitJob]:
    todo = [j for j in jobs if is_todo(j, o.max_attempts, o.retry_failed)]
    return todo[: o.limit] if o.limit is not None else todo


def _synthetic_exemplars(unit: str, model_id: str, context_len: int = 64):
    """Stand-in records of the default mining shape, for a dry-run estimate before any mining."""
    from ..mine.records import ActivationRecord, UnitExemplars, UnitStats

    toks = [" word"] * (context_len - 1)

    def rec(i, kind, peak):
        acts = [0.0] * len(toks)
        acts[i % len(toks)] = peak
        return ActivationRecord(ctx_idx=i, kind=kind, bin=i, tokens=toks, acts=acts, max_act=peak)

    return UnitExemplars(model_id=model_id, run_id="-", unit=unit, stats=UnitStats(max_act=1.0),
                         top=[rec(i, "top", 1.0 - i / 100) for i in range(40)],
                         quantiles=[rec(100 + i, "quantile", 0.3) for i in range(20)],
                         random=[rec(200 + i, "random", 0.1) for i in range(20)])


# ---- dry run -----------------------------------------------------------------------------------
def _sae_info(sae) -> dict | None:
    if sae is None:
        return None
    return {k: v for k, v in sae.info().items() if k in ("id", "name", "hook", "hook_out", "architecture", "d_in", "d_sae",
                                                          "normalize_activations", "path")}


def plan_batch(store_path: str | Path, o: BatchOptions, *, hm=None, sae=None) -> BatchSummary:
    """What run_batch would do: the selected units' job statuses, the units to do, layers that
    need mining, and the estimated LLM tokens and cost. Writes nothing (the store is opened
    read-only, and only when it exists). sae: the SAE whose latents a units='latents' batch does."""
    from ..mine import load_exemplars
    from ..store import Store
    from .estimate import estimate, token_counter

    check_options(o, sae)
    path = Path(store_path)
    model_id = o.model
    _quiet_loading(sys.stderr.isatty())
    mined = _mined_path(o, path)
    sizes, hm = _model_sizes(mined or path, model_id, o, hm)
    store = Store(path, readonly=True, create=False) if path.exists() else None
    src = Store(mined, readonly=True, create=False) if mined else None
    rd = src or store                       # where the runs, records and statistics are read
    try:
        if sae is not None and rd is not None:
            sae.name = rd.sae_name_for(sae.id, sae.name)
        units = select_units(o, sizes, sae)
        layers = sorted({u.layer for u in units})
        runs = layer_runs(rd, model_id, layers, unit_kind(o), o, sae)
        if mined:
            _check_mined(src, mined, layers, runs)
        jobs = plan_jobs(store, model_id, units, runs, o, template_hashes(), sae)
        dead = mark_dead(rd, jobs) if rd is not None else 0
        todo = _todo(jobs, o)
        summary = BatchSummary(store=str(path), model_id=model_id, llm=llm_name(o.llm), dry_run=True, units=len(units),
                               before=_counts(jobs), todo=len(todo), skipped=len(units) - len(todo) - dead, dead=dead,
                               sae=_sae_info(sae),
                               needs_mining=sorted({j.layer for j in todo if j.run_id is None}),
                               units_todo=[j.unit for j in todo])
        if todo:
            count, counted_with = token_counter(o.llm)
            first = next((j for j in todo if j.run_id is not None), None)
            if first is not None:
                ex = load_exemplars(rd, first.run_id, first.unit)
            else:
                ex = _synthetic_exemplars(todo[0].unit, model_id)
                counted_with += "; records not mined yet, so stand-in records of the default shape"
            summary.estimate = estimate(ex, len(todo), o.llm, o.settings, count, counted_with)
        return summary
    finally:
        for st in (store, src):
            if st is not None:
                st.close()


# ---- the run -----------------------------------------------------------------------------------
class _Run:
    def __init__(self, path: Path, o: BatchOptions, model_id: str, llm, budget, me: str, mined: Path | None = None):
        self.path, self.o, self.model_id, self.llm, self.budget, self.me = path, o, model_id, llm, budget, me
        self.mined = mined                  # --mined: records are read there (read-only), results written to path
        self.queue: deque[UnitJob] = deque()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stopped: str | None = None
        self.events: queue.Queue = queue.Queue()
        self.inflight: set[str] = set()
        self.is_stale = make_is_stale(me, o.claim_timeout_s)

    def next_job(self) -> UnitJob | None:
        with self.lock:
            return self.queue.popleft() if self.queue and not self.stop.is_set() else None

    def worker(self) -> None:
        from ..pipeline import explain_exemplars
        from ..mine import load_exemplars
        from ..store import Store

        try:
            store = Store(self.path)
        except BaseException as e:  # noqa: BLE001
            self.events.put(("crash", None, _one_line(e), 0))
            return
        try:
            rd = Store(self.mined, readonly=True, create=False) if self.mined else store
        except BaseException as e:  # noqa: BLE001
            store.close()
            self.events.put(("crash", None, _one_line(e), 0))
            return
        try:
            while True:
                j = self.next_job()
                if j is None:
                    break
                row = store.claim_job(j.key, self.me, max_attempts=self.o.max_attempts, is_stale=self.is_stale)
                if row is None:
                    self.events.put(("skip", j, None, 0))
                    continue
                with self.lock:
                    self.inflight.add(j.key)
                t0 = time.perf_counter()
                try:
                    ex = load_exemplars(rd, j.run_id, j.unit)
                    with llm_deadline(time.monotonic() + self.o.unit_timeout_s):   # a per-unit bound on every LLM request
                        res = explain_exemplars(store, ex, self.llm, model_id=self.model_id, settings=self.o.settings)
                    e = res.explanation or res.baseline        # --explainer baseline: the baseline is the result
                    store.finish_job(j.key, e.id)
                    sim = e.scores.get("simulation") if res.explanation else e.scores.get("simulation_exact")
                    self.events.put(("done", j, sim.value if sim else None, time.perf_counter() - t0))
                except BudgetExceeded as e:
                    store.release_job(j.key, self.me)
                    with self.lock:
                        self.stopped = self.stopped or str(e)
                        self.queue.appendleft(j)
                    self.stop.set()
                    self.events.put(("budget", j, str(e), 0))
                except Exception as e:  # noqa: BLE001 - any failure of one unit is that unit's
                    err = _one_line(e)
                    attempts = store.fail_job(j.key, err)
                    if attempts < self.o.max_attempts:
                        with self.lock:
                            self.queue.append(j)  # try again after the others
                        self.events.put(("retry", j, err, attempts))
                    else:
                        self.events.put(("failed", j, err, attempts))
                finally:
                    with self.lock:
                        self.inflight.discard(j.key)
        finally:
            store.close()
            if rd is not store:
                rd.close()
            self.events.put(("exit", None, None, 0))


def run_batch(store_path: str | Path, o: BatchOptions, *, hm=None, llm=None, progress: bool | None = None,
              log=None, sae=None, config=None) -> BatchSummary:
    """Mine what is missing, then explain and score every selected unit not done yet (see the
    module doc). Returns a BatchSummary; `summary.stopped` is set when the budget ran out.
    `progress`: a tqdm bar on stderr (None: only when stderr is a terminal; otherwise a log line
    per unit goes to `log`, default stderr). sae (with o.units == 'latents'): the SAE (a
    models.sae.SAE, its name the store's) whose latents are the units; its layer is mined with it
    in the pass when no run has mined it, and latents that never fired are counted `dead`. config:
    the resolved config.Settings for the LLM's other defaults (timeouts, concurrency; the CLI's;
    None: the library defaults); o's device, dtype and base URL take precedence."""
    from ..llm import Budget, get_llm
    from ..store import Store

    t_start = time.perf_counter()
    check_options(o, sae)
    path = Path(store_path)
    model_id = o.model
    log = log or sys.stderr
    tty = progress if progress is not None else sys.stderr.isatty()
    _quiet_loading(tty)
    mined_path = _mined_path(o, path)
    sizes, hm = _model_sizes(mined_path or path, model_id, o, hm)
    units = select_units(o, sizes, sae)          # bad units are refused before the store is touched
    kind = unit_kind(o)

    src = Store(mined_path, readonly=True, create=False) if mined_path else None
    try:
        if src is not None:                      # --mined: refused before the worker's store is made
            layers = sorted({u.layer for u in units})
            _check_mined(src, mined_path, layers, layer_runs(src, model_id, layers, kind, o, sae))
        store = Store(path)
    except BaseException:
        if src is not None:
            src.close()
        raise
    rd = src or store                            # where the runs, records and statistics are read
    try:
        if sae is not None and rd.sae_name_for(sae.id, sae.name) != sae.name:
            sae.name = rd.sae_name_for(sae.id, sae.name)   # the store's name for it (unit ids L6/F12@name)
            units = select_units(o, sizes, sae)
        layers = sorted({u.layer for u in units})
        runs = layer_runs(rd, model_id, layers, kind, o, sae)
        templates = template_hashes()
        jobs = plan_jobs(store, model_id, units, runs, o, templates, sae)
        mark_dead(rd, jobs)
        before = _counts(jobs)
        if o.retry_failed:
            store.reset_failed_jobs([j.key for j in jobs if j.key and j.status == "failed"])
        todo = _todo(jobs, o)
        mined = None
        need = sorted({j.layer for j in todo if j.run_id is None})
        if need and src is not None:
            _check_mined(src, mined_path, need, {})
        if need:
            from ..mine import DEFAULT_TOKENS, mine

            if hm is None:
                from ..models.hooked import HookedModel

                hm = HookedModel.load(model_id, device=o.device, dtype=o.dtype)
            kw: dict[str, Any] = {"n_tokens": o.n_tokens or DEFAULT_TOKENS, "layers": need, "units": o.units,
                                  "progress": bool(tty)}
            if sae is not None:
                kw["saes"] = [sae]
            if o.corpus:
                kw["corpus"] = o.corpus
            print(f"batch: mining layers {need} of {model_id} ({kw['n_tokens']} tokens)", file=log, flush=True)
            mined = mine(hm, store, **kw)
            fresh = plan_jobs(store, model_id, [Unit.parse(j.unit) for j in jobs if j.run_id is None and j.layer in need],
                              {L: mined for L in need}, o, templates, sae)
            mark_dead(store, fresh)        # latents that never fired in the new run: not to do, nor counted in --limit
            by_unit = {j.unit: j for j in fresh}
            jobs = [by_unit.get(j.unit, j) for j in jobs]
            todo = _todo(jobs, o)
        if src is not None:       # the rows the explanations point at (run, corpus, model), not the records
            store.copy_runs_from(mined_path, {j.run_id for j in todo if j.run_id})
        store.ensure_jobs([{"key": j.key, "model_id": model_id, "unit": j.unit, "stage": STAGE} for j in todo])

        summary = BatchSummary(store=str(path), model_id=model_id, llm=llm_name(o.llm), units=len(units), before=before,
                               todo=len(todo), mined=mined, sae=_sae_info(sae))
        budget = Budget(o.max_llm_tokens, o.max_cost_usd)
        llm_store = None
        if todo and o.settings.explainer == "llm":
            if llm is None:
                from ..config import Settings
                from ..pipeline import make_llm

                llm_store = Store(path)  # the LLM's own connection (its calls come from every worker thread)
                given = {"device": o.device, "dtype": o.dtype, "llm_base_url": o.llm_base_url}
                cfg = (config if config is not None else Settings.defaults()).model_copy(
                    update={k: v for k, v in given.items() if v is not None})
                llm = make_llm(o.llm, store=llm_store, base_url=o.llm_base_url, budget=budget, settings=cfg, hm=hm)
            elif getattr(llm, "budget", None) is None:
                llm.budget = budget
            else:
                budget = llm.budget
        run = _Run(path, o, model_id, llm, budget, worker_id(), mined_path)
        run.queue.extend(todo)
        try:
            _drive(run, summary, len(todo), tty, log)
        finally:
            if llm_store is not None:
                llm_store.close()
        summary.stopped = run.stopped
        summary.remaining = len(run.queue) if run.stopped else 0
        # the picture after the run, over all selected units
        final = plan_jobs(store, model_id, units, {**runs, **({L: mined for L in need} if mined else {})}, o, templates, sae)
        summary.dead = mark_dead(rd, final)
        keys = [j.key for j in final if j.status != "dead"]
        rows = store.jobs_by_key([k for k in keys if k])
        summary.after = _counts(final)
        kind = "simulation" if o.settings.explainer == "llm" else "simulation_exact"
        summary.scores = score_stats(list(store.job_scores([k for k in keys if k], kind=kind).values()))
        summary.scores["kind"] = kind
        summary.failures = [{"unit": r["unit"], "attempts": r["attempts"], "error": r["last_error"]}
                            for k in keys if k and (r := rows.get(k)) and r["status"] == "failed"][:100]
        summary.skipped = len(units) - len(todo) - summary.dead + summary.skipped
        summary.tokens, summary.cost_usd = budget.tokens, round(budget.cost_usd, 6)
        summary.seconds = round(time.perf_counter() - t_start, 2)
        if summary.done and summary.seconds > 0:
            summary.units_per_hour = round(summary.done / summary.seconds * 3600, 1)
        return summary
    finally:
        store.close()
        if src is not None:
            src.close()


def _drive(run: _Run, summary: BatchSummary, total: int, tty: bool, log) -> None:
    """Start the workers, show progress, heartbeat the claims, and collect what they report."""
    from ..store import Store

    if total == 0:
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="unit", desc="batch", file=sys.stderr, dynamic_ncols=True, disable=not tty, leave=False)
    n_threads = min(run.o.concurrency, total)
    threads = [threading.Thread(target=run.worker, name=f"batch-{i}", daemon=True) for i in range(n_threads)]
    hb_store = Store(run.path)
    t0 = time.perf_counter()
    beat = max(1.0, min(60.0, run.o.claim_timeout_s / 4))
    last_beat = time.monotonic()
    alive = n_threads
    finished = 0
    try:
        for t in threads:
            t.start()
        while alive:
            try:
                ev, j, info, extra = run.events.get(timeout=min(beat, 1.0))
            except queue.Empty:
                ev = None
            if time.monotonic() - last_beat >= beat:
                with run.lock:
                    keys = list(run.inflight)
                hb_store.touch_jobs(keys, run.me)
                last_beat = time.monotonic()
            if ev is None:
                continue
            if ev == "exit":
                alive -= 1
                continue
            if ev == "crash":
                raise StoreError(f"a batch worker could not open the store: {info}")
            if ev == "done":
                summary.done += 1
            elif ev == "failed":
                summary.failed += 1
            elif ev == "retry":
                summary.retries += 1
            elif ev == "skip":
                summary.skipped += 1
            if ev in ("done", "failed", "skip"):
                finished += 1
                bar.update(1)
            mins = (time.perf_counter() - t0) / 60
            rate = summary.done / mins if mins > 0 else 0.0
            bar.set_postfix_str(f"{rate:.1f} units/min, {run.budget.tokens} tok, ${run.budget.cost_usd:.4f}"
                                + (f", {summary.failed} failed" if summary.failed else ""), refresh=False)
            if not tty and ev in ("done", "failed", "retry", "budget"):
                what = {"done": lambda: "done" + (f" sim r={info:+.3f}" if isinstance(info, float) else "") + f" ({extra:.1f}s)",
                        "failed": lambda: f"FAILED after {extra} attempts: {info}",
                        "retry": lambda: f"attempt {extra} failed, will retry: {info}",
                        "budget": lambda: f"stopped: {info}"}[ev]()
                print(f"batch: [{finished}/{total}] {j.unit} {what} | {rate:.1f} units/min, {run.budget.tokens} tok, "
                      f"${run.budget.cost_usd:.4f}", file=log, flush=True)
    except BaseException:
        run.stop.set()
        with run.lock:
            keys = list(run.inflight)
        for k in keys:  # give unfinished claims back at once (a kill -9 leaves them to the dead-pid rule)
            try:
                hb_store.release_job(k, run.me)
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        bar.close()
        hb_store.close()
