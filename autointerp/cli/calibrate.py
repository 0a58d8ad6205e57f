"""`autointerp calibrate`: how far to trust the scorers with this LLM, measured on planted units."""

from __future__ import annotations

import click

from . import cli
from ..score.registry import default_scorers, scorer_names
from .common import emit, json_option, llm_options, model_options, settings, store_option


@cli.command("calibrate")
@click.option("--units", "units_file", default=None, type=click.Path(dir_okay=False),
              help="Planted units (JSON: name, explanation, rule, decoys) [default: the built-in set].")
@click.option("--scorers", default=",".join(default_scorers()), show_default=True,
              help=f"Comma-separated scorers to calibrate: {', '.join(scorer_names())}.")
@click.option("--simulator", type=click.Choice(["auto", "logprobs", "yesno", "contrastive", "json"]), default="auto", show_default=True,
              help="The LLM simulator to calibrate.")
@click.option("--corpus", default=None, help="Corpus the planted units are mined from [default: the offline corpus].")
@click.option("--tokens", "n_tokens", type=int, default=16384, show_default=True, help="Tokens of the corpus to mine.")
@click.option("--n-test", type=int, default=3, show_default=True, help="Test split: this many top and as many random records.")
@click.option("--no-explain", is_flag=True, help="Skip the explainer-recovery part (the LLM explaining each planted unit).")
@click.option("--exact-only", is_flag=True, help="No LLM at all: calibrate the exact scorer only.")
@click.option("--other-decoys", "n_other", type=int, default=0, show_default=True,
              help="Also score this many other planted units' true explanations as decoys of each unit.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples for the AUROC intervals.")
@model_options
@llm_options
@store_option
@json_option
def calibrate_cmd(units_file, scorers, simulator, corpus, n_tokens, n_test, no_explain, exact_only, n_other, seed, n_boot,
                  model_spec, device, dtype, llm_spec, llm_base_url, store_path, as_json) -> None:
    """Run the real explain -> simulate -> score pipeline on planted units (units whose behaviour a
    rule defines on the real corpus) and report each scorer's discrimination: the AUROC of true
    explanations' scores against decoys' scores, with a bootstrap interval over units; and how
    the LLM's own explanations score next to the true ones. Stored, so `explain` can say whether
    its LLM scores are calibrated."""
    from ..errors import UsageError
    from ..mine.planted import load_planted
    from ..pipeline import make_llm
    from ..pipeline.calibrate import CalibrateSettings, calibrate
    from ..score.splits import SplitSizes
    from ..store import Store

    if n_test < 1:
        raise UsageError("--n-test must be at least 1")
    cs = CalibrateSettings(n_tokens=n_tokens, corpus=corpus, simulator=simulator, explain=not no_explain and not exact_only,
                           scorers=("exact",) if exact_only else tuple(x.strip() for x in scorers.split(",") if x.strip()),
                           sizes=SplitSizes(n_train=6, n_calib=0, n_test=n_test), n_boot=n_boot, seed=seed,
                           n_other=n_other).check()
    load_planted(units_file)                         # a bad file fails before any model loads
    s = settings(model=model_spec, device=device, dtype=dtype, llm=llm_spec, llm_base_url=llm_base_url, store=store_path)
    from ..models.hooked import HookedModel

    hm = HookedModel.load(s.model, device=s.device, dtype=s.dtype)
    store = Store(s.store)
    llm = None if exact_only else make_llm(s.llm, store=store, base_url=s.llm_base_url, hm=hm, settings=s)

    def progress(i, n, name):
        click.echo(f"calibrate: unit {i + 1}/{n} {name}", err=True)

    rep = calibrate(store, llm, tokenizer=hm.tokenizer, model_id=s.model, units_file=units_file, settings=cs,
                    progress=progress)

    def human() -> None:
        click.echo(f"calibration #{rep['id']}: {rep['summary']['n_units']} planted units mined from "
                   f"{rep['n_contexts']} contexts of {cs.corpus or 'the default corpus'} ({s.model} tokenizer); LLM {rep['llm']}")
        click.echo("discrimination (AUROC of true-explanation scores vs decoys; 0.5 = cannot tell right from wrong):")
        for name, r in rep["scorers"].items():
            a = r["auroc"]
            iv = f"  95% CI [{r['low']:.2f}, {r['high']:.2f}]" if r["low"] is not None else ""
            val = f"{a:.3f}" if a is not None else f"null ({r.get('reason') or 'no scores'})"
            null = f", {r['n_null']} null" if r["n_null"] else ""
            click.echo(f"  {name:<11} {val}{iv}  ({r['n_true']} true, {r['n_decoy']} decoys{null}; true beats every decoy "
                       f"in {r['units_true_beats_all']}/{rep['summary']['n_units']} units; {r['seconds']:.1f}s)")
        rec = {n: r["recovery"] for n, r in rep["scorers"].items() if r.get("recovery")}
        if rec:
            click.echo("explainer recovery (the LLM's own explanation of each planted unit):")
            for name, r in rec.items():
                if r["n"]:
                    click.echo(f"  {name:<11} mean {r['llm_mean']:+.3f} vs true {r['true_mean']:+.3f}; above every decoy "
                               f"in {r['llm_beats_all_decoys']}/{r['n']} units")
            for pu in rep["units"]:
                c = next((c for c in pu["candidates"] if c["role"] == "llm"), None)
                if c is not None:
                    click.echo(f"    {pu['name']:<14} {c['text']!r}")
        for sk in rep["skipped"]:
            click.echo(f"  skipped {sk['name']}: {sk['reason']}")
        t = rep["timings"]
        click.echo("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))

    emit(as_json, rep, human)
