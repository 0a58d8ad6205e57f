"""`autointerp mine`: the thin face of autointerp.pipeline.mine_corpus (options checked, the run rendered)."""

from __future__ import annotations

import click

from ..corpus.sources import DEFAULT_CORPUS
from . import cli
from ..errors import UsageError
from .sae import sae_options
from .common import (UnitKindList, check_context_len, check_layers, check_min, check_store_path, emit, json_option, model_options,
                     settings, store_option)


@cli.command("mine")
@click.option("--corpus", default=DEFAULT_CORPUS, show_default=True,
              help="gensim (wiki + news) | gensim-wiki | gensim-news | FILE.txt | DIR (of .txt) | FILE.jsonl | "
                   "hf:NAME[:CONFIG][@SPLIT], optionally with ?shuffle=SEED (document order permuted) and "
                   "&doc_chars=N (each document cut to N characters), e.g. gensim-wiki?shuffle=1.")
@click.option("--text-field", default="text", show_default=True, help="The text field of JSONL / HF rows.")
@click.option("--tokens", "n_tokens", type=int, default=100_000, show_default=True,
              help="Tokens to mine (0: the whole corpus).")
@click.option("--context-len", type=int, default=64, show_default=True, help="Tokens per context (BOS included).")
@click.option("--layers", default=None, help="Layers, e.g. 0,1,2 or 0-5 [default: all].")
@click.option("--top-k", type=int, default=40, show_default=True, help="Top records per unit.")
@click.option("--quantiles", "n_quantiles", type=int, default=10, show_default=True, help="Activation quantile bins.")
@click.option("--per-quantile", type=int, default=2, show_default=True, help="Records per quantile bin.")
@click.option("--random", "n_random", type=int, default=20, show_default=True, help="Random records per unit.")
@click.option("--units", type=UnitKindList(), default=None,
              help="A unit kind, or a comma-separated list: MLP neurons, attention heads (needs eager attention: "
                   "slower), both (neurons,heads), only the --sae latents, or any registered kind's plural "
                   "[default: neurons; latents with --sae].")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Contexts per forward pass.")
@click.option("--shard", default=None,
              help="i/n: mine only the i-th of n equal ranges of the contexts (needs --tokens; one worker of n, each "
                   "with its own --store), then `autointerp merge` the n stores into exactly the run one process gives.")
@click.option("--latent-chunk", type=int, default=None,
              help="Mine SAE latents in chunks of this many, one pass over the corpus per chunk: memory for wide "
                   "SAEs (e.g. 16384 for a 131k SAE in 8 passes); the same records as one pass.")
@sae_options
@model_options
@store_option
@json_option
def mine_cmd(corpus, text_field, n_tokens, context_len, layers, top_k, n_quantiles, per_quantile, n_random, units,
             batch_size, shard, latent_chunk, sae_specs, sae_name, model_spec, device, dtype, store_path, as_json) -> None:
    """Mine top, quantile and random records and statistics for every unit of the chosen layers
    over a corpus, and each neuron's promoted/suppressed tokens. Resumable: rerun the same command
    after an interruption; a finished mine is not redone. With --sae, the SAE's latents are mined
    in the same pass (the encoder runs on the hooked activation). With --shard i/n, one of n
    workers: its part is kept for `autointerp merge` (no records until then)."""
    from ..corpus import open_source
    from ..pipeline import mine_corpus

    s = settings(model=model_spec, device=device, dtype=dtype, store=store_path)
    # every option is checked before the model loads or the store is touched
    check_min("--tokens", n_tokens, 0)
    from ..batch.plan import parse_shard

    shard = parse_shard(shard)
    check_min("--latent-chunk", latent_chunk)
    if latent_chunk is not None and shard is not None:
        raise UsageError("--latent-chunk and --shard do not combine: shard the corpus, or chunk the latents")
    if shard is not None and not n_tokens:
        raise UsageError("--shard needs --tokens N: the corpus is split into n equal ranges of contexts")
    if shard is not None and shard[1] > n_tokens // context_len:
        raise UsageError(f"--shard {shard[0]}/{shard[1]}: {n_tokens // context_len} contexts cannot be split in {shard[1]}")
    check_layers("--layers", layers, model_spec)
    check_context_len("--context-len", context_len, model_spec)
    for opt, v, low in (("--top-k", top_k, 1), ("--quantiles", n_quantiles, 1), ("--per-quantile", per_quantile, 0),
                        ("--random", n_random, 0), ("--batch-size", batch_size, 1)):
        check_min(opt, v, low)
    open_source(corpus, text_field)                 # a bad spec fails here (its text is read lazily)
    check_store_path(s.store)
    res = mine_corpus(s.store, s.model, device=s.device, dtype=s.dtype, sae_specs=sae_specs, sae_name=sae_name,
                      corpus=corpus, n_tokens=n_tokens or None, context_len=context_len, units=units,
                      progress=not as_json, layers=layers, top_k=top_k, n_quantiles=n_quantiles,
                      per_quantile=per_quantile, n_random=n_random, batch_size=batch_size, text_field=text_field,
                      shard=shard, latent_chunk=latent_chunk)
    emit(as_json, res.model_dump(), lambda: _print_run(res))


def _print_run(res) -> None:
    """A mining run for people."""
    lay = res.layers
    lays = f"{lay[0]}..{lay[-1]}" if len(lay) > 1 and lay == list(range(lay[0], lay[-1] + 1)) else ",".join(map(str, lay))
    recs = ", ".join(f"{v} {k}" for k, v in sorted(res.records.items()))
    click.echo(f"run {res.run_id}  model {res.model}  corpus {res.corpus}")
    nl = len(res.layers)
    what = " + ".join(f"{nl * n:,} {plural}" for plural, n in res.unit_counts.items()) or "SAE latents only"
    click.echo(f"  {res.n_tokens:,} tokens ({res.n_contexts:,} contexts of {res.context_len}), layers {lays}, {what}")
    if res.shard:
        sh = res.shard
        click.echo(f"  shard {sh['index']}/{sh['of']} of run {sh['run_id']}: contexts {sh['start']}..{sh['stop'] - 1}; "
                   f"no records until `autointerp merge` combines the {sh['of']} shard stores")
    else:
        click.echo(f"  records: {recs}")
    for d in res.latents or []:
        x = next(x for x in res.saes if x.name == d["sae"])
        click.echo(f"  SAE {d['sae']} ({x.hook}, {d['d_sae']:,} latents): L0 {d['l0']:.1f}, dead {d['dead']:,} "
                   f"({100 * d['dead_frac']:.1f}%), median firing frequency "
                   f"{'-' if d.get('median_freq') is None else format(d['median_freq'], '.2g')}; "
                   f"units L{x.layer}/F<i>@{d['sae']}")
    tps = f"{res.tokens_per_s:,.0f} tokens/s" if res.tokens_per_s else "-"
    click.echo(f"  mined in {res.seconds} s ({tps}; writing {res.finalize_s} s)"
               + (f", resumed at context {res.resumed_from}" if res.resumed_from else ""))
    click.echo(f"  store {res.store}")
