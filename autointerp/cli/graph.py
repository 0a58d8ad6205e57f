"""`autointerp graph "PROMPT" --transcoders DIR`: the prompt's attribution graph over transcoder
latents (autointerp/graph/), pruned by influence, with circuit-tracer's replacement and
completeness scores and the completeness identity of the target logit. Thin: the science is
graph/, the model side models/replacement.py."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from . import cli
from .common import (check_fraction, check_min, check_store_path, emit, json_option, model_options, settings,
                     store_option)


@cli.command("graph")
@click.argument("prompt")
@click.option("--transcoders", "tc_dir", type=click.Path(path_type=Path), required=True,
              help="A transcoder set folder (as `autointerp sae train --kind transcoder` writes).")
@click.option("--target", default=None, help="Attribute this next token's logit [default: the top logits].")
@click.option("--max-logits", type=int, default=10, show_default=True, help="At most this many top logits.")
@click.option("--logit-prob", type=float, default=0.95, show_default=True,
              help="Top logits until their probabilities sum to this.")
@click.option("--node-share", type=float, default=0.8, show_default=True, help="Keep nodes carrying this share of influence.")
@click.option("--edge-share", type=float, default=0.98, show_default=True, help="Keep edges carrying this share of influence.")
@click.option("--max-feature-nodes", type=int, default=2048, show_default=True,
              help="Latent nodes whose inputs are attributed (most influential first).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Targets per batched backward pass.")
@click.option("--validate", "validate_k", type=int, default=0, show_default=True,
              help="Ablate the K most influential latents in the real model (transcoder splice with the error "
                   "term) and compare the target logit's change with the graph's prediction.")
@click.option("--top", type=int, default=10, show_default=True, help="Latent nodes listed in the text output.")
@store_option
@model_options
@json_option
def graph_cmd(prompt, tc_dir, target, max_logits, logit_prob, node_share, edge_share, max_feature_nodes, batch_size,
              validate_k, top, store_path, model_spec, device, dtype, as_json) -> None:
    """The attribution graph of PROMPT (Ameisen et al. 2025): MLPs replaced by the transcoders plus
    per-position error terms, attention patterns and norm scales frozen from the real forward; nodes
    are token embeddings, active latents, error nodes and the top logits; edges are direct linear
    effects computed with batched backward passes. --json holds the target's raw logit and every
    direct contribution into it (unpruned), so the sum can be checked."""
    from ..graph import build_graph
    from ..models.transcoders import load_transcoder_set
    from .models import load_subject

    for opt, v in (("--max-logits", max_logits), ("--max-feature-nodes", max_feature_nodes),
                   ("--batch-size", batch_size)):
        check_min(opt, v, 1)
    check_min("--top", top, 0)
    check_min("--validate", validate_k, 0)
    spath = check_store_path(settings(store=store_path).store)
    for opt, v in (("--logit-prob", logit_prob), ("--node-share", node_share), ("--edge-share", edge_share)):
        check_fraction(opt, v)
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    tset = load_transcoder_set(tc_dir)
    hm = load_subject(model_spec, device, dtype)
    g = build_graph(hm, tset, prompt, target=target, max_logits=max_logits, logit_prob=logit_prob,
                    max_feature_nodes=max_feature_nodes, batch_size=batch_size, node_share=node_share,
                    edge_share=edge_share, progress=not as_json)
    from ..graph.validate import validate_graph
    from ..store import Store

    validation = validate_graph(hm, tset, g, validate_k) if validate_k else None
    key, row, nodes, edges, stored = g.store_records()
    gid = Store(spath).put_graph(key, {**row, "validation": validation}, nodes, edges, stored)
    data = {"graph_id": gid, "store": str(spath), **g.to_json(), "validation": validation}

    def human() -> None:
        d, s, pr = g.direct, g.scores, g.pruning
        click.echo(f"graph of {prompt!r}  ({hm.spec}, transcoders {tset.name}: layers {tset.layers[0]}-{tset.layers[-1]})")
        click.echo("  targets: " + ", ".join(f"{r['token']!r} p={r['prob']:.3f}" for r in g.logits))
        click.echo(f"  nodes: {g.n_active} active latents ({g.n_features} attributed), {g.n_errors} error, {g.P} token, "
                   f"{len(g.logits)} logit; kept {data['n_nodes_kept']} nodes, {len(data['edges'])} edges "
                   f"({100 * node_share:.0f}% node / {100 * edge_share:.0f}% edge influence)")
        rs = "n/a" if s["replacement_score"] is None else f"{s['replacement_score']:.3f}"
        click.echo(f"  replacement score {rs}, completeness score {s['completeness_score']:.3f} (circuit-tracer's definitions)")
        click.echo(f"  completeness identity for {d['target']!r}: raw logit {d['raw_logit']:.4f} = bias terms "
                   f"{d['bias_terms']:.4f} + {len(d['contributions'])} direct contributions {d['sum_of_contributions']:.4f} "
                   f"(relative error {d['relative_error']:.1e})")
        if top:
            click.echo("  most influential latents:")
            for r in g.top_latents(top):
                click.echo(f"    L{r['layer']}/F{r['latent']}@{tset.name} at {r['pos']} {r['token']!r}  act {r['activation']:.3f}  "
                           f"influence {r['influence']:.4f}{'' if r['kept'] else '  (pruned)'}")
        if validation:
            v = validation
            c = "null (" + v.get("correlation_reason", "") + ")" if v["correlation"] is None else f"{v['correlation']:.3f}"
            click.echo(f"  validation ({v['k']} latents ablated in the real model): correlation of predicted and observed "
                       f"logit changes {c}, MAE {v['mae']:.4g} (mean |observed| {v['mean_abs_observed']:.4g})")
        click.echo(f"  {g.timing['rows']} attribution rows in {g.timing['total_s']:.1f} s; stored as graph {gid} in {spath}")

    emit(as_json, data, human)
