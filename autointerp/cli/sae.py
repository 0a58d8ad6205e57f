"""`autointerp sae ...` and the --sae option of mine/explain: SAEs and transcoders (SAELens
format) whose latents are units L<layer>/F<i>@<name>. Thin: loading is models/sae.py, mining
mine/, training mine/sae_train.py, the registry store/saes.py."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from . import cli
from .common import check_min, check_store_path, emit, json_option, model_options, settings, store_option


def sae_options(f):
    f = click.option("--sae-name", default=None,
                     help="Name of the SAE in unit ids (L6/F12@NAME) [default: its folder's name].")(f)
    return click.option("--sae", "sae_specs", multiple=True, metavar="PATH_OR_NAME",
                        help="An SAE or transcoder: a SAELens folder (cfg.json + sae_weights.safetensors), "
                             "saelens:RELEASE:SAE_ID (needs autointerp[sae]), or the name of one in the store.")(f)


@cli.group("sae")
def sae_group() -> None:
    """Sparse autoencoders and transcoders: train a small one, list those in the store."""


@sae_group.command("train")
@click.option("--kind", "arch", type=click.Choice(["sae", "transcoder"]), default="sae", show_default=True,
              help="sae: a TopK SAE on one hook point; transcoder: per-layer MLP transcoders (--layers).")
@click.option("--layer", type=int, default=None, help="Layer whose residual stream (after the block) is read (--kind sae).")
@click.option("--layers", "layers_text", default=None,
              help="--kind transcoder: the layers, e.g. 0-29 or 0,3,5; all are trained from one streamed pass.")
@click.option("--l1", type=float, default=1.0, show_default=True, help="--kind transcoder: L1 sparsity coefficient.")
@click.option("--skip", is_flag=True, help="--kind transcoder: add a linear skip connection (skip_transcoder).")
@click.option("--hook", default=None, help="Another hook point, e.g. blocks.3.mlp.out [default: blocks.L.resid_post].")
@click.option("--latents", type=int, default=4096, show_default=True, help="Number of latents (d_sae).")
@click.option("--k", type=int, default=32, show_default=True, help="Active latents per token (TopK).")
@click.option("--tokens", "n_tokens", type=int, default=500_000, show_default=True, help="Training tokens (one pass).")
@click.option("--corpus", default=None, help="Text to train on [default: the offline gensim corpus].")
@click.option("--context-len", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=None, help="Adam learning rate [default: 2e-4 * sqrt(16384 / latents)].")
@click.option("--minibatch", type=int, default=512, show_default=True, help="Tokens per Adam step.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Folder to write (SAELens format).")
@model_options
@json_option
def sae_train_cmd(arch, layer, layers_text, l1, skip, hook, latents, k, n_tokens, corpus, context_len, lr, minibatch,
                  seed, out, model_spec, device, dtype, as_json) -> None:
    """Train a TopK SAE (Adam, reconstruction loss + AuxK on dead latents) on activations streamed
    from the model; write it in the SAELens format that --sae loads. Reports explained variance,
    L0 and the dead-latent fraction on held-out contexts.

    With --kind transcoder: per-layer MLP transcoders (read the MLP input after its norm, predict
    the MLP output; ReLU + L1, optional --skip), all --layers from one streamed pass, written as a
    transcoder set (DIR/layer_<L>/ in the SAELens format) that `autointerp graph --transcoders`
    reads. Reports per layer the explained variance of the MLP output, L0 and dead latents, and the
    next-token loss with all these MLPs replaced (CE loss recovered)."""
    if arch == "transcoder":
        return _train_transcoders(layers_text if layers_text is not None else layer, l1, skip, latents, n_tokens,
                                  corpus, context_len, lr, minibatch, seed, out, model_spec, device, dtype, as_json)
    if layer is None:
        raise UsageError("--layer is required for --kind sae")
    from ..core.hooks import act_name
    from ..corpus.sources import DEFAULT_CORPUS, open_source
    from ..mine.sae_train import train_topk
    from ..models.sae import safe_name
    from .common import load_subject

    for opt, v, low in (("--layer", layer, 0), ("--latents", latents, 1), ("--k", k, 1), ("--tokens", n_tokens, 1),
                        ("--minibatch", minibatch, 1), ("--context-len", context_len, 2)):
        check_min(opt, v, low)
    if k > latents:
        raise UsageError(f"--k {k} is more than --latents {latents}")
    if out.exists() and any(out.iterdir()) and not (out / "cfg.json").exists():
        raise UsageError(f"--out {out} is a non-empty folder that holds no SAE; choose an empty one")
    hook = act_name(hook, None) if hook else act_name("resid_post", layer)
    corpus = corpus or DEFAULT_CORPUS
    open_source(corpus)
    hm = load_subject(model_spec, device, dtype)
    sae, rep = train_topk(hm, hook, latents, k, n_tokens, corpus=corpus, context_len=context_len, lr=lr,
                          minibatch=minibatch, seed=seed, name=safe_name(out.name), progress=not as_json)
    sae.save(out, model_name=hm.spec)
    rep = {**rep, "out": str(out), "model": hm.spec}

    def human() -> None:
        click.echo(f"SAE {out}  ({hm.spec} {hook}, {latents:,} latents, k={k})")
        click.echo(f"  trained on {rep['tokens']:,} tokens in {rep['steps']} steps ({rep['seconds']} s)")
        click.echo(f"  held out ({rep['eval_tokens']:,} tokens): explained variance {rep['explained_variance']:.3f}, "
                   f"L0 {rep['l0']:.1f}, dead latents {100 * rep['dead_frac']:.1f}% "
                   f"(never fired in training; {100 * rep['dead_frac_eval']:.1f}% silent on held-out)")
        click.echo(f"  use it: autointerp mine --sae {out} ...; autointerp explain --unit L{layer}/F0 --sae {out}")

    emit(as_json, rep, human)


def _train_transcoders(layers_text, l1, skip, latents, n_tokens, corpus, context_len, lr, minibatch, seed, out,
                       model_spec, device, dtype, as_json) -> None:
    from ..corpus.sources import DEFAULT_CORPUS, open_source
    from ..mine.miner import parse_layers
    from ..mine.sae_train import train_transcoders
    from ..models.sae import safe_name
    from ..models.transcoders import TranscoderSet, model_fingerprint
    from .common import load_subject

    if layers_text is None:
        raise UsageError("--kind transcoder needs --layers (e.g. 0-29)")
    for opt, v, low in (("--latents", latents, 1), ("--tokens", n_tokens, 1), ("--minibatch", minibatch, 1),
                        ("--context-len", context_len, 2)):
        check_min(opt, v, low)
    if l1 < 0 or l1 != l1:
        raise UsageError(f"--l1 must be >= 0, got {l1}")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is a non-empty folder; choose a new one (nothing there is overwritten)")
    corpus = corpus or DEFAULT_CORPUS
    open_source(corpus)
    hm = load_subject(model_spec, device, dtype)
    layers = parse_layers(str(layers_text), hm.n_layers)
    name = safe_name(out.name)
    tcs, rep = train_transcoders(hm, layers, latents, l1, n_tokens, skip=skip, corpus=corpus, context_len=context_len,
                                 lr=lr, minibatch=minibatch, seed=seed, name=name, progress=not as_json)
    TranscoderSet(name=name, model=hm.spec, by_layer=tcs, report=rep, fingerprint=model_fingerprint(hm)).save(out)
    rep = {**rep, "out": str(out), "model": hm.spec, "name": name}

    def human() -> None:
        click.echo(f"transcoder set {out}  ({hm.spec}, layers {layers[0]}-{layers[-1]} ({len(layers)}), "
                   f"{latents:,} latents each, {rep['kind']}, l1={l1})")
        tm = rep["timing"]
        click.echo(f"  trained on {rep['tokens']:,} tokens (one pass, every layer per forward) in {rep['steps']} steps "
                   f"of {rep['minibatch']}: {rep['seconds']} s (model forwards {tm['forward_s']} s, transcoder steps "
                   f"{tm['train_s']} s, evaluation {tm['eval_s']} s; {tm['torch_threads']} torch thread(s))")
        click.echo(f"  held out ({rep['eval_tokens']:,} tokens):")
        click.echo("  layer  EV(mlp.out)    L0   dead")
        for r in rep["per_layer"]:
            click.echo(f"  {r['layer']:>5}  {r['explained_variance']:>11.3f} {r['l0']:>5.1f}  {100 * r['dead_frac']:>4.1f}%")
        recov = "n/a (" + rep.get("ce_recovered_reason", "") + ")" if rep["ce_recovered"] is None else \
            f"{100 * rep['ce_recovered']:.1f}%"
        click.echo(f"  next-token loss: clean {rep['ce_clean']:.3f}, all {len(layers)} MLPs replaced "
                   f"{rep['ce_replaced']:.3f}, zero-ablated {rep['ce_zero_ablated']:.3f}; CE loss recovered {recov}")
        click.echo(f"  use it: autointerp graph \"PROMPT\" --transcoders {out}")

    emit(as_json, rep, human)


@sae_group.command("list")
@store_option
@json_option
def sae_list_cmd(store_path, as_json) -> None:
    """The SAEs registered in the store (by content id), with their hook points and sizes."""
    from ..store import Store

    s = settings(store=store_path)
    path = check_store_path(s.store, must_exist=True)
    rows = Store(path, readonly=True).saes()

    def human() -> None:
        if not rows:
            click.echo("no SAEs in the store (mine with --sae PATH to add one)")
        for r in rows:
            out = f" -> {r['hook_out']}" if r["hook_out"] else ""
            click.echo(f"{r['name']:<20} {r['id'][:12]}  {r['model_id']}  {r['architecture']:<10} {r['hook']}{out}  "
                       f"d_sae {r['d_sae']:,}  {r['path']}")

    emit(as_json, rows, human)
