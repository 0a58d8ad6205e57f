"""`autointerp investigate`: the orchestrator (task -> dataset -> circuit -> tests -> report)."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from .common import check_fraction, check_min, check_out_dir, check_store_path, emit, run_options, settings
from .common import load_subject


@cli.command("investigate")
@click.option("--task", default=None, help="A built-in task (ioi, greater_than, pronouns, successor, capitals) or a task "
                                          "described in words (the LLM writes the counterfactual pairs).")
@click.option("--dataset", default=None, help="Use this stored dataset (name) or .jsonl / auto-circuit file instead.")
@click.option("--n", "n", type=int, default=32, show_default=True, help="Prompt pairs (validated) to build.")
@click.option("--top", type=int, default=5, show_default=True, help="Heads in the circuit.")
@click.option("--n-mlp", type=int, default=1, show_default=True, help="MLP layers in the circuit (neuron-patched: the first).")
@click.option("--explain", "n_explain", type=int, default=2, show_default=True,
              help="Top neurons explained and scored by the neuron pipeline (0: none).")
@click.option("--mine-tokens", type=int, default=4096, show_default=True,
              help="Corpus tokens mined for the explained neurons' layer.")
@click.option("--no-validate", is_flag=True, help="Skip the causal validation of the neuron explanations.")
@click.option("--no-prose", is_flag=True, help="No LLM prose: the summary is the code-written template.")
@click.option("--budget-usd", type=float, default=None, help="Stop asking the LLM once this much is spent (stored work kept).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True,
              help="Folder for README.md and the PNG figures.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--margin", type=float, default=1.0, show_default=True, help="Pair validation margin (logit diff drop).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Items per batch.")
@click.option("--max-batch", type=int, default=256, show_default=True, help="Rows per forward pass when batching patches.")
@click.option("--edges", "edges", type=click.Choice(["eap", "eap-ig"]), default=None,
              help="Also find the edge-level circuit (edge attribution patching, pruned to --edge-target "
                   "faithfulness measured by running it); stored as `autointerp circuit` stores it.")
@click.option("--edge-target", type=float, default=0.8, show_default=True,
              help="--edges: keep the top edges until the circuit recovers this fraction of the logit difference.")
@run_options("Recompute every step even if stored.", llm=True)
def investigate_cmd(task, dataset, n, top, n_mlp, n_explain, mine_tokens, no_validate, no_prose, budget_usd, out, seed,
                    margin, batch_size, max_batch, edges, edge_target, rerun, model_spec, device, dtype, llm_spec, llm_base_url, store_path,
                    as_json) -> None:
    """Investigate a behaviour end to end: build and validate counterfactual pairs (or take
    --dataset), localise it (attribution patching -> activation patching -> path patching), name
    the components (head wiki; neuron explanations), test the circuit (faithfulness,
    completeness, backup heads) and write a report (Markdown + figures, also in the viewer at
    /investigation/ID). Every step is stored; a re-run reuses what it can.

    \b
      autointerp investigate --task ioi --n 16 --top 3 --out report/
      autointerp investigate --task "the capital city of a country" --llm openai:gpt-4o-mini --budget-usd 0.5
    """
    from ..errors import UsageError
    from ..investigate import InvestigateSettings, investigate
    from ..store import Store

    if not task and not dataset:
        raise UsageError("give --task (ioi, or a description of the task) or --dataset NAME|FILE")
    s = settings(model=model_spec, device=device, dtype=dtype, store=store_path, llm=llm_spec)
    for opt, v, low in (("--n", n, 1), ("--top", top, 1), ("--n-mlp", n_mlp, 0), ("--explain", n_explain, 0),
                        ("--mine-tokens", mine_tokens, 1), ("--batch-size", batch_size, 1), ("--max-batch", max_batch, 1)):
        check_min(opt, v, low)
    if budget_usd is not None and not budget_usd > 0:
        raise UsageError(f"--budget-usd must be more than 0, got {budget_usd}")
    check_fraction("--edge-target", edge_target)
    check_out_dir("--out", out)                     # before the pipeline runs, not after it
    check_store_path(s.store)
    hm = load_subject(model_spec, device, dtype)
    store = Store(s.store)
    cfg = InvestigateSettings(n=n, top=top, n_mlp=n_mlp, n_explain=n_explain, mine_tokens=mine_tokens,
                              validate_explanations=not no_validate, prose=not no_prose, seed=seed, margin=margin,
                              batch_size=batch_size, max_batch=max_batch, edges=edges,
                              edge_target=edge_target)

    def log(msg: str) -> None:
        click.echo(f"  {msg}", err=True)

    res = investigate(store, hm, task, dataset=dataset, llm=s.llm, settings=cfg, out=out, budget_usd=budget_usd,
                      llm_base_url=llm_base_url or s.llm_base_url, rerun=rerun, log=log, config=s)

    def human() -> None:
        sm = res.summary
        h = sm["hypothesis"]
        click.echo(click.style(f"investigation {res.id[:12]}", bold=True) + f"  {res.task} on {res.model_id}, dataset "
                   f"{res.dataset} ({sm['dataset']['n_items']} pairs)")
        click.echo(f"  logit diff clean {sm['clean_logit_diff']:.2f}, corrupt {sm['corrupt_logit_diff']:.2f}")
        for c in sm["components"]:
            click.echo(f"  {c['component']:<16} {c['activation_effect'] or 0:+.3f}  {c['role']}")
        fa = h.get("faithfulness")
        click.echo(f"  faithfulness {'-' if fa is None else f'{fa:.3f}'}, model without the circuit "
                   f"{'-' if h.get('model_minus_circuit') is None else format(h['model_minus_circuit'], '.3f')}, "
                   f"backup heads: {', '.join(sm['backup']['backup_heads']) or 'none'}")
        ec = sm.get("edge_circuit")
        if ec:
            click.echo(f"  edge circuit ({ec['method']}): {ec['n_edges']} of {ec['n_edges_total']} edges, faithfulness "
                       f"{'-' if ec['faithfulness'] is None else format(ec['faithfulness'], '.3f')}; localised "
                       f"components in it: {', '.join(ec['localised_in']) or 'none'}  (viewer: /circuit/{ec['circuit_id']})")
        click.echo("  steps: " + ", ".join(f"{k} {v['seconds']:.1f}s{' (reused)' if v.get('reused') else ''}"
                                          for k, v in res.timings.items()) + f"; total {res.total_seconds:.1f}s")
        click.echo(f"  report: {res.report_path}  (viewer: autointerp serve, /investigation/{res.id[:12]})")

    emit(as_json, res.to_json(), human)
