"""`autointerp patch` (activation / attribution / path patching, DLA) and `autointerp heads` (the head wiki)."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from .common import (check_layers, check_min, check_out_file, check_store_path, emit, json_option, model_options,
                     progress, run_options, settings, store_option)
from .common import load_subject
from .models import open_dataset


def _component_label(r: dict) -> str:
    return r["component"] + ("" if r.get("position") is None else f" @{r['position']}")


@cli.command("patch")
@click.option("--dataset", required=True, help="A stored dataset name, or a .jsonl / auto-circuit file (imported, validated).")
@click.option("--what", type=click.Choice(["resid", "heads", "heads_pos", "mlp", "attn", "neurons"]), default="heads",
              show_default=True, help="Components: residual stream per layer x position, heads, heads x position, "
                                      "MLP out / attention out per layer, neurons of --layer.")
@click.option("--method", type=click.Choice(["activation", "attribution", "path", "dla"]), default="activation",
              show_default=True, help="path: sender heads through --receivers; dla: direct logit attribution (heads/neurons).")
@click.option("--direction", type=click.Choice(["denoising", "noising"]), default="denoising", show_default=True,
              help="denoising: clean activations into the corrupt run; noising: corrupt into clean.")
@click.option("--layer", type=int, default=None, help="Layer (required for --what neurons; else restricts to one layer).")
@click.option("--all-positions", is_flag=True, help="--what resid: patch all positions at once (one result per layer).")
@click.option("--receivers", default="logits", show_default=True,
              help="--method path: 'logits' or receiver heads' inputs, e.g. 'L9/H9:q,L9/H6:q' (:q, :k or :v).")
@click.option("--no-freeze-mlps", is_flag=True, help="--method path: let MLPs recompute (default: frozen, like heads).")
@click.option("--compare", is_flag=True, help="--method attribution: also run activation patching and report the rank correlation.")
@click.option("--top", type=int, default=None, help="Components printed [default: 20; all with --json].")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Save a heatmap (layer x head, or x position) as PNG.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Items per batch.")
@click.option("--max-batch", type=int, default=256, show_default=True,
              help="Rows per forward pass: components patched at once = max_batch // items per batch.")
@run_options(force=True)
def patch_cmd(dataset, what, method, direction, layer, all_positions, receivers, no_freeze_mlps, compare, top, plot,
              batch_size, max_batch, rerun, force, model_spec, device, dtype, store_path, as_json) -> None:
    """Patch components of the subject model on a counterfactual dataset and rank them by effect.

    Metric: logit(answer) - logit(wrong), normalised so 0 = corrupt run and 1 = clean run; an
    effect is the change a patch makes (denoising: the recovered fraction; noising: minus the
    destroyed fraction). DLA effects are in logits. Results are stored (an identical rerun is reused).

    \b
      autointerp patch --dataset ioi --what heads --plot heads.png
      autointerp patch --dataset ioi --what heads --method attribution --compare
      autointerp patch --dataset ioi --method path --receivers L9/H9:q,L10/H0:q --json
    """
    from ..patching import patch_report

    s = settings(model=model_spec, device=device, dtype=dtype, store=store_path)
    for opt, v in (("--top", top), ("--batch-size", batch_size), ("--max-batch", max_batch)):
        check_min(opt, v, 1)
    if layer is not None:
        check_layers("--layer", str(layer), model_spec)
    check_out_file("--plot", plot, force=force)
    store, hm, ds = open_dataset(s.store, dataset, model_spec, device, dtype)
    bar = None if as_json else (lambda total: progress(total=total, desc=f"{method} {what}"))
    rep = patch_report(store, hm, ds, what, method, direction=direction, layer=layer,
                       per_position=False if all_positions else None, receivers=receivers,
                       freeze_mlps=not no_freeze_mlps, batch_size=batch_size, max_batch=max_batch, reuse=not rerun,
                       compare=compare or None, progress=bar, top=top, plot=plot, force=force)
    emit(as_json, rep.model_dump(), lambda: _print_patch(rep, top))


def _print_patch(rep, top: int | None) -> None:
    """A patching run for people: the top components (20 unless --top)."""
    unit = "normalised" if rep.normalised else ("logits" if rep.method == "dla" else "raw logit diff (clean == corrupt)")
    click.echo(click.style(f"{rep.method} patching", bold=True) + f"  {rep.what}  {rep.direction or ''}  dataset {rep.dataset} "
               f"({rep.n_items} items)  model {rep.model}" + ("  (stored run reused)" if rep.reused else ""))
    click.echo(f"  clean logit diff {rep.clean_logit_diff:.3f}, corrupt {rep.corrupt_logit_diff:.3f}; effects: {unit}")
    if rep.method == "path":
        click.echo(f"  receivers: {rep.receivers}")
    if rep.method == "attribution":
        corr = rep.rank_correlation_with_activation
        click.echo("  rank correlation with activation patching: " + (f"{corr:.3f}" if corr is not None else
                                                                    "n/a (run activation patching, or pass --compare)"))
    for r in rep.results[: top or 20]:
        click.echo(f"  {_component_label(r):<28} {r['effect']:+.4f}")
    if rep.plot:
        click.echo(f"  heatmap: {rep.plot}")


@cli.command("heads")
@click.option("--recompute", is_flag=True, help="Recompute the detector scores even if stored.")
@click.option("--n-seqs", type=int, default=16, show_default=True, help="Random repeated sequences.")
@click.option("--seq-len", type=int, default=24, show_default=True, help="Length of the repeated half.")
@click.option("--min-score", type=float, default=0.0, show_default=True, help="Only heads scoring this on some detector "
                                                                            "(first_token excluded).")
@model_options
@store_option
@json_option
def heads_cmd(recompute, n_seqs, seq_len, min_score, model_spec, device, dtype, store_path, as_json) -> None:
    """The head wiki: for every attention head, scores of the induction, previous-token,
    duplicate-token and first-token detectors (on repeated random tokens), and its role.
    Computed once per model and stored."""
    from ..patching import DETECTORS, head_wiki, role
    from ..core.units import Unit

    from ..store import Store

    s = settings(model=model_spec, device=device, dtype=dtype, store=store_path)
    check_min("--n-seqs", n_seqs, 1)
    check_min("--seq-len", seq_len, 2)
    check_store_path(s.store)
    hm = load_subject(model_spec, device, dtype)
    store = Store(s.store)
    scores = head_wiki(store, hm, recompute=recompute, n_seqs=n_seqs, seq_len=seq_len)
    rows = []
    for u in sorted(scores, key=Unit.parse):
        sc = scores[u]
        if max(v for d, v in sc.items() if d != "first_token") < min_score:
            continue
        rows.append({"unit": u, **{d: sc.get(d) for d in DETECTORS}, "role": role(sc)})

    def human() -> None:
        click.echo(click.style(f"head wiki: {hm.spec}", bold=True) + f"  ({hm.n_layers} layers x {hm.n_heads} heads)")
        click.echo(f"  {'head':<8} " + " ".join(f"{d:>15}" for d in DETECTORS) + "  role")
        for r in rows:
            click.echo(f"  {r['unit']:<8} " + " ".join(f"{r[d]:>15.3f}" for d in DETECTORS) + f"  {r['role']}")

    emit(as_json, {"model": hm.spec, "heads": rows}, human)
