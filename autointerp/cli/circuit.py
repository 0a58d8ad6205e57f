"""`autointerp circuit`: edge-level circuit discovery (EAP, EAP-IG, ACDC), stored and exported."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import cli
from ..core.files import write_output
from .common import check_fraction, check_min, check_out_file, check_store_path, emit, run_options, settings
from .models import open_dataset


@cli.command("circuit")
@click.option("--dataset", default=None, help="A stored dataset name, or a .jsonl / auto-circuit file (imported, validated).")
@click.option("--method", type=click.Choice(["eap", "eap-ig", "acdc"]), default="eap", show_default=True,
              help="eap: edge attribution patching; eap-ig: with integrated gradients; acdc: greedy exact pruning.")
@click.option("--ablation", type=click.Choice(["corrupt", "mean"]), default="corrupt", show_default=True,
              help="What edges outside the circuit are patched to: corrupt (the sender's output on the corrupt "
                   "prompt) or mean (its mean over the dataset's clean and corrupt prompts, per position counted "
                   "from the final token).")
@click.option("--target", type=float, default=0.8, show_default=True,
              help="eap/eap-ig: keep the top edges until the circuit recovers this fraction of the logit difference.")
@click.option("--ig-steps", type=int, default=5, show_default=True, help="--method eap-ig: interpolation steps.")
@click.option("--tau", type=float, default=0.01, show_default=True,
              help="--method acdc: patch an edge for good when that costs less than this much faithfulness.")
@click.option("--candidates", type=int, default=None,
              help="--method acdc: only the N best EAP edges are candidates (the rest start patched).")
@click.option("--points", type=int, default=12, show_default=True, help="Circuit sizes measured on the curve.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Items per batch.")
@click.option("--top", type=int, default=None, help="Edges printed [default: 20; all with --json].")
@click.option("--export", "export_path", type=click.Path(path_type=Path), default=None,
              help="Write the circuit as auto-circuit JSON (PruneScores by dest module, edges 'A0.0->A1.0.K').")
@click.option("--show", "show_id", type=int, default=None, help="Print a stored circuit (by id) instead of running.")
@run_options(force=True)
def circuit_cmd(dataset, method, ablation, target, ig_steps, tau, candidates, points, batch_size, top, export_path, show_id,
                rerun, force, model_spec, device, dtype, store_path, as_json) -> None:
    """Find the circuit of a task as edges between nodes (embed, heads, MLPs, logits), score them,
    prune to a faithfulness target, and store it with the faithfulness-vs-edges curve (each
    point measured by running the circuit: every edge outside it patched to its corrupt value,
    or with --ablation mean to its sender's mean; faithfulness 0 is then the model with every
    edge mean-ablated).

    Edges are named in the hook scheme: 'L0/H0 -> L1/H0:k' (a head's q/k/v input; with grouped
    query attention each query head has its own k/v input), 'embed -> blocks.2.mlp.out' (an MLP's
    input), 'L5/H1 -> logits'. Scores: the normalised change of the logit difference when that
    edge alone is patched (-1 = the whole clean-vs-corrupt gap).

    \b
      autointerp circuit --dataset ioi
      autointerp circuit --dataset ioi --method eap-ig --target 0.9 --export ioi-circuit.json
      autointerp circuit --dataset ioi --method acdc --candidates 200 --json
      autointerp circuit --dataset ioi --ablation mean
    """
    from ..errors import UsageError
    from ..store import Store

    s = settings(model=model_spec, device=device, dtype=dtype, store=store_path)
    check_fraction("--target", target)
    for opt, v in (("--ig-steps", ig_steps), ("--points", points), ("--batch-size", batch_size), ("--top", top),
                   ("--candidates", candidates)):
        check_min(opt, v, 1)
    if tau < 0 or tau != tau:
        raise UsageError(f"--tau must be >= 0, got {tau}")
    check_out_file("--export", export_path, force=force)
    if show_id is not None:
        check_store_path(s.store, must_exist=True)
        store = Store(s.store, readonly=True, create=False)
        row = store.get_circuit(show_id)
        if row is None:
            raise UsageError(f"--show {show_id}: no stored circuit with that id")
        _show_row(row, top, as_json)
        return
    if dataset is None:
        raise UsageError("--dataset is required (a stored dataset name or a .jsonl file), or --show ID")
    from ..patching.edge_search import auto_circuit_json, find_circuit
    store, hm, ds = open_dataset(s.store, dataset, model_spec, device, dtype)

    def prog(a, b):
        if not as_json:
            click.echo(f"  {method}: {a} edges -> faithfulness {b:.3f}" if method != "acdc" else
                       f"  acdc: {a}/{b} edges tried", err=True)

    circ = find_circuit(store, hm, ds, method, target=target, ig_steps=ig_steps, tau=tau, candidates=candidates,
                        batch_size=batch_size, points=points, ablation=ablation, reuse=not rerun,
                        progress=prog)
    if export_path is not None:
        write_output(export_path, json.dumps(auto_circuit_json(circ), indent=1), force=force, option="--export")
    data = circ.to_json()
    data.update({"dataset": ds.name, "model": hm.spec, "export": str(export_path) if export_path else None})
    if top is not None:
        data["edges"] = data["edges"][:top]

    def human() -> None:
        fa = circ.faithfulness
        click.echo(click.style(f"circuit ({method})", bold=True) + f"  dataset {ds.name} ({circ.n_items} items)  "
                   f"model {hm.spec}  id {circ.circuit_id}" + ("  (stored run reused)" if circ.reused else ""))
        click.echo(f"  clean logit diff {circ.clean_logit_diff:.3f}, corrupt {circ.corrupt_logit_diff:.3f}"
                   + (f", every edge mean-ablated {circ.baseline_logit_diff:.3f}" if ablation == "mean" else ""))
        click.echo(f"  {len(circ.edges)} of {circ.graph.n_edges} edges, faithfulness "
                   f"{'-' if fa is None else f'{fa:.3f}'}" + (f" (target {circ.target:g})" if method != "acdc" else "")
                   + f", {ablation} ablation")
        if len(circ.curve) > 1:
            click.echo("  curve: " + "  ".join(f"{k}:{f:.2f}" for k, f in circ.curve))
        for e in data["edges"][: top or 20]:
            click.echo(f"  {e['edge']:<36} {'' if e['score'] is None else format(e['score'], '+.4f')}")
        if export_path:
            click.echo(f"  auto-circuit JSON: {export_path}")

    emit(as_json, data, human)


def _show_row(row: dict, top: int | None, as_json: bool) -> None:
    edges = [e for e in row["edges"] if e["in_circuit"]]
    data = {k: row[k] for k in ("id", "dataset", "model_id", "method", "ablation", "target", "faithfulness", "clean_logit_diff",
                                "corrupt_logit_diff", "n_items", "n_edges", "n_edges_total", "curve", "settings")}
    data["edges"] = [{"edge": e["edge"], "score": e["score"]} for e in edges][: top or None]

    def human() -> None:
        click.echo(click.style(f"circuit {row['id']} ({row['method']})", bold=True) +
                   f"  dataset {row['dataset']}  model {row['model_id']}")
        click.echo(f"  {row['n_edges']} of {row['n_edges_total']} edges, faithfulness {row['faithfulness']} "
                   f"({row['ablation']} ablation)")
        for e in data["edges"][: top or 20]:
            click.echo(f"  {e['edge']:<36} {'' if e['score'] is None else format(e['score'], '+.4f')}")

    emit(as_json, data, human)
