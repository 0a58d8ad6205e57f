"""`autointerp batch`: explain and score every unit of a model (mining what is missing), as
restartable jobs in the store. A thin wrapper around autointerp.batch.run_batch / plan_batch."""

from __future__ import annotations

import signal

import click

from . import cli
from ..score.metrics import is_calibrated
from ..errors import UsageError
from .common import (UnitKindNames, check_layers, check_min, emit, explain_options, json_option, llm_options, model_options,
                     settings, store_option)
from .sae import sae_options


def _sigterm_to_interrupt() -> None:
    """SIGTERM (systemd stop, scheduler preemption) ends the run like Ctrl-C: claims are given
    back at once. (kill -9 cannot be caught; its claims are taken over by the dead-pid rule.)"""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called in-process by a test)
        pass


def _fmt(v) -> str:
    return f"{v:+.3f}" if isinstance(v, (int, float)) else "-"


@cli.command("batch")
@click.option("--layers", default=None, help="Layers, e.g. 0-3 or 0,2,5 [default: all].")
@click.option("--units", "unit_kind", type=UnitKindNames(), default=None,
              help="Which units of those layers [default: neurons; with --sae: the SAE's latents].")
@click.option("--unit", "unit_ids", multiple=True, help="Only these units (L3/N42, or L1/F3 with --sae; repeatable or "
                                                        "comma-separated).")
@click.option("--limit", type=int, default=None, help="Do at most the first N units not done yet (in layer, index order; "
                                                      "SAE latents that never fired are not counted).")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Worker threads. Use the endpoint's parallelism for --llm openai:...; the embedded LLM runs one "
                   "forward pass at a time, so keep 1 there.")
@click.option("--max-cost-usd", type=float, default=None, help="Stop (exit 3) once the LLM cost reaches this; done work is kept.")
@click.option("--max-llm-tokens", type=int, default=None, help="Stop (exit 3) once this many LLM tokens were used.")
@click.option("--shard", default=None, help="i/n: take only units whose position in the ordered list is i mod n "
                                            "(one worker of n, each with its own --store; combine with `autointerp merge`).")
@click.option("--tokens", "n_tokens", type=int, default=None,
              help="Tokens to mine for layers with no mining run (and, if given, the run to use) [default: 100000].")
@click.option("--corpus", default=None, help="Corpus to mine [default: the offline gensim corpus].")
@click.option("--mined", "mined", default=None, metavar="STORE",
              help="Read the mining runs, records and statistics from this store (read-only, not copied) and mine "
                   "nothing; --store gets only the jobs, explanations, scores and LLM calls (an explain worker: "
                   "`merge` the mined store and the workers' stores afterwards).")
@explain_options
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples for score intervals.")
@click.option("--max-attempts", type=int, default=3, show_default=True, help="Attempts per unit before it is left failed.")
@click.option("--claim-timeout", type=float, default=1800.0, show_default=True,
              help="Seconds after which another host's unrefreshed claim is taken over.")
@click.option("--unit-timeout", type=click.FloatRange(min=0, min_open=True), default=900.0, show_default=True,
              help="Seconds one unit may take in LLM requests: no request of it runs past this (the unit then fails).")
@click.option("--retry-failed", is_flag=True, help="Give units left failed a fresh set of attempts.")
@click.option("--dry-run", is_flag=True, help="Only say what would run and its estimated LLM tokens and cost; write nothing.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr [default: when stderr is a terminal; "
                                                            "otherwise a log line per unit].")
