"""`autointerp graph "PROMPT" --transcoders DIR`: the prompt's attribution graph over transcoder
latents (autointerp/graph/), pruned by influence, with circuit-tracer's replacement and
completeness scores and the completeness identity of the target logit. Thin: the science is
graph/, the model side models/replacement.py."""

from __future__ import annotations

import time
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
@click.option("--explain", "explain_n", type=int, default=0, show_default=True,
              help="Mine (if needed), explain and score the N most influential latents: the exact baseline always, "
                   "the LLM's explanation when --llm is given.")
@click.option("--corpus", default=None, help="--explain: text to mine [default: the offline gensim corpus].")
@click.option("--explain-tokens", type=int, default=16384, show_default=True, help="--explain: tokens to mine.")
@click.option("--llm", "llm_spec", default=None, help="--explain: an LLM (embedded:SPEC or openai:MODEL) to explain with.")
@click.option("--top", type=int, default=10, show_default=True, help="Latent nodes listed in the text output.")
@store_option
@model_options
@json_option
def graph_cmd(prompt, tc_dir, target, max_logits, logit_prob, node_share, edge_share, max_feature_nodes, batch_size,
              validate_k, explain_n, corpus, explain_tokens, llm_spec, top, store_path, model_spec, device, dtype,
              as_json) -> None:
    """The attribution graph of PROMPT (Ameisen et al. 2025): MLPs replaced by the transcoders plus
    per-position error terms, attention patterns and norm scales frozen from the real forward; nodes
    are token embeddings, active latents, error nodes and the top logits; edges are direct linear
    effects computed with batched backward passes. --json holds the target's raw logit and every
    direct contribution into it (unpruned), so the sum can be checked."""
    from ..graph import build_graph
    from ..models.transcoders import load_transcoder_set
    from .common import load_subject

    for opt, v in (("--max-logits", max_logits), ("--max-feature-nodes", max_feature_nodes),
                   ("--batch-size", batch_size)):
        check_min(opt, v, 1)
    check_min("--top", top, 0)
    check_min("--validate", validate_k, 0)
    check_min("--explain", explain_n, 0)
    check_min("--explain-tokens", explain_tokens, 1)
    cfg = settings(store=store_path)
    spath = check_store_path(cfg.store)
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

    t_val = time.perf_counter()
    validation = validate_graph(hm, tset, g, validate_k) if validate_k else None
    g.timing["validate_s"] = round(time.perf_counter() - t_val, 3)
    store = Store(spath)
    key, row, nodes, edges, stored = g.store_records()
    explained = {}
    if explain_n:
        from ..corpus.sources import DEFAULT_CORPUS
        from ..pipeline import make_llm
        from ..pipeline.latents import explain_latents

        top_units = [g.unit(r["layer"], r["latent"]) for r in g.top_latents(explain_n)]
        layers = sorted({r["layer"] for r in g.top_latents(explain_n)})
        llm = make_llm(llm_spec, store=store, hm=hm, settings=cfg) if llm_spec else None
        t_exp = time.perf_counter()
        explained = explain_latents(store, hm, [tset.by_layer[L] for L in layers], top_units,
                                    corpus=corpus or DEFAULT_CORPUS, n_tokens=explain_tokens, llm=llm,
                                    progress=not as_json)
        g.timing["explain_s"] = round(time.perf_counter() - t_exp, 3)
    gid = store.put_graph(key, {**row, "validation": validation}, nodes, edges, stored)
    data = {"graph_id": gid, "store": str(spath), **g.to_json(), "validation": validation, "explained": explained}
    for n in data["nodes"]:
        if n["kind"] == "latent" and g.unit(n["layer"], n["latent"]) in explained:
            n.update({k: v for k, v in explained[g.unit(n["layer"], n["latent"])].items() if k != "baseline"})

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
            for r in g.top_latents(max(top, explain_n)):
                u = g.unit(r["layer"], r["latent"])
                click.echo(f"    {u} at {r['pos']} {r['token']!r}  act {r['activation']:.3f}  "
                           f"influence {r['influence']:.4f}{'' if r['kept'] else '  (pruned)'}")
                e = explained.get(u)
                if e and e.get("explanation"):
                    click.echo(f"        {e['explainer']}: {e['explanation']!r}  {e.get('score_kind', 'score')} "
                               f"{_f(e.get('score'))}, control {_f(e.get('control'))}, margin {_f(e.get('margin'))}")
                elif e:
                    click.echo(f"        not explained: {e.get('reason')}")
        if validation:
            v = validation
            c = "null (" + v.get("correlation_reason", "") + ")" if v["correlation"] is None else f"{v['correlation']:.3f}"
            click.echo(f"  validation ({v['k']} latents ablated in the real model): correlation of predicted and observed "
                       f"logit changes {c}, MAE {v['mae']:.4g} (mean |observed| {v['mean_abs_observed']:.4g})")
        click.echo(f"  {g.timing['rows']} attribution rows in {g.timing['total_s']:.1f} s; stored as graph {gid} in {spath}")

    emit(as_json, data, human)


def _f(x) -> str:
    return "null" if x is None else f"{x:+.3f}"
