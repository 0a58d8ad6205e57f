"""`autointerp explain` and `autointerp show`: one unit, explained and scored, or all the store
knows about it."""

from __future__ import annotations


import click

from . import cli
from ..core.units import Unit
from ..score.metrics import is_calibrated
from ..score.registry import llm_score_kinds, score_labels
from .sae import sae_options
from .common import check_min, check_store_path, check_unit, emit, explain_options, json_option, llm_options, model_options, settings, store_option

# colours by normalised activation (0..10): stronger is warmer
_SHADES = [(8, dict(fg="white", bg="red", bold=True)), (5, dict(fg="black", bg="yellow")), (2, dict(fg="yellow")),
           (1, dict(underline=True))]


def highlight_tokens(tokens, acts, max_act: float) -> str:
    """A record's text with its active tokens coloured by activation (plain text off a terminal:
    click.echo strips the styles)."""
    from ..core.format import normalise

    out = []
    for t, v in zip(tokens, normalise(acts, max_act)):
        style = next((st for lo, st in _SHADES if v >= lo), None)
        t = t.replace("\n", "⏎")
        if style is None:
            out.append(t)
        else:
            lead = t[: len(t) - len(t.lstrip(" "))]
            out.append(lead + click.style(t.lstrip(" ") or t, **style))
    return "".join(out)


def _score_line(name: str, sc) -> str:
    """One score: value, interval, n, and its control and margin (or why it is null)."""
    if sc is None:
        return f"  {name:<18} -"
    get = (lambda k: sc.get(k)) if isinstance(sc, dict) else (lambda k: getattr(sc, k, None))
    v = get("value")
    if v is None:
        why = get("reason")
        return f"  {name:<18} null" + (f"  ({why})" if why else "")
    ci = f"  95% CI [{get('ci_low'):+.2f}, {get('ci_high'):+.2f}]" if get("ci_low") is not None else ""
    n = f"  (n={get('n')})" if get("n") is not None else ""
    ctl = ""
    if get("control") is not None:
        ctl = f"  control {get('control'):+.3f}"
        if get("margin") is not None:
            ctl += f"  margin {get('margin'):+.3f}"
            if get("margin_low") is not None:
                ctl += f" [{get('margin_low'):+.2f}, {get('margin_high'):+.2f}]"
    return f"  {name:<18} {v:+.3f}{ci}{n}{ctl}"


def _print_scores(scores: dict) -> None:
    labels = score_labels()
    for k, lab in labels.items():
        if k in scores:
            click.echo(_score_line(lab, scores[k]))
    for k, v in scores.items():
        if k not in labels:
            click.echo(_score_line(k, v))


def _chance_line(scores: dict, llm_name: str) -> str | None:
    """One plain line naming the LLM scores that cannot be told from their control (the margin's
    interval includes 0)."""
    weak = [name for k, name in llm_score_kinds().items() if (sc := scores.get(k)) is not None and sc.chance]
    if not weak:
        return None
    what = " and ".join(weak) + (" score" if len(weak) == 1 else " scores")
    return (f"  -> with {llm_name} the {what} cannot be told from chance: the margin over the control "
            "explanation includes 0")


def _calibration_line(res) -> str:
    c = res.calibration
    name = (res.explanation.explainer if res.explanation else "the LLM")
    if not c:
        return (f"LLM scores below are uncalibrated: no `autointerp calibrate` has been run for {name} in this store, "
                "so nothing shows that its scores tell right from wrong explanations")
    a = c.get("simulation_auroc")
    if a is None:
        return f"LLM scores: calibration #{c.get('id')} has no simulation AUROC for {name}"
    lo, hi = c.get("simulation_auroc_low"), c.get("simulation_auroc_high")
    word = "calibrated" if is_calibrated(lo) else "uncalibrated (discrimination too low to trust)"
    iv = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
    return (f"LLM scores: {word}: simulation AUROC {a:.2f}{iv} on {c.get('n_units')} planted units "
            f"(calibration #{c.get('id')}, {c.get('created_at', '')[:10]})")


def _fmt_tokens(pairs, n: int = 8) -> str:
    return ", ".join(f"{p[0]!r} {p[1]:+.2f}" if len(p) > 1 and p[1] is not None else repr(p[0]) for p in pairs[:n]) or "-"