@sae_options
@model_options
@llm_options
@store_option
@json_option
def batch_cmd(layers, unit_kind, unit_ids, limit, concurrency, max_cost_usd, max_llm_tokens, shard, n_tokens, corpus, mined, k, seed,
              style, simulator, scorers, explainer, n_boot, max_attempts, claim_timeout, unit_timeout, retry_failed, dry_run, progress,
              sae_specs, sae_name, model_spec, device, dtype, llm_spec, llm_base_url, store_path, as_json) -> None:
    """Explain and score every unit of a model, unattended: mines the layers that have no mining
    run, then for each unit not done yet explains it and scores the explanation (as `explain`
    does), one job per unit in the store. Safe to kill at any moment and run again: nothing done
    is redone, nothing is lost; several batch processes on one store share the work. Prints a
    summary (done, failed, skipped, simulation score distribution). Exit 3 when a budget ran out.

    With --sae PATH_OR_NAME the units are that SAE's (or transcoder's) latents L<layer>/F<i>@<name>,
    mined with it when no run has; latents that never fired are counted dead, not explained."""
    from ..batch import BatchOptions, parse_shard, plan_batch, run_batch
    from ..errors import AutointerpError, BudgetExceeded
    from ..pipeline import ExplainSettings

    s = settings(model=model_spec, device=device, dtype=dtype, llm=llm_spec, llm_base_url=llm_base_url, store=store_path,
                 max_llm_tokens=max_llm_tokens, max_cost_usd=max_cost_usd)
    es = ExplainSettings(seed=seed, style=style, simulator=simulator, n_boot=n_boot, explainer=explainer,
                         scorers=tuple(x.strip() for x in scorers.split(",") if x.strip()))
    es.check()
    check_layers("--layers", layers, s.model)
    check_min("--limit", limit)
    check_min("--concurrency", concurrency)
    check_min("--tokens", n_tokens, 64)
    check_min("--n-boot", n_boot, 10)
    check_min("--max-attempts", max_attempts)
    if k is not None:
        es.k = k
    ids = [u.strip() for part in unit_ids for u in part.split(",") if u.strip()] or None
    sae = None
    if sae_specs:
        if len(sae_specs) > 1:
            raise UsageError("batch takes one --sae at a time (run one batch per SAE; they share the store)")
        if unit_kind is not None:
            raise UsageError(f"--units {unit_kind} with --sae: an SAE batch does the SAE's latents; drop --units")
        sae = _resolve(sae_specs[0], s.store, sae_name)
    unit_kind = "latents" if sae is not None else (unit_kind or "neurons")
    o = BatchOptions(model=s.model, layers=layers, units=unit_kind, unit_ids=ids, limit=limit, shard=parse_shard(shard),
                     concurrency=concurrency, llm=s.llm, llm_base_url=s.llm_base_url, max_llm_tokens=s.max_llm_tokens,
                     max_cost_usd=s.max_cost_usd, n_tokens=n_tokens, corpus=corpus, mined=mined, max_attempts=max_attempts,
                     claim_timeout_s=claim_timeout, unit_timeout_s=unit_timeout, retry_failed=retry_failed, device=s.device, dtype=s.dtype, settings=es)
    if dry_run:
        summary = plan_batch(s.store, o, sae=sae)
        emit(as_json, summary.model_dump(), lambda: _print_plan(summary))
        return
    _sigterm_to_interrupt()
    summary = run_batch(s.store, o, progress=progress, sae=sae, config=s)
    data = summary.model_dump()
    data["calibration"] = _calibration(s.store, s.llm) if es.explainer == "llm" else None
    emit(as_json, data, lambda: _print_summary(summary, data["calibration"], es.explainer == "llm"))
    if summary.stopped:
        raise BudgetExceeded(summary.stopped)
    if summary.failed and not summary.done:
        first = summary.failures[0]["error"] if summary.failures else "?"
        raise AutointerpError(f"batch: every unit this run tried failed ({summary.failed} of {summary.failed}; "
                              f"first error: {str(first)[:160]})")


def _resolve(spec: str, store_path, name: str | None):
    """The SAE of --sae, named as the store names it (read-only: nothing is written before the run)."""
    from pathlib import Path

    from ..pipeline.saes import resolve_sae
    from ..store import Store

    p = Path(store_path)
    if not p.exists():
        return resolve_sae(spec, None, name)
    with Store(p, readonly=True, create=False) as st:
        return resolve_sae(spec, st, name)


def _statuses(d: dict) -> str:
    order = ["done", "running", "pending", "failed", "new", "dead"]
    return ", ".join(f"{k} {d[k]}" for k in order + sorted(set(d) - set(order)) if d.get(k)) or "none"


