"""`autointerp query`, `stats`, `export` and `merge`: read the store, and combine shards."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path

import click

from ..errors import StoreError, UsageError
from ..core.files import atomic_output
from ..core.units import UNIT_KINDS
from . import cli
from .common import UnitKindNames, check_out_file, emit, force_option, json_option, settings, store_option


def open_store(store_path: Path | None, readonly: bool = True):
    """The store named by --store/$AUTOINTERP_STORE/config, opened read-only by default."""
    from ..store import Store
    from .common import check_store_path

    path = check_store_path(settings(store=store_path).store, must_exist=readonly)
    return Store(path, readonly=readonly, create=not readonly)


def _fmt_score(r: dict) -> str:
    if r.get("score") is None:
        return "   -  "
    ci = f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r.get("ci_low") is not None and r.get("ci_high") is not None else ""
    return f"{r['score']:+.2f}{ci}"


def _fmt_margin(r: dict) -> str:
    if r.get("margin") is None:
        return "   -  "
    iv = f" [{r['margin_low']:+.2f}, {r['margin_high']:+.2f}]" if r.get("margin_low") is not None else ""
    return f"{r['margin']:+.2f}{iv}"


@cli.command("query")
@click.argument("text", required=False)
@click.option("--min-score", type=float, default=None, help="Keep explanations whose best simulation score is at least this.")
@click.option("--min-margin", type=float, default=None,
              help="Keep explanations whose best simulation score beats its null control by at least this.")
@click.option("--layer", type=int, default=None, help="Only units of this layer.")
@click.option("--model", "model_id", default=None, help="Only units of this model (as stored, e.g. smollm2-135m).")
@click.option("--explainer", default=None, help="Only explanations by this explainer ('baseline' for the non-LLM baseline).")
@click.option("--kind", type=UnitKindNames(plural=False), default=None, help="Only neurons or only heads.")
@click.option("--any", "any_word", is_flag=True, help="Match any of the words (default: all of them).")
@click.option("--dataset", default=None, help="Units that matter for this dataset (patching results), with their explanations.")
@click.option("--min-effect", type=float, default=0.0, show_default=True, help="With --dataset: minimum |effect|.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@store_option
@json_option
def query_cmd(text, min_score, min_margin, layer, model_id, explainer, kind, any_word, dataset, min_effect, limit, store_path, as_json):
    """Full-text search over explanations (SQLite FTS5, ranked by bm25), filtered by score, layer,
    model and explainer. Without TEXT: the best-scored explanations.

    \b
    With --dataset D --min-effect E: explained units with |patching effect| >= E on dataset D
    (and best simulation score >= --min-score), most important first.
    """
    if not text and not dataset and min_score is None and min_margin is None and layer is None and model_id is None and explainer is None and kind is None:
        raise UsageError("give search words, or a filter (--min-score, --layer, --model, --explainer, --kind, --dataset)")
    with open_store(store_path) as store:
        if model_id is not None and store.get_model(model_id) is None:
            raise UsageError(f"no model {model_id!r} in the store (models: {', '.join(store.model_ids()) or 'none'})")
        if layer is not None:
            sizes = [store.get_model(model_id)] if model_id else [store.get_model(m) for m in store.model_ids()]
            n_layers = max((m["n_layers"] for m in sizes if m), default=None)
            if n_layers is not None and not 0 <= layer < n_layers:
                raise UsageError(f"layer {layer} out of range (layers 0..{n_layers - 1})")
        if dataset:
            rows = store.dataset_units(dataset, min_effect=min_effect, min_score=min_score, model=model_id, text=text, limit=limit)
            if layer is not None:
                rows = [r for r in rows if r["layer"] == layer]
            if explainer is not None:
                rows = [r for r in rows if r["explainer"] == explainer]
        else:
            rows = store.search(text, model=model_id, layer=layer, explainer=explainer, min_score=min_score, limit=limit,
                                any_word=any_word, kind=kind, min_margin=min_margin)

    def human() -> None:
        if not rows:
            click.echo("no matches", err=True)
            return
        if dataset:
            click.echo(f"{'unit':<9} {'layer':>5} {'effect':>7}  {'score [ci]':<22} explanation")
            for r in rows:
                click.echo(f"{r['unit']:<9} {r['layer']:>5} {r['effect']:>+7.3f}  {_fmt_score(r):<22} {r['explanation']}")
        else:
            click.echo(f"{'unit':<9} {'layer':>5}  {'score [ci]':<22} {'margin [ci]':<22} {'explainer':<12} explanation")
            for r in rows:
                click.echo(f"{r['unit']:<9} {r['layer']:>5}  {_fmt_score(r):<22} {_fmt_margin(r):<22} {r['explainer'][:12]:<12} "
                           f"{r['text']}")

    emit(as_json, rows, human)


@cli.command("stats")
@click.option("--model", "model_id", default=None, help="Only this model's units.")
@store_option
@json_option
def stats_cmd(model_id, store_path, as_json):
    """Coverage per layer and unit kind, SAE latents per SAE (units explained / units mined), the
    score distribution, LLM tokens and cost, and rows per table."""
    with open_store(store_path) as store:
        st = store.stats(model=model_id)

    def human() -> None:
        click.echo(f"store {st['store']}  models: {', '.join(st['models']) or 'none'}")
        click.echo("\ncoverage (units with an LLM explanation / units mined)")
        kw = max([7] + [len(c["kind"]) for c in st["coverage"]])
        sw = max([3] + [len(c["sae"]) for c in st["coverage"] if c.get("sae")])
        with_sae = any(c.get("sae") for c in st["coverage"])     # an SAE column only when latents name one
        sae_col = (lambda v: f" {v:<{sw}}") if with_sae else (lambda v: "")
        click.echo(f"  {'layer':>5} {'kind':<{kw}}{sae_col('sae')} {'mined':>6} {'explained':>9} {'scored':>6} {'coverage':>8} "
                   f"{'mean score':>10}")
        for c in st["coverage"]:
            cov = f"{100 * c['coverage']:.0f}%" if c["coverage"] is not None else "-"
            ms = f"{c['mean_score']:+.3f}" if c.get("mean_score") is not None else "-"
            click.echo(f"  {c['layer'] if c['layer'] is not None else '?':>5} {c['kind']:<{kw}}{sae_col(c.get('sae') or '-')} "
                       f"{c['mined']:>6} {c['explained']:>9} {c['scored']:>6} {cov:>8} {ms:>10}")
        for t in st.get("coverage_by_kind") or []:
            k = UNIT_KINDS.get(t["kind"])
            what = (k.plural if k else f"{t['kind']} units") + (f" of {t['sae']}" if t["sae"] else
                                                                 " not bound to an SAE" if k and k.needs_sae else "")
            cov = f" ({100 * t['coverage']:.0f}%)" if t["coverage"] is not None else ""
            click.echo(f"  all layers, {what}: mined {t['mined']}, explained {t['explained']}{cov}, scored {t['scored']} "
                       f"({t['layers']} layer{'s' if t['layers'] != 1 else ''})")
        for name, d in (("simulation scores, LLM explanations", st["scores"]),
                        ("simulation scores, baseline", st["baseline_scores"]),
                        ("margins over the null control, LLM explanations", st.get("margins") or {"n": 0}),
                        ("exact-simulation scores, baseline (no LLM)", st.get("baseline_exact_scores") or {"n": 0})):
            if not d["n"]:
                click.echo(f"\n{name}: none")
                continue
            click.echo(f"\n{name}: n={d['n']} mean={d['mean']:+.3f} median={d['median']:+.3f} "
                       f"min={d['min']:+.3f} max={d['max']:+.3f}")
            hist = d["histogram"]
            nz = [i for i, h in enumerate(hist) if h["count"]]
            top = max(h["count"] for h in hist)
            for h in hist[nz[0]:nz[-1] + 1]:
                click.echo(f"  [{h['low']:+.1f}, {h['high']:+.1f}) {h['count']:>6} {'#' * max(1 if h['count'] else 0, round(40 * h['count'] / top))}")
        if st.get("null_scores"):
            click.echo("\nnull scores (no information, with a reason): " + ", ".join(f"{k} {n}" for k, n in st["null_scores"].items()))
        cals = st.get("calibrations") or {}
        if cals:
            click.echo("\nscorer calibration on planted units (AUROC, true vs decoy explanations):")
            for name, c in cals.items():
                parts = [f"{k[:-6]} {c[k]:.2f}" + (f" [{c[k + '_low']:.2f}, {c[k + '_high']:.2f}]" if c.get(k + "_low") is not None else "")
                         for k in c if k.endswith("_auroc") and c[k] is not None]
                click.echo(f"  {name} (#{c['id']}, {c['n_units']} units): " + ", ".join(parts))
        else:
            click.echo("\nscorer calibration: none (run `autointerp calibrate`); LLM scores here are uncalibrated")
        llm = st["llm"]
        click.echo(f"\nLLM: {llm['calls']} calls, {llm['prompt_tokens']} prompt + {llm['completion_tokens']} completion tokens, "
                   f"${llm['cost_usd']:.4f}")
        for r in llm["by_model"]:
            click.echo(f"  {r['backend']}:{r['model']:<30} {r['calls']:>7} calls {r['cache_hits'] or 0:>6} cached "
                       f"{r['prompt_tokens']:>10} + {r['completion_tokens']:>8} tok  ${r['cost_usd']:.4f}")
        click.echo("\nrows: " + ", ".join(f"{t} {n}" for t, n in st["counts"].items()))

    emit(as_json, st, human)


@cli.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "neuronpedia"]), default="jsonl", show_default=True,
              help="neuronpedia: a folder of upload batches for Neuronpedia (explanations, records, logits, "
                   "density) and scores.jsonl; --out names the folder.")
@click.option("--what", type=click.Choice(["explanations", "scores", "records", "patching", "graph"]),
              default="explanations", show_default=True,
              help="Which rows (jsonl, csv); graph: one stored attribution graph (--graph ID) as circuit-tracer / "
                   "Neuronpedia JSON.")
@click.option("--graph", "graph_id", type=int, default=None, help="--what graph: the graph's id.")
@click.option("--model", "model_id", default=None, help="Only this model's rows.")
@click.option("--np-model", default=None, help="neuronpedia: the model's id on Neuronpedia [default: the store's].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write here instead of stdout.")
@force_option
@store_option
def export_cmd(fmt, what, model_id, np_model, out, graph_id, force, store_path):
    """Export explanations (with their best score), scores, records (activations and tokens as
    lists) or patching results as JSON lines or CSV (lists as JSON text); or one attribution graph
    in circuit-tracer's graph JSON (which its local server and Neuronpedia read); or, with --format
    neuronpedia, the explained units in Neuronpedia's upload format (a new folder). --out never
    replaces an existing file unless --force is given, and is written whole or not at all."""
    if fmt == "neuronpedia":
        _export_neuronpedia(store_path, model_id, np_model, out)
        return
    if np_model is not None:
        raise UsageError("--np-model is for --format neuronpedia")
    check_out_file("--out", out, force=force)
    if what == "graph":
        return _export_graph(graph_id, out, force, store_path)
    with open_store(store_path) as store:
        rows = store.export_rows(what, model=model_id)
        with (atomic_output(out, force=force, option="--out", newline="") if out else contextlib.nullcontext(sys.stdout)) as f:
            n = 0
            writer = None
            for r in rows:
                if fmt == "jsonl":
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
                else:
                    if writer is None:
                        writer = csv.DictWriter(f, fieldnames=list(r))
                        writer.writeheader()
                    writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
                n += 1
        if out:
            click.echo(f"exported {n} {what} rows to {out}", err=True)


def _export_neuronpedia(store_path, model_id, np_model, out: Path | None) -> None:
    """Write <out>/<source>.<n>.json (one upload batch each), <out>/scores.jsonl and
    <out>/manifest.json into a new folder (built as <out>.part, then renamed: nothing is overwritten)."""
    import shutil

    from ..store.neuronpedia import neuronpedia_export

    if out is None:
        raise UsageError("--format neuronpedia writes a folder: give it with --out DIR")
    out = Path(out).expanduser()
    if out.exists():
        raise UsageError(f"--out {out} exists; name a new folder (nothing is overwritten)")
    check_out_file("--out", out)
    tmp = out.with_name(out.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files, n_feat, n_scores = [], 0, 0
    try:
        with open_store(store_path) as store, open(tmp / "scores.jsonl", "w", encoding="utf-8") as sf:
            counts: dict[str, int] = {}
            for source, payload, scores in neuronpedia_export(store, model_id, np_model):
                k = counts[source] = counts.get(source, 0) + 1
                name = f"{payload['modelId']}.{source}.{k}.json"
                (tmp / name).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
                files.append({"file": name, "modelId": payload["modelId"], "source": source,
                              "features": len(payload["features"])})
                n_feat += len(payload["features"])
                for r in scores:
                    sf.write(json.dumps(r, ensure_ascii=False) + "\n")
                n_scores += len(scores)
        if not files:
            raise UsageError("nothing to export: no explained unit" + (f" of {model_id}" if model_id else "")
                             + " in this store")
        (tmp / "manifest.json").write_text(json.dumps({"format": "neuronpedia upload-batch (neuronpedia 1.2.x)",
                                                       "batches": files, "scores": "scores.jsonl"}, indent=1))
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    click.echo(f"exported {n_feat} features in {len(files)} batch(es) and {n_scores} scores to {out}/ "
               "(upload each batch with neuronpedia's Source.upload_batch)", err=True)


def _export_graph(graph_id, out, force, store_path) -> None:
    from ..graph.export import neuronpedia_json

    if graph_id is None:
        raise UsageError("--what graph needs --graph ID (see the ids `autointerp graph` prints)")
    with open_store(store_path) as store:
        g = store.get_graph(graph_id)
        if g is None:
            raise UsageError(f"--graph {graph_id}: no such graph in {store.path}")
        text = json.dumps(neuronpedia_json(store.with_explanations(g)), indent=1)
    if out is None:
        click.echo(text)
        return
    with atomic_output(out, force=force, option="--out") as f:
        f.write(text)
    click.echo(f"exported graph {graph_id} to {out}", err=True)


@cli.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--into", "target", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The store to merge into (created if missing).")
@json_option
def merge_cmd(sources, target, as_json):
    """Combine stores (e.g. the shards of `batch --shard i/n`) into one, without duplicates: rows
    are matched by their keys and integer ids are remapped. One transaction: on any error the
    target is left as it was. The corpus shards of a mine (`mine --shard i/n`) are merged into
    the one finished run that a single `mine` gives (every shard must be there), written after
    the copy (a merge that stops there is completed by running it again)."""
    from ..store import Store
    from ..store.query import mining_shards
    from ..store.query import open_source as _open_source

    for p in sources:  # check every source before the target is created or touched
        _open_source(p).close()
        if target.exists() and p.resolve() == target.resolve():
            raise UsageError(f"{p} is the merge target itself; name it once, with --into")
    plan = {}
    shards = {p: mining_shards(p) for p in sources}
    if any(shards.values()):                        # corpus shards of a mine: checked complete before any write
        from ..mine.shards import plan_merge

        plan = plan_merge(shards)
    with Store(target) as store:
        added = store.merge_from(sources)
        mined = []
        if plan:
            from ..mine.shards import merge_shards

            mined = merge_shards(store, plan)
        counts = store.counts()
    data = {"into": str(target), "sources": [str(p) for p in sources], "added": added, "counts": counts,
            "mining_runs": mined}

    def human() -> None:
        new = ", ".join(f"{t} +{n}" for t, n in added.items() if n) or "nothing new"
        click.echo(f"merged {len(sources)} store(s) into {target}: {new}")
        for m in mined:
            click.echo(f"  mining run {m['run_id']}: " + ("already merged" if m["already"] else
                       f"{m['shards']} corpus shards, {m['n_contexts']:,} contexts, merged in {m['seconds']} s"))

    emit(as_json, data, human)


__all__ = ["open_store", "StoreError"]