@cli.command("explain")
@click.option("--unit", "unit", required=True, help="Unit to explain, e.g. L3/N42, or an SAE latent L6/F12 with --sae.")
@explain_options
@click.option("--n-test", type=int, default=None, help="Test split: this many top and as many random records [default: 5].")
@click.option("--run", "run_id", default=None, help="Mining run to use [default: the latest covering the unit's layer].")
@click.option("--corpus", default=None, help="Corpus to mine when nothing is stored [default: the offline gensim corpus].")
@click.option("--n-tokens", type=int, default=None, help="Tokens to mine when nothing is stored [default: 16384].")
@click.option("--records", "n_show", type=click.IntRange(min=0), default=5, show_default=True, help="Top records printed.")
@sae_options
@model_options
@llm_options
@store_option
@json_option
def explain_cmd(unit, k, seed, style, simulator, scorers, explainer, n_test, run_id, corpus, n_tokens, n_show, sae_specs,
                sae_name, model_spec, device, dtype, llm_spec, llm_base_url, store_path, as_json) -> None:
    """Explain one unit with an LLM and score the explanation (mines the unit's layer first when
    the store has no records for it). Prints the explanation, its scores with 95% intervals, the
    non-LLM baseline's scores, the promoted tokens and the top records."""
    from ..pipeline import explain_unit
    from ..pipeline import ExplainSettings
    from ..score.splits import SplitSizes
    from ..store import Store

    s = settings(model=model_spec, device=device, dtype=dtype, llm=llm_spec, llm_base_url=llm_base_url, store=store_path)
    es = ExplainSettings(seed=seed, style=style, simulator=simulator, explainer=explainer,
                         scorers=tuple(x.strip() for x in scorers.split(",") if x.strip()))
    check_min("--k", k)
    check_min("--n-test", n_test)
    if k is not None:
        es.k = k
    if n_test is not None:
        es.sizes = SplitSizes(n_train=es.sizes.n_train, n_calib=es.sizes.n_calib, n_test=n_test)
    es.check()
    if not (sae_specs or Unit.parse(unit).record.needs_sae):   # an SAE latent is bound to its SAE by explain_unit
        check_unit("--unit", unit, s.model)
    check_min("--tokens", n_tokens, 64)
    if corpus is not None:
        from ..corpus.sources import open_source

        open_source(corpus)                       # a bad corpus fails here, before the model loads
    store = Store(check_store_path(s.store))
    res = explain_unit(store, unit, model_spec=s.model, llm=s.llm, llm_base_url=s.llm_base_url, run_id=run_id,
                       settings=es, corpus=corpus, n_tokens=n_tokens, device=s.device, dtype=s.dtype, config=s,
                       sae_specs=sae_specs, sae_name=sae_name)

    def human() -> None:
        e, b = res.explanation, res.baseline
        click.echo(click.style(f"{res.unit}", bold=True) + f"  {res.model_id}  run {res.run_id or '-'}  max act {res.max_act:.3g}"
                   + ("  (mined now)" if res.mined else ""))
        click.echo("")
        if e is not None:
            click.echo(_calibration_line(res))
            if res.control:
                click.echo(f"control explanation (scored on the same records): {res.control!r}")
            click.echo("")
            click.echo(click.style("explanation", bold=True) + f" ({e.explainer}, {e.method}{', cached' if e.cached else ''}):")
            click.echo("  " + click.style(e.text, fg="cyan", bold=True))
            _print_scores(e.scores)
            line = _chance_line(e.scores, e.explainer)
            if line:
                click.echo(line)
            if len(e.candidates) > 1:
                click.echo("  candidates (calibration r): " + "; ".join(
                    f"{c['text']!r} {c['calibration']:+.2f}" if c.get("calibration") is not None else repr(c["text"])
                    for c in e.candidates))
            if e.rejected:
                click.echo(f"  rejected replies: {len(e.rejected)} (" + "; ".join(sorted({r['reason'] for r in e.rejected})) + ")")
            click.echo("")
        click.echo(click.style("baseline", bold=True) + " (from the data, no LLM; exact sim. r reads it literally):")
        click.echo("  " + b.text)
        _print_scores(b.scores)
        fid = ((b.scores.get("simulation").details or {}).get("fidelity_to_exact")
               if b.scores.get("simulation") is not None else None)
        if fid is not None:
            click.echo(f"  simulator fidelity  {fid:+.3f}  (point estimate, no interval: r of the LLM's simulation of this text vs its exact reading)")
        click.echo("")
        click.echo(f"promoted:   {_fmt_tokens(res.promoted)}")
        click.echo(f"suppressed: {_fmt_tokens(res.suppressed)}")
        click.echo("")
        click.echo(click.style("top records", bold=True) + " (active tokens highlighted):")
        for i, r in enumerate(res.top_records[:n_show], 1):
            click.echo(f"  {i}. [{max(r.acts):.2f}] " + highlight_tokens(r.tokens, r.acts, res.max_act).replace("\n", " "))
        sz = res.split_sizes
        click.echo("")
        click.echo(f"splits: train {sz.get('train')}, calibration {sz.get('calibration_top')}+{sz.get('calibration_random')}, "
                   f"test {sz.get('test_top')} top + {sz.get('test_random')} random; "
                   + ", ".join(f"{k} {v:.1f}s" for k, v in res.timings.items()))

    emit(as_json, res.model_dump(), human)


