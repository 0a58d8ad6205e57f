"""`autointerp pairs`: make, import, export and list counterfactual datasets."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from . import cli
from .common import (check_min, check_out_file, check_store_path, emit, force_option, json_option, llm_options, model_options, settings,
                     store_option)
from .common import load_subject


def _print_dataset(ds, out: Path | None) -> None:
    st = ds.stats
    click.echo(click.style(f"dataset {ds.name}", bold=True) + f": {ds.n_items} items  (task {ds.task!r}, {ds.source}, "
               f"validated on {ds.model_id})")
    if st:
        click.echo(f"  candidates {st.get('candidates', '?')}, accepted {st.get('accepted', '?')}, kept {st.get('kept', ds.n_items)}"
                   f"  (margin {st.get('margin')})")
        rej = st.get("rejected") or {}
        if rej:
            from ..tasks.llm_pairs import describe

            click.echo("  rejected: " + describe(rej))
        if st.get("llm_calls") is not None:
            click.echo(f"  {st['llm_calls']} LLM call(s), {st.get('seconds')} s" + (f"; stopped: {st['stopped']}" if st.get("stopped") else ""))
        for ex in (st.get("examples") or [])[:3]:
            click.echo(f"  rejected e.g. {ex['clean']!r} -> {ex['answer']!r} vs {ex['wrong']!r}: {ex['why']}")
        if st.get("map"):
            click.echo("  the LLM's map (validation checks that the model follows it, not that it is true): "
                       + ", ".join(f"{x} -> {a}" for x, a in st["map"].items()))
    for it in ds.items[:3]:
        click.echo(f"  {it.clean!r} -> {it.answer!r} vs {it.wrong!r}   (LD {it.clean_logit_diff})")
        click.echo(f"  {it.corrupt!r}   (LD {it.corrupt_logit_diff})")
    if out:
        click.echo(f"  written to {out}")


@cli.command("pairs")
@click.option("--task", default=None, help="A built-in task (ioi, greater_than, pronouns, successor, capitals) or a task "
                                          "described in words (the LLM writes templates and fillers).")
@click.option("--n", "n", type=int, default=100, show_default=True, help="Items wanted (validated).")
@click.option("--name", default=None, help="Dataset name [default: the task name, or a slug of the description / file].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--margin", type=float, default=None,
              help="Minimum drop of the logit difference under corruption [default: 1.0 for --task, 0 for --import].")
@click.option("--import", "import_path", type=click.Path(path_type=Path), default=None,
              help="Import a .jsonl or auto-circuit .json file (validated; all or nothing).")
@click.option("--dataset", "dataset_name", default=None, help="An existing dataset (to --out it again).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the dataset to this file.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "auto-circuit"]), default="jsonl", show_default=True,
              help="Format of --out.")
@click.option("--replace", is_flag=True, help="Replace a dataset of the same name (and its patching runs).")
@click.option("--list", "list_", is_flag=True, help="List the stored datasets.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Prompts per forward pass in validation.")
@force_option
@click.option("--max-llm-calls", type=int, default=6, show_default=True,
              help="A described task: at most this many LLM calls, in rounds of 2 (templates and slot values, "
                   "then the answer for each value).")
@click.option("--time-budget", type=float, default=300.0, show_default=True,
              help="A described task: no new LLM call after this many seconds.")
@model_options
@llm_options
@store_option
@json_option
def pairs_cmd(task, n, name, seed, margin, import_path, dataset_name, out, fmt, replace, list_, batch_size, force,
              max_llm_calls, time_budget, model_spec, device, dtype, llm_spec, llm_base_url, store_path, as_json) -> None:
    """Counterfactual datasets for patching: (clean, corrupt, answer, wrong) items, each validated
    on the subject model (same token count, differing only at the edit, single-token answers, the
    model prefers the answer on clean, and the corruption lowers the logit difference by --margin).
    Prints acceptance counts per rejection reason.

    \b
      autointerp pairs --task ioi --n 200 --out ioi.jsonl
      autointerp pairs --task "subject-verb agreement: ..." --n 100 --llm openai:gpt-4o-mini
      autointerp pairs --import mine.jsonl --name mine
      autointerp pairs --dataset ioi --out ioi.json --format auto-circuit
    """
    from ..store import Store
    from ..tasks import export_dataset, get_dataset, import_dataset, make_dataset

    modes = [x for x in (task, import_path, dataset_name) if x]
    check_min("--n", n, 1)
    check_min("--batch-size", batch_size, 1)
    from ..tasks.llm_pairs import CALLS_PER_ROUND

    check_min("--max-llm-calls", max_llm_calls, CALLS_PER_ROUND)
    if not time_budget > 0:
        raise UsageError(f"--time-budget must be positive, not {time_budget:g}")
    check_out_file("--out", out, force=force)
    if list_:
        if modes:
            raise UsageError("--list takes no --task/--import/--dataset")
        s = settings(store=store_path)
        if not Path(s.store).exists():
            rows = []                                   # nothing stored yet; a listing creates no store
        else:
            with Store(s.store, readonly=True, create=False) as store:
                rows = store.list_datasets()

        def human() -> None:
            if not rows:
                click.echo("no datasets (make one: autointerp pairs --task ioi)")
            for r in rows:
                click.echo(f"{r['name']:<24} {r['n_items']:>5} items  {r['source']:<8} {r['task'][:40]!r:<42} {r['model_id']}")

        emit(as_json, rows, human)
        return
    if len(modes) != 1:
        raise UsageError("give one of --task, --import FILE, --dataset NAME (or --list)")
    s = settings(model=model_spec, device=device, dtype=dtype, llm=llm_spec, llm_base_url=llm_base_url, store=store_path)
    if import_path is not None:
        from ..tasks import read_items

        if not Path(import_path).is_file():
            raise UsageError(f"--import {import_path}: no such file")
        read_items(import_path)                     # a malformed file fails before the store or the model is touched
    check_store_path(s.store, must_exist=bool(dataset_name))   # --dataset only reads
    store = Store(s.store, create=not dataset_name)
    if dataset_name:
        ds = get_dataset(store, dataset_name)
    else:
        if not replace:                 # a name that is taken fails here, before the model loads
            from ..tasks.api import slugify
            from ..tasks.builtin import builtin_name

            intended = name or (slugify(Path(import_path).stem) if import_path else (builtin_name(task) or slugify(task)))
            if intended in {r["name"] for r in store.list_datasets()}:
                raise UsageError(f"dataset {intended!r} exists: pick another --name, pass --replace, or use "
                                 f"--dataset {intended} to read it (e.g. with --out)")
        hm = load_subject(model_spec, device, dtype)
        if import_path:
            ds = import_dataset(store, hm, import_path, name=name, margin=margin, batch_size=batch_size, replace=replace)
        else:
            llm = None
            from ..tasks.builtin import builtin_name

            if builtin_name(task) is None:
                from ..llm import get_llm

                llm = get_llm(s.llm, store=store, base_url=s.llm_base_url, settings=s)
            ds = make_dataset(store, hm, task, n, name=name, seed=seed, margin=1.0 if margin is None else margin,
                              llm=llm, batch_size=batch_size, replace=replace, max_llm_calls=max_llm_calls,
                              time_budget=time_budget, progress=lambda m: click.echo(m, err=True))
    if out:
        export_dataset(ds, out, fmt, force=force)
    data = {"name": ds.name, "task": ds.task, "source": ds.source, "model_id": ds.model_id, "n_items": ds.n_items,
            "stats": ds.stats, "out": str(out) if out else None}
    emit(as_json, data, lambda: _print_dataset(ds, out))
