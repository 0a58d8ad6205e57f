"""`autointerp validate`: causal tests of a unit's explanation (probes and interventions)."""

from __future__ import annotations

import click

from . import cli
from ..core.units import Unit
from .sae import sae_options
from .common import (check_fraction, check_store_path, check_unit, emit, json_option, llm_options, model_options, settings,
                     store_option)


def _f(v, fmt="{:+.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _print_validation(v, title: str) -> None:
    p = v.probes
    click.echo(click.style(title, bold=True) + f" #{v.explanation_id} ({v.explainer}{', cached' if v.cached else ''}): "
               + click.style(v.text, fg="cyan"))
    click.echo(f"  key words ({v.key_source}): {', '.join(repr(w) for w in v.key_words) or '-'}"
               + (f"; names as output: {', '.join(repr(w) for w in v.output_words)}" if v.output_words else ""))
    ci = f"  95% CI [{p.auc_ci[0]:.2f}, {p.auc_ci[1]:.2f}]" if p.auc_ci else ""
    auc = f"null ({p.auc_reason})" if p.auc is None and p.auc_reason else _f(p.auc, '{:.3f}')
    click.echo(f"  probe AUC       {auc}{ci}  (n={p.n}, {p.n_pos} predicted to fire, {p.n_fired} fired)")
    click.echo(f"  probe precision {_f(p.precision, '{:.3f}')}   recall {_f(p.recall, '{:.3f}')}")
    for src, d in p.by_source.items():
        auc_s = f"null ({d['auc_reason']})" if d.get("auc") is None and d.get("auc_reason") else _f(d["auc"], "{:.3f}")
        click.echo(f"    {src:<5} AUC {auc_s}  precision {_f(d['precision'], '{:.3f}')}  "
                   f"recall {_f(d['recall'], '{:.3f}')}  (n={d['n']})")
    if v.llm_info.get("error"):
        click.echo(f"    llm probes failed: {v.llm_info['error'][:120]}")
    it = v.intervention
    if it is not None:
        click.echo(f"  intervention    {_f(it.value, '{:.3f}')}  (counterfactual edit removes the activation and lowers the "
                   f"promoted tokens; {it.n_edited}/{it.n_records} top contexts edited, act drop {_f(it.act_drop, '{:.2f}')})")
        for m, e in it.modes.items():
            click.echo(f"    {m:<5} KL {_f(e.kl, '{:.2e}')}  dlogit promoted {_f(e.dlogit_promoted)}  suppressed "
                       f"{_f(e.dlogit_suppressed)}" + (f"  named {_f(e.dlogit_named)}" if e.dlogit_named is not None else "")
                       + f"  direction {_f(e.direction, '{:.2f}')}  (n={e.n})")
    shown = [pr for pr in v.probe_list if pr.source == "llm"][:4] + [pr for pr in v.probe_list if pr.source == "code"][:4]
    for pr in shown:
        mark = "+" if pr.label else "-"
        fired = click.style("fires", fg="green") if pr.fires else "quiet"
        click.echo(f"    {mark} [{pr.source} {pr.max_act:.2f} {fired}] {pr.text[:90]!r}")


@cli.command("validate")
@click.option("--unit", "unit", required=True, help="Unit whose explanation is tested, e.g. L3/N42, or an SAE latent "
                                                    "L6/F12 with --sae (or L6/F12@NAME of an SAE in the store).")
@click.option("--explanation", "explanation_id", type=int, default=None,
              help="Explanation id [default: the unit's newest LLM explanation].")
@click.option("--frac", type=float, default=0.25, show_default=True,
              help="A probe fires / a position is active at >= frac x the unit's mined max.")
@click.option("--no-llm", is_flag=True, help="Code-built probes only (no LLM-written texts).")
@click.option("--no-baseline", is_flag=True, help="Do not also test the unit's non-LLM baseline explanation.")
@click.option("--seed", type=int, default=0, show_default=True)
@sae_options
@model_options
@llm_options
@store_option
@json_option
def validate_cmd(unit, explanation_id, frac, no_llm, no_baseline, seed, sae_specs, sae_name, model_spec, device, dtype,
                 llm_spec, llm_base_url, store_path, as_json) -> None:
    """Test an explanation causally on the subject model: probes (new texts predicted to make the
    unit fire or not; code-built minimal pairs and LLM-written texts) scored by AUC, precision and
    recall, and interventions (zero/mean ablation, counterfactual patching) on the unit's top
    contexts. The non-LLM baseline gets the same tests. Stored as scores of kinds probe_auc,
    probe_precision, probe_recall and intervention. An SAE latent is tested with its SAE spliced
    into the model (reconstruction + error term): the interventions edit that latent alone."""
    from ..models.hooked import HookedModel
    from ..store import Store
    from ..validate import ValidateSettings, validate_explanation

    s = settings(model=model_spec, device=device, dtype=dtype, llm=llm_spec, llm_base_url=llm_base_url, store=store_path)
    check_fraction("--frac", frac)
    u0 = Unit.parse(unit)
    sae = None
    if sae_specs or u0.record.needs_sae:           # an SAE latent: bound to its SAE (--sae or its @name)
        check_store_path(s.store, must_exist=True)
        from ..pipeline.saes import bind_saes

        with Store(s.store, readonly=True, create=False) as ro:
            bound, saes = bind_saes(u0, sae_specs, ro, sae_name)
        unit = bound.id
        sae = next(x for x in saes if x.name == bound.sae)
    else:
        check_unit("--unit", unit, s.model)         # a malformed or out-of-range id fails before the model loads
    check_store_path(s.store, must_exist=True)      # the unit's explanations are read from it: nothing to create
    store = Store(s.store, create=False)
    hm = HookedModel.load(s.model, device=s.device, dtype=s.dtype, progress=not as_json)
    llm = None
    if not no_llm:
        from ..pipeline import make_llm

        llm = make_llm(s.llm, store=store, base_url=s.llm_base_url, hm=hm, settings=s)
    vs = ValidateSettings(frac=frac, seed=seed, use_llm=not no_llm)
    res = validate_explanation(store, hm, llm, s.model, unit, explanation_id, settings=vs, baseline=not no_baseline,
                               sae=sae)

    def human() -> None:
        click.echo(click.style(res.unit, bold=True) + f"  {res.model_id}  run {res.run_id}  max act {res.unit_max:.3g}"
                   f"  fires at >= {res.threshold:.3g}")
        click.echo("")
        _print_validation(res.explanation, "explanation")
        if res.baseline is not None:
            click.echo("")
            _print_validation(res.baseline, "baseline")
        click.echo("")
        click.echo(", ".join(f"{k} {v:.1f}s" for k, v in res.timings.items()))

    emit(as_json, res.model_dump(), human)