@cli.command("show")
@click.argument("unit")
@click.option("--model", "model_id", default=None, envvar="AUTOINTERP_MODEL", help="Model as stored [default: smollm2-135m].")
@click.option("--records", "n_show", type=click.IntRange(min=0), default=5, show_default=True, help="Top records printed.")
@store_option
@json_option
def show_cmd(unit, model_id, n_show, store_path, as_json) -> None:
    """Print all that the store knows about a unit: explanations (LLM and baseline) with every
    score, statistics, promoted/suppressed tokens, records."""
    from ..pipeline import show_unit
    from ..store import Store

    s = settings(model=model_id, store=store_path)
    store = Store(check_store_path(s.store, must_exist=True), readonly=True, create=False)
    from ..core.units import Unit

    u = Unit.parse(unit)
    m = store.get_model(s.model)
    if not u.record.needs_sae:            # a unit beyond the model's sizes is named as such
        if m is not None:
            u.check(m["n_layers"], m["d_mlp"], m["n_heads"],       # other kinds' sizes by name (d_model)
                    **{k: v for k, v in m.items() if k.startswith("d_") and k != "d_mlp" and isinstance(v, int)})
        else:
            check_unit("UNIT", unit, s.model)
    info = show_unit(store, s.model, unit)

    def human() -> None:
        click.echo(click.style(info["unit"], bold=True) + f"  {info['model_id']}")
        st = info.get("stats") or {}
        if st:
            click.echo(f"stats (run {st.get('run_id')}): max {st.get('max_act') or 0:.3g}, mean {st.get('mean_act') or 0:.3g}, "
                       f"std {st.get('std_act') or 0:.3g}, frac active {st.get('frac_active') or 0:.3g}")
        for title, rows in (("explanations", info["explanations"]), ("baselines", info["baselines"])):
            if not rows:
                continue
            click.echo("")
            click.echo(click.style(title, bold=True))
            for e in rows:
                click.echo(f"  #{e['id']} {e['explainer']} ({e['method']}, {e['created_at']}): "
                           + click.style(e["text"], fg="cyan"))
                for sc in e["scores"]:
                    click.echo("  " + _score_line(sc["kind"], sc))
        click.echo("")
        click.echo(f"promoted:   {_fmt_tokens(info.get('promoted') or [])}")
        click.echo(f"suppressed: {_fmt_tokens(info.get('suppressed') or [])}")
        recs = [r for r in info.get("records") or [] if r["kind"] in ("top", "top_attn")][:n_show]
        if recs:
            click.echo("")
            click.echo(click.style("top records", bold=True) + f" ({info.get('n_records', 0)} stored):")
            for i, r in enumerate(recs, 1):
                click.echo(f"  {i}. [{r['max_act']:.2f}] " + highlight_tokens(r["tokens"], r["acts"], info["max_act"]).replace("\n", " "))

    emit(as_json, info, human)
