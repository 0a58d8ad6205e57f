"""`autointerp models` and `autointerp trace`."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from .common import check_layers, check_min, emit, json_option, load_subject, model_options, settings
from .sae import sae_options


def open_dataset(store_path, dataset: str, model_spec, device, dtype):
    """(store, subject model, dataset) for commands that run on a counterfactual dataset: a stored
    name needs an existing store and is checked before the model loads (nothing is created); a
    .jsonl/.json file is imported into the store after the model loads (it is validated on it)."""
    from ..store import Store
    from ..tasks import get_dataset, resolve_dataset
    from .common import check_store_path

    is_file = Path(dataset).is_file()
    check_store_path(store_path, must_exist=not is_file)
    store = Store(store_path, create=is_file)
    if not is_file:
        get_dataset(store, dataset)        # a missing name fails here, before the model loads
    hm = load_subject(model_spec, device, dtype)
    return store, hm, resolve_dataset(store, hm, dataset)


@cli.command("models")
@json_option
def models_cmd(as_json: bool) -> None:
    """The packaged model aliases: installed or not, family, sizes, and where the weights come from."""
    from ..models.loader import packaged_models

    rows = packaged_models()

    def human() -> None:
        click.echo(f"{'alias':<20} {'installed':<9} {'family':<8} {'layers':>6} {'d_model':>7} {'heads':>5} {'d_mlp':>6}")
        for r in rows:
            z = r.get("sizes") or {}
            alias = r["alias"] + (" *" if r.get("default") else "")
            click.echo(f"{alias:<20} {'yes' if r['installed'] else 'no':<9} {r['family']:<8} {z.get('n_layers', '?'):>6} "
                       f"{z.get('d_model', '?'):>7} {z.get('n_heads', '?'):>5} {z.get('d_mlp', '?'):>6}")
        click.echo("* the default.")
        for r in rows:
            if r.get("provenance") or r.get("old_names"):
                click.echo(f"{r['alias']}: {r['description']}")
                if r.get("provenance"):
                    click.echo(f"  provenance: {r['provenance']}")
                if r.get("sha256"):
                    click.echo(f"  sha256 of the GGUF: {r['sha256']}")
                if r.get("old_names"):
                    click.echo(f"  also answers to its old name: {', '.join(r['old_names'])}")
        missing = [r for r in rows if not r["installed"]]
        if missing:
            click.echo("To install one that is missing:")
        for r in missing:
            click.echo(f"  {r['alias']}: {r['pip']}")

    emit(as_json, rows, human)


@cli.command("trace")
@click.argument("text")
@click.option("--layer", "layers", type=int, multiple=True, help="Layer(s) to look at [default: all]. Repeatable.")
@click.option("--top", type=int, default=5, show_default=True, help="Neurons and heads shown per token.")
@click.option("--unit", "unit_id", default=None, metavar="UNIT",
              help="Instead: one unit's activation on every token (L3/N7, L2/H5, or L6/F12 with --sae), "
                   "as mining measures it and the viewer's test-your-text box shows it.")
@sae_options
@model_options
@json_option
def trace_cmd(text, layers, top, unit_id, sae_specs, sae_name, model_spec, device, dtype, as_json) -> None:
    """Run the subject model on TEXT: per token, the most active neurons and where heads attend
    (or, with --unit, that unit's activation). Stores nothing."""
    from ..mine.trace import trace, unit_trace
    from ..pipeline.saes import bind_unit, resolve_sae

    if unit_id is not None:
        saes = [resolve_sae(x, None, sae_name) for x in sae_specs]
        u = bind_unit(unit_id, saes)
        hm = load_subject(model_spec, device, dtype)
        sae = next((s for s in saes if s.name == u.sae), None) if u.sae else None
        ut = unit_trace(hm, text, u, sae)
        emit(as_json, ut.model_dump(), lambda: [click.echo(f"{i:>4} {t!r:<16} {a:+.4f}")
                                                 for i, (t, a) in enumerate(zip(ut.tokens, ut.acts))])
        return
    check_min("--top", top, 1)
    if layers:
        check_layers("--layer", ",".join(map(str, layers)), model_spec)
    hm = load_subject(model_spec, device, dtype)
    t = trace(hm, text, list(layers) or None, top)

    def human() -> None:
        click.echo(f"model {t.model}, layers {_ranges(t.layers)}")
        for tok in t.tokens:
            neurons = "  ".join(f"{n.unit} {n.act:+.2f}" for n in tok.neurons)
            heads = "  ".join(f"{h.unit}->{h.attends_to}{h.token!r} {h.weight:.2f}" for h in tok.heads[:3])
            click.echo(f"{tok.pos:>4} {tok.token!r:<14} {neurons}")
            if heads:
                click.echo(f"{'':>4} {'':<14} attn: {heads}")

    emit(as_json, t.model_dump(), human)


def _ranges(xs: list[int]) -> str:
    return f"{xs[0]}..{xs[-1]}" if len(xs) > 1 and xs == list(range(xs[0], xs[-1] + 1)) else ",".join(map(str, xs))