def _print_plan(s) -> None:
    what = f"latents of SAE {s.sae['name']}" if s.sae else "units"
    click.echo(f"dry run: {s.units} {what} of {s.model_id} selected (store {s.store}); jobs: {_statuses(s.before)}")
    more = f" ... (+{len(s.units_todo) - 10} more)" if len(s.units_todo) > 10 else ""
    click.echo(f"would do {s.todo} units" + (": " + ", ".join(s.units_todo[:10]) + more if s.units_todo else ""))
    if s.needs_mining:
        click.echo(f"would first mine layers {s.needs_mining}")
    e = s.estimate
    if e:
        per = e["per_unit"]
        click.echo(f"estimated LLM tokens ({s.llm}): {e['units']} units x {per['total']:,} = {e['total_tokens']:,} "
                   f"(prompt {e['prompt_tokens']:,}, completion {e['completion_tokens']:,}), cost ${e['cost_usd']:.4f}")
        click.echo(f"  per unit: explain {per['explain_prompt']:,}+{per['explain_completion']:,}, simulate "
                   f"{per['simulate_prompt']:,}+{per['simulate_completion']:,}, judges {per['judge_prompt']:,}+"
                   f"{per['judge_completion']:,} (prompt+completion; counted with {e['counted_with']}; based on {e['based_on']})")


def _calibration(store_path, llm_name: str) -> dict | None:
    """The latest stored calibration of this LLM's scorers (autointerp calibrate), or None."""
    from ..store import Store

    with Store(store_path, readonly=True, create=False) as st:
        got = st.calibrations(llm_name) if "calibrations" in st.db.table_names() else []
    return {"id": got[0]["id"], **(got[0]["results"].get("summary") or {})} if got else None


def _print_summary(s, calibration: dict | None = None, llm_scores: bool = False) -> None:
    what = (f"latents of SAE {s.sae['name']} ({s.sae['id'][:12]}, {s.sae['hook']})" if s.sae else "units")
    click.echo(f"batch: {s.units} {what} of {s.model_id}, LLM {s.llm}, store {s.store}"
               + (f" (mined run {s.mined})" if s.mined else ""))
    if s.dead:
        click.echo(f"  dead latents (never fired in the mining run, not explained): {s.dead}")
    click.echo(f"  this run: done {s.done}, failed {s.failed}, skipped {s.skipped}, remaining {s.remaining}"
               + (f" ({s.retries} attempts retried)" if s.retries else ""))
    click.echo(f"  jobs now: {_statuses(s.after)}")
    sc = s.scores
    if sc.get("n"):
        what = "exact-simulation score of the baseline" if sc.get("kind") == "simulation_exact" else "simulation score"
        if llm_scores:
            c = calibration or {}
            if c.get("simulation_auroc") is None:
                what += " (uncalibrated: no `autointerp calibrate` for this LLM in the store)"
            elif not is_calibrated(c.get("simulation_auroc_low") or 0):
                what += f" (uncalibrated: this LLM's simulation AUROC on planted units is {c['simulation_auroc']:.2f})"
        click.echo(f"  {what} over {sc['n']} done units: mean {_fmt(sc['mean'])}, median {_fmt(sc['median'])}, "
                   f"quartiles [{_fmt(sc['q1'])}, {_fmt(sc['q3'])}], range [{_fmt(sc['min'])}, {_fmt(sc['max'])}]")
    rate = f", {s.units_per_hour:.0f} units/hour" if s.units_per_hour else ""
    click.echo(f"  LLM tokens {s.tokens:,}, cost ${s.cost_usd:.4f}, {s.seconds:.1f} s{rate}")
    for f in s.failures[:10]:
        click.echo(f"  failed {f['unit']} ({f['attempts']} attempts): {f['error']}")
    if len(s.failures) > 10:
        click.echo(f"  ... {len(s.failures) - 10} more failed")
    if s.stopped:
        click.echo(f"  stopped early: {s.stopped}")
