"""`autointerp diff MODEL_A MODEL_B`: what changed between two models (autointerp.pipeline.diff_models);
`autointerp plant`: model B of a planted difference (autointerp.compare.plant_heads)."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from ..score.registry import headline_kinds
from .common import (check_out_dir as check_out_dir_writable, check_out_file, check_store_path, emit, force_option, json_option,
                     llm_options, model_options, progress, settings, store_option)

_ARROW = {"b_better": "B better than A", "a_better": "A better than B"}


def _fmt(v, f="+.3f"):
    return "-" if v is None else format(v, f)


def _context_line(r, n_chars: int = 160) -> str:
    """The record's text with its peak token marked [[...]], cut around the peak."""
    i = max(range(len(r.acts)), key=lambda j: r.acts[j]) if r.acts else 0
    left = "".join(r.tokens[:i])[-n_chars // 2:]
    right = "".join(r.tokens[i + 1:])[:n_chars // 2]
    return (left + "[[" + r.tokens[i] + "]]" + right).replace("\n", "⏎") if r.tokens else ""


@cli.command("diff")
@click.argument("model_a")
@click.argument("model_b")
@click.option("--corpus", default=None, help="Text source (as for mine) [default: the offline corpus].")
@click.option("--tokens", "n_tokens", type=int, default=4096, show_default=True, help="Tokens of text (of A's tokenizer).")
@click.option("--context-len", type=int, default=64, show_default=True, help="Tokens per context.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Contexts per forward pass.")
@click.option("--metric", type=click.Choice(["clip", "logp", "p"]), default="clip", show_default=True,
              help="Per-token value that ranks contexts: Δ max(-5, log p) (clip: a token both models find "
                   "hopeless is a tie), Δ log p or Δ p.")
@click.option("--rank", type=click.Choice(["max", "sum"]), default="max", show_default=True,
              help="Rank contexts by their largest per-token Δ (max) or their total Δ (sum; for logp, the "
                   "log-likelihood ratio of the whole context).")
@click.option("--tasks", default="", help="Comma-separated built-in tasks to compare (ioi, greater_than, ...).")
@click.option("--task-items", type=int, default=32, show_default=True, help="Items per task.")
@click.option("--level", type=click.Choice(["auto", "blackbox", "components"]), default="auto", show_default=True,
              help="components needs the same architecture (auto: when it matches).")
@click.option("--act-tokens", type=int, default=2048, show_default=True, help="Tokens for the activation diff.")
@click.option("--contexts", "n_contexts", type=int, default=8, show_default=True,
              help="Top contexts used for DLA and patching.")
@click.option("--patch-top", type=int, default=0, show_default=True,
              help="Patch only the N components with the largest DLA difference (0: every head and MLP layer).")
@click.option("--side", type=click.Choice(["auto", "b_better", "a_better"]), default="auto", show_default=True,
              help="Which model's advantage to explain and patch (auto: the larger).")
@click.option("--explain", type=click.Choice(["none", "baseline", "llm"]), default="baseline", show_default=True,
              help="Explain the top contexts: baseline (no LLM, exact score) or llm (+ simulation, detection, fuzzing).")
@click.option("--top", type=int, default=5, show_default=True, help="Contexts and components printed.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Save a PNG of the rankings.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
@force_option
@llm_options
@store_option
@json_option
def diff_cmd(model_a, model_b, corpus, n_tokens, context_len, batch_size, metric, rank, tasks, task_items, level, act_tokens,
             n_contexts, patch_top, side, explain, top, plot, seed, device, dtype, force, llm_spec, llm_base_url, store_path,
             as_json) -> None:
    """Diff two causal LMs: where B predicts text better or worse than A, on tasks, and (same
    architecture) which heads, neurons and layers changed and carry the difference.

    \b
    Black box (any two models): per-token Δ log p, Δ p, Δ max(-5, log p) and KL(A||B) when the
    tokenizers match, else log p summed over the character spans both tokenisations share.
    Components (same architecture): weight diff per tensor / head / neuron, attention JS
    divergence and head-output change per head, neuron correlations, DLA difference and patching
    from the better model into the worse on the top contexts. Stored in the store's diff tables.

    \b
      autointerp diff smollm2-135m runs/smollm2-no-induction --json
      autointerp diff smollm2-135m gemma3-270m --tasks ioi,capitals
    """
    from ..pipeline import DiffSettings, diff_models
    from ..store import DEFAULT_STORE, Store

    s = DiffSettings(corpus=corpus, n_tokens=n_tokens, context_len=context_len, batch_size=batch_size, metric=metric,
                     rank=rank, tasks=[t for t in tasks.split(",") if t.strip()], task_items=task_items, level=level,
                     act_tokens=act_tokens, n_contexts=n_contexts, patch_top=patch_top, side=side, explain=explain, seed=seed).check()
    check_out_file("--plot", plot, force=force)
    path = check_store_path(store_path or DEFAULT_STORE)
    from ..corpus import DEFAULT_CORPUS, open_source

    open_source(corpus or DEFAULT_CORPUS)           # a bad --corpus fails before the models load
    cfg = settings(llm=llm_spec, llm_base_url=llm_base_url)
    with Store(path) as store:
        llm = None
        if explain == "llm":                          # the LLM with this command's settings (flags > env > file)
            from ..pipeline import make_llm

            llm = make_llm(cfg.llm, store=store, base_url=cfg.llm_base_url, settings=cfg)
        res = diff_models(store, model_a, model_b, s, device=device, dtype=dtype, llm=llm,
                          llm_base_url=cfg.llm_base_url, progress=None if as_json else progress)
    if plot:
        from ..compare.plot import plot_diff

        plot_diff(res, plot, force=force)
    emit(as_json, res.to_json(), lambda: _human(res, top, plot))


def _human(res, top: int, plot) -> None:
    bb, sm = res.blackbox, res.summary
    click.echo(f"diff {res.id}  A={res.model_a}  B={res.model_b}")
    unit = "tokens" if bb.mode == "token" else "spans (character spans both tokenizers share)"
    click.echo(f"  {bb.n_contexts} contexts, {bb.n_units} {unit}, {res.timings.get('total_s', 0):.1f} s; level {res.level}")
    click.echo(f"  mean log p  A {_fmt(sm['mean_logp_a'], '.3f')}  B {_fmt(sm['mean_logp_b'], '.3f')}   "
               f"Δ log p {_fmt(sm['delta_logp'])}  Δ p {_fmt(sm['delta_p'], '+.4f')}  "
               f"Δ max(-5, log p) {_fmt(sm['delta_clip_logp'])}  KL(A||B) {_fmt(sm['kl_a_b'], '.4f')}  "
               f"B better on {100 * sm['frac_b_better']:.0f}% of {'tokens' if bb.mode == 'token' else 'spans'}")
    for note in res.notes:
        click.echo(f"  note: {note}")
    for side in ("a_better", "b_better"):
        recs = bb.top[side][:top]
        scores = bb.scores.get(side) or [r.max_act for r in recs]
        rep = sm.get(f"repeat_frac_top10_{side}")
        extra = f", {100 * rep:.0f}% of the top 10 complete a repeat" if rep is not None else ""
        how = f"Δ {bb.metric}" if bb.rank == "max" else f"total Δ {bb.metric} [peak]"
        click.echo(f"top contexts where {_ARROW[side]} ({how}{extra}){'  <- explained' if side == res.side else ''}:")
        for i, (r, sc) in enumerate(zip(recs, scores)):
            score = f"{sc:+.2f}" if bb.rank == "max" else f"{sc:+.2f} [{r.max_act:+.2f}]"
            click.echo(f"  {i + 1}. [{score}] {_context_line(r)}")
    for t in res.tasks:
        o = t["outliers"][0] if t["outliers"] else None
        click.echo(f"task {t['task']} (n={t['n_items']}): logit diff A {t['logit_diff_a']:+.2f}  B {t['logit_diff_b']:+.2f}"
                   f"   accuracy A {t['accuracy_a']:.2f}  B {t['accuracy_b']:.2f}"
                   + (f"   largest change {o['delta']:+.2f}: {o['clean']!r} -> {o['answer']!r}" if o else ""))
    labels = {"weight_tensor": "weights / tensor", "weight_head": "weights / head W_O", "weight_neuron": "weights / neuron",
              "attn_js": "attention JS", "head_out": "head output", "neuron_corr": "neuron corr (lowest)",
              "dla": "DLA B - A", "patching": "patching"}
    if res.components:
        click.echo("components (ranked):")
    for a, rows in res.components.items():
        if not rows:
            continue
        cells = "  ".join(f"{r['component']} {r['value']:+.3f}" for r in rows[:top])
        click.echo(f"  {labels.get(a, a):22s} {cells}")
    if res.patching:
        p = res.patching
        click.echo(f"  (patching {p['n_components']} of {p['of_components']} components from {p['from']} into {p['into']} on "
                   f"{p['n_contexts']} contexts, {p['n_targets']} tokens; "
                   f"1 = the whole gap {p['m_worse']:.1f} -> {p['m_better']:.1f} recovered)")
    e = res.explanation
    if e:
        click.echo(f"explanation of {e['framing']}:")
        for kind in ("llm", "baseline"):
            if kind in e:
                sc = e[kind]["scores"]
                parts = [f"{k} {_fmt(v.get('value'))} (control {_fmt(v.get('control'))})" for k, v in sc.items()
                         if k in headline_kinds()]
                click.echo(f"  {kind}: {e[kind]['text']}")
                click.echo(f"    {'; '.join(parts)}")
    if plot:
        click.echo(f"plot: {plot}")


@cli.command("plant")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Model directory to write (must not exist, or be empty).")
@click.option("--heads", "heads_spec", default="3", show_default=True,
              help="How many of the strongest heads to zero (a count), or which (L18/H6,L17/H4).")
@click.option("--detector", default="induction", show_default=True,
              help="Head-wiki detector that picks the strongest heads (induction, previous_token, ...).")
@model_options
@json_option
def plant_cmd(out, heads_spec, detector, model_spec, device, dtype, as_json) -> None:
    """Make model B of a planted difference: the model with the output weights (W_O) of its
    strongest induction heads (by the head wiki's detector, on repeated random tokens) zeroed,
    saved as a model directory that any command takes as a model spec. Then
    `autointerp diff MODEL DIR` must find those heads and the repeated text they served.

    \b
      autointerp plant --heads 3 --out runs/smollm2-no-induction
      autointerp diff smollm2-135m runs/smollm2-no-induction --json
    """
    from ..compare import plant_heads
    from ..compare.plant import check_detector, check_out_dir, parse_heads
    from .common import load_subject

    heads = parse_heads(heads_spec)                 # these checks before the model loads
    check_detector(detector)
    check_out_dir(out)
    check_out_dir_writable("--out", out)
    hm = load_subject(model_spec, device, dtype)
    rec = plant_heads(hm, out, heads, detector=detector)

    def human() -> None:
        click.echo(f"planted: {rec.out}  = {rec.model} with the output weights of {len(rec.heads)} heads zeroed")
        how = f"strongest by {rec.detector}" if rec.chosen == "strongest" else f"as given; {rec.detector} score"
        click.echo(f"  zeroed ({how}): " + ", ".join(f"{h['unit']} {h['score']:.2f}" for h in rec.heads))
        click.echo(f"  next: autointerp diff {rec.model} {rec.out}")

    emit(as_json, rec.model_dump(), human)
