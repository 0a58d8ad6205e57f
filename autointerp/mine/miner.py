"""mine: one streamed pass of the subject model over a corpus, keeping for every unit of the
chosen layers its top records, a reservoir sample (for quantile and random records) and
streaming statistics; at the end everything is written to the store in one transaction.

Design (see also mine/state.py):
  * the units: any registered unit kinds with a hook site (core/units.py: neurons, heads, a kind
    added in one module), each layer's units kept by the state mine/layers.py registers for the
    kind (the generic UnitLayer unless the kind registers its own: heads), plus SAE latents
    (mine/sae.py);
  * one forward pass per batch feeds every chosen layer: a hook on blocks.{L}.<site> (mlp.post for
    neurons; attn.z and attn.pattern for heads) processes the layer's activations while they are
    hot in cache and keeps nothing else (no activation cache, no logits, stop after the last layer);
  * activations are ranked over the text positions only: position 0 is the BOS every context
    starts with (identical in all contexts, so it would tie every ranking); records, contexts'
    tokens_json and attention rows all start at the first text token (first_pos);
  * memory is flat in corpus length: the state is O(units x (top_k + reservoir) x context_len);
  * resumable: the state is checkpointed (torch.save to a temp file beside the store, then
    os.replace) and mining_runs.n_done updated, every `checkpoint_every` batches or
    `checkpoint_s` seconds; a rerun with the same arguments continues from the checkpoint, and
    a rerun of a finished run returns its id at once. Random priorities are a function of
    (run, context index), so a resumed run selects exactly what an uninterrupted one would.
  * records: top (bin = rank), quantile (bin = decile of per-context max among the reservoir,
    per_quantile per bin, highest priority first), random (n_random highest priorities); random
    and quantile records are disjoint from each other and from the unit's top records.
    Heads: top (by the norm of the head's z output) and top_attn (by the max attention paid to
    any non-first key) with the attention row of the peak query position in `extra`, plus
    random records.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..corpus import corpus_id as make_corpus_id
from ..corpus import iter_batches, layout_for, open_source
from ..corpus.sources import DEFAULT_CORPUS
from ..errors import UsageError
from ..models.hooked import HookedModel
from ..core.keys import content_hash
from ..core.units import Unit, parse_units, units_text
from .finalize import finish_run
from .layers import layer_state
from .logits import LOGIT_EFFECTS, TokenDecoder
from .sae import LatentLayer, latent_density, latent_logit_effects, mining_saes

DEFAULT_TOKENS = 100_000
STATE_VERSION = 1


def _after_batch(n_done: int) -> None:
    """Called after each batch is merged (tests replace it to simulate a kill)."""


def parse_layers(text: str | Sequence[int] | None, n_layers: int) -> list[int]:
    """'0,1,2', '0-5', '3', a list, or None / 'all' (all layers) -> sorted unique layers, checked.
    An empty list ('' or ',') is refused, not read as all layers."""
    if text is None or text == "all":
        return list(range(n_layers))
    if isinstance(text, int):
        out = {int(text)}
    elif isinstance(text, str):
        out = set()
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                    out |= set(range(int(a), int(b) + 1))
                else:
                    out.add(int(part))
            except ValueError:
                raise UsageError(f"bad layers {text!r}: use e.g. 0,1,2 or 0-5") from None
    else:
        out = {int(x) for x in text}
    bad = [L for L in out if not 0 <= L < n_layers]
    if bad:
        raise UsageError(f"layer {bad[0]} out of range (model has layers 0..{n_layers - 1})")
    if not out:
        raise UsageError("no layers chosen")
    return sorted(out)


# ----------------------------------------------------------------------------- mine


def run_key(model_id: str, corpus_id: str, context_len: int, layers: Sequence[int], top_k: int, n_quantiles: int,
            per_quantile: int, n_random: int, units: str, n_tokens: int | None, saes: Sequence[str] = ()) -> str:
    extra = (sorted(saes),) if saes else ()              # SAE content ids (none: the key of a plain run is unchanged)
    return content_hash("mine-v1", model_id, corpus_id, context_len, list(layers), top_k, n_quantiles, per_quantile,
                        n_random, units, n_tokens, *extra)


def mine(hm: HookedModel, store, corpus: str = DEFAULT_CORPUS, n_tokens: int | None = DEFAULT_TOKENS,
         context_len: int = 64, layers: str | Sequence[int] | None = None, top_k: int = 40, n_quantiles: int = 10,
         per_quantile: int = 2, n_random: int = 20, batch_size: int = 16, units: str = "neurons",
         progress: bool = True, text_field: str = "text", checkpoint_every: int | None = None,
         checkpoint_s: float = 300.0, saes: Sequence = (), shard: tuple[int, int] | None = None,
         latent_chunk: int | None = None) -> str:
    """Mine records and statistics of every unit of `layers` over `n_tokens` tokens of `corpus`
    (None: the whole corpus); returns the run id. Idempotent and resumable (see module doc).
    saes: SAEs (models.sae.SAE) whose latents are mined in the same pass (units='latents': only
    them; their layers are then the default layers).
    shard (i, n): mine only the i-th of n equal ranges of the run's contexts (needs n_tokens) and
    keep the final state for `autointerp merge`, which merges the n shards into exactly the run
    that one call without shard gives (mine/shards.py); returns the shard's run id.
    latent_chunk: mine SAE latents in chunks of this many, one pass over the corpus per chunk:
    the state's memory is divided by the number of passes (wide SAEs in bounded memory); the
    records are the same as in one pass."""
    t_start = time.perf_counter()
    kinds = parse_units(units)                  # registered plurals, comma-separated, or 'both' (UnitError: one line)
    site_kinds = [k for k in kinds if not k.needs_sae]      # latents are the given SAEs' (mine/sae.py)
    if len(site_kinds) < len(kinds) and not saes:
        raise UsageError(f"units={units!r} needs an SAE (--sae PATH)")
    for k in site_kinds:
        if not isinstance(getattr(hm, k.size, None), int):
            raise UsageError(f"cannot mine {k.plural}: the model has no size {k.size!r} (the unit kind's size)")
        if k.logits and k.name not in LOGIT_EFFECTS:
            raise UsageError(f"cannot mine {k.plural}: the kind stores logit effects but mine.logits.LOGIT_EFFECTS "
                             f"has no function for {k.name!r}")
    units = units_text(site_kinds or kinds)     # the run's name for them (with sites: SAEs are in settings["saes"])
    for name, v in (("top_k", top_k), ("batch_size", batch_size), ("n_quantiles", n_quantiles)):
        if v < 1:
            raise UsageError(f"{name} must be at least 1")
    if per_quantile < 0 or n_random < 0:
        raise UsageError("per_quantile and n_random must not be negative")
    if latent_chunk is not None and (int(latent_chunk) < 1 or shard is not None):
        raise UsageError("latent_chunk must be at least 1, and cannot be combined with a corpus shard")
    if n_tokens is not None and int(n_tokens) < 1:
        raise UsageError(f"n_tokens must be at least 1 (or None for the whole corpus), got {n_tokens}")
    check_context_len(context_len, hm.max_context)
    saes = mining_saes(hm, saes)
    if not site_kinds and layers is None:
        layers = sorted({x.layer for x in saes})
    layers = parse_layers(layers, hm.n_layers)

    source = open_source(corpus, text_field)
    layout = layout_for(hm.tokenizer, context_len)
    if layout.body_len < 1:
        raise UsageError("context_len too small")
    model_id = hm.spec
    cid = make_corpus_id(source, model_id, layout)
    store.put_model(model_id, hm.info())
    for x in saes:                              # the store's name for each SAE (unit ids L6/F12@name)
        x.name = store.put_sae(x.info(), model_id, x.cfg)
    store.put_corpus(cid, source.spec, model_id, context_len,
                     {"source": source.identity, "bos_id": layout.bos_id, "sep_id": layout.sep_id,
                      "first_pos": layout.first_pos})
    n_contexts = None if n_tokens is None else max(1, int(n_tokens) // context_len)
    rid = run_key(model_id, cid, context_len, layers, top_k, n_quantiles, per_quantile, n_random, units, n_tokens,
                  [x.id for x in saes])
    res_size = n_random + 2 * n_quantiles * per_quantile
    settings = {"corpus": source.spec, "corpus_id": cid, "context_len": context_len, "layers": layers, "top_k": top_k,
                "n_quantiles": n_quantiles, "per_quantile": per_quantile, "n_random": n_random, "units": units,
                "n_tokens": n_tokens, "n_contexts": n_contexts, "first_pos": layout.first_pos, "reservoir": res_size,
                "text_field": text_field if source.format in ("jsonl", "hf") else None}
    if saes:
        settings["saes"] = [{"id": x.id, "name": x.name, "hook": x.hook, "layer": x.layer, "d_sae": x.d_sae} for x in saes]
    full_rid, span = rid, (0, n_contexts)
    if shard is not None:
        i, n = shard
        if n_contexts is None:
            raise UsageError("mining a shard needs --tokens N: the corpus is split into n equal ranges of contexts")
        if not 0 <= i < n:
            raise UsageError(f"bad shard {i}/{n}: use i/n with 0 <= i < n")
        if n > n_contexts:
            raise UsageError(f"{n} shards of {n_contexts} contexts: use at most {n_contexts} shards")
        span = (i * n_contexts // n, (i + 1) * n_contexts // n)
        settings = {**settings, "shard": {"index": i, "of": n, "run_id": full_rid, "start": span[0], "stop": span[1]}}
        rid = content_hash("mine-shard-v1", full_rid, i, n)
    row = store.get_mining_run(rid) or store.start_mining_run(rid, model_id, cid, settings)
    if row["status"] in ("done", "shard"):
        return rid
    if row["status"] == "failed":
        store.set_mining_status(rid, "running")
    try:
        return _mine_run(hm, store, rid, source, layout, cid, layers, site_kinds, n_contexts, t_start,
                         top_k=top_k, res_size=res_size, n_random=n_random, n_quantiles=n_quantiles,
                         per_quantile=per_quantile, batch_size=batch_size, context_len=context_len, progress=progress,
                         checkpoint_every=checkpoint_every, checkpoint_s=checkpoint_s, saes=saes, seed_rid=full_rid,
                         span=span, shard=shard, latent_chunk=latent_chunk)
    except Exception as e:                  # a bad corpus line, a model error...: the run is failed, not "running"
        try:
            store.set_mining_status(rid, "failed", str(e).splitlines()[0] if str(e) else type(e).__name__)
        except Exception:
            pass
        raise


def check_context_len(context_len: int, max_context: int | None) -> None:
    """A context length the model can take: 2 <= context_len <= its maximum (when it states one)."""
    if int(context_len) < 2:
        raise UsageError(f"--context-len must be at least 2, got {context_len}")
    if max_context is not None and int(context_len) > max_context:
        raise UsageError(f"--context-len {context_len} is longer than the model's maximum context of {max_context} tokens")


def _mine_run(hm, store, rid, source, layout, cid, layers, site_kinds, n_contexts, t_start, *, top_k, res_size,
              n_random, n_quantiles, per_quantile, batch_size, context_len, progress, checkpoint_every,
              checkpoint_s, saes=(), seed_rid=None, span=(0, None), shard=None, latent_chunk=None) -> str:
    model_id = hm.spec
    ctx_start, ctx_stop = span                  # the contexts [ctx_start, ctx_stop) of this run (None: to the end)

    device = hm.device
    p = layout.body_len
    fp = layout.first_pos
    # SAE latents in chunks of latent_chunk: one pass over the corpus per chunk (state memory / n_passes)
    n_passes = max([1] + [-(-x.d_sae // latent_chunk) for x in saes]) if latent_chunk else 1

    def layers_for(c: int):
        # {(kind name, layer): its state}, kinds in registry order (the first pass only); SAE latents by input hook
        ul = {(k.name, L): layer_state(k)(k, L, getattr(hm, k.size), top_k, res_size, p, fp, device)
              for k in site_kinds for L in layers} if c == 0 else {}
        fl = {}
        for x in saes:
            lo, hi = (c * latent_chunk, min(x.d_sae, (c + 1) * latent_chunk)) if latent_chunk else (0, x.d_sae)
            if lo < hi:
                # keyed by input hook (one SAE per hook point): a transcoder set shares its name across layers
                fl[x.hook] = LatentLayer(x, top_k, n_random, n_quantiles, per_quantile, p, fp, device, lo=lo, hi=hi)
        return ul, fl

    state_path = _state_path(store, rid)
    n_done, chunk0, ck = 0, 0, None
    if state_path.exists():
        ck = torch.load(state_path, map_location="cpu", weights_only=False)
        if ck.get("version") == STATE_VERSION and ck.get("run_id") == rid:
            chunk0 = int(ck.get("chunk", 0))
        else:
            ck = None
    resumed_from = int(ck["n_done"]) if ck else 0
    seed = int((seed_rid or rid)[:8], 16)       # a shard draws the priorities of the whole run
    decoder = TokenDecoder(hm.tokenizer)
    # the priority draw order: each kind's layers (kinds in registry order: neurons, heads, ...) then latents,
    # each [n_units] (all latents in every pass)
    prio_sizes = [((k.name, L), getattr(hm, k.size)) for k in site_kinds for L in layers] + \
        [(("f", x.hook), x.d_sae) for x in saes]
    total_prio = sum(s for _, s in prio_sizes)
    densities: dict[str, list] = {x.hook: [] for x in saes}    # per chunk: positive counts (for the density stats)
    if ck:
        for name, pos in ck.get("density", {}).items():
            densities[name] = list(pos)
    t_loop = time.perf_counter()
    tokens_here, loop_s = 0, 0.0

    for c in range(chunk0, n_passes):
        ul, fl = layers_for(c)
        n_done = 0
        if ck is not None and int(ck.get("chunk", 0)) == c:
            n_done = int(ck["n_done"])
            for k in site_kinds:                            # keyed by the kind's plural ("neurons", "heads", ...)
                for L, d in ck.get(k.plural, {}).items():
                    ul[(k.name, int(L))].load_state_dict(d)
            for name, d in ck.get("latents", {}).items():     # older checkpoints keyed latents by SAE name
                (fl.get(name) or next(x for x in fl.values() if x.name == name)).load_state_dict(d)
        extra = {"chunk": c, "density": densities} if n_passes > 1 else {}
        stop = max([*(x.L for x in ul.values()), *(x.L for x in fl.values())]) + 1   # the forward ends after the last layer read
        n_done, t_here, pending = _pass(hm, store, rid, cid, source, layout, state_path, ul, fl, seed, total_prio,
                                        prio_sizes, decoder, stop, n_done, span, batch_size, context_len, progress,
                                        checkpoint_every, checkpoint_s, contexts=c == 0, extra=extra)
        tokens_here += t_here
        if n_done == 0:
            raise UsageError(f"corpus {source.spec!r} gave no context of {context_len} tokens")
        if c == n_passes - 1:
            break
        # not the last chunk: write its rows now (the run stays unfinished) and free its state
        # (the first chunk's pass also mined the units of the other kinds: they are written with it)
        for name, x in fl.items():
            densities[name].append(x.stats.pos.cpu())
        finish_run(store, rid, n_done, {}, ul, fl, n_random=n_random, n_quantiles=n_quantiles,
                   per_quantile=per_quantile, unit_logits=(model_id, _logit_rows(hm, store, ul, fl, decoder)),
                   contexts=(cid, pending), partial=True)
        _save_state(state_path, rid, 0, {}, {}, chunk=c + 1, density=densities)
        del ul, fl
        ck = None
    loop_s = time.perf_counter() - t_loop

    t_fin = time.perf_counter()
    if shard is not None and shard[0] != 0:     # the logit effects are the model's: one shard computes them
        logit_rows = iter(())
    else:
        logit_rows = _logit_rows(hm, store, ul, fl, decoder)
    stats = {"n_contexts": n_done, "n_tokens": n_done * context_len, "resumed_from": resumed_from,
             "loop_tokens": tokens_here, "loop_s": round(loop_s, 3),
             "tokens_per_s": round(tokens_here / loop_s, 1) if loop_s > 0 and tokens_here else None,
             "n_units": len(layers) * sum(getattr(hm, k.size) for k in site_kinds) + sum(x.d_sae for x in saes)}
    if n_passes > 1:
        stats["latent_passes"] = n_passes
    if saes:
        for name, x in fl.items():
            densities[name].append(x.stats.pos.cpu())
        n_tok = n_done * p
        stats["latents"] = [latent_density(x.name, torch.cat(densities[x.hook]), n_tok) for x in saes]
    if shard is not None:                       # keep the final state for the merge; no records of a part
        final = shard_state_path(store, rid)
        _save_state(final, rid, n_done, ul, fl)
        store.finish_mining_shard(rid, n_done, str(final), stats, contexts=(cid, pending),
                                  unit_logits=(model_id, logit_rows) if shard[0] == 0 else None)
    else:
        finish_run(store, rid, n_done, stats, ul, fl, n_random=n_random, n_quantiles=n_quantiles,
                   per_quantile=per_quantile, unit_logits=(model_id, logit_rows), contexts=(cid, pending),
                   partial=False, appended=n_passes > 1)
    fin_s = time.perf_counter() - t_fin
    total_s = time.perf_counter() - t_start
    stats.update(finalize_s=round(fin_s, 3), seconds=round(total_s, 3))
    store.set_mining_stats(rid, stats)
    try:
        state_path.unlink()
    except FileNotFoundError:
        pass
    return rid


def _logit_rows(hm, store, ul: dict, fl: dict, decoder) -> Iterable[tuple]:
    """The direct logit effects of the states' units that store one (their kind's `logits`), the
    units the store already has left out: each site kind's function (mine.logits.LOGIT_EFFECTS),
    then the SAE latents'. Lazy: computed as the store writes them."""
    rows: Iterable[tuple] = iter(())
    kinds = {x.unit_kind.name: x for x in ul.values() if x.unit_kind.logits}
    for name, x0 in kinds.items():
        Ls = [x.L for x in ul.values() if x.unit_kind.name == name]
        skip = store.unit_logits_layers(hm.spec, [Unit(L, name, i).id for L in Ls for i in range(x0.n)])
        rows = itertools.chain(rows, LOGIT_EFFECTS[name](hm, Ls, k=10, skip=skip, decoder=decoder))
    if fl:
        skip = store.unit_logits_layers(hm.spec, [x.unit(i) for x in fl.values() for i in range(x.n)])
        rows = itertools.chain(rows, latent_logit_effects(hm, list(fl.values()), k=10, skip=skip, decoder=decoder))
    return rows


def _add_hook(hooks: dict, name: str, fn) -> None:
    """hooks[name] = fn, or both when two states read the same hook point (they never edit it)."""
    prev = hooks.get(name)
    hooks[name] = fn if prev is None else (lambda v, a=prev, b=fn: (a(v), b(v)) and None)


def _pass(hm, store, rid, cid, source, layout, state_path, ul, fl, seed, total_prio, prio_sizes, decoder, stop,
          n_done, span, batch_size, context_len, progress, checkpoint_every, checkpoint_s, contexts: bool,
          extra: dict) -> tuple[int, int, list]:
    """One streamed pass over the run's contexts from n_done on, feeding the layers' processors
    inside the forward; checkpoints as it goes. Returns (n_done, tokens this call, contexts not
    yet stored)."""
    device, p, fp = hm.device, layout.body_len, layout.first_pos
    ctx_start, ctx_stop = span
    cur: dict[str, Any] = {}

    hooks: dict = {}
    for x in ul.values():                       # each state asks for its hooks (heads: attn.pattern and attn.z)
        for name, fn in x.hooks(cur).items():
            _add_hook(hooks, name, fn)
    for name, x in fl.items():
        _add_hook(hooks, x.hook, (lambda x, name: lambda v: x.process(v, cur["ctx"], cur["prio"][("f", name)]))(x, name))

    pending: list[tuple[int, list[int], list[str]]] = []
    bar = _bar(progress, None if ctx_stop is None else ctx_stop - ctx_start, context_len, n_done)
    tokens_here = 0
    last_ck_t, batches_since = time.perf_counter(), 0
    remaining = None if ctx_stop is None else max(0, ctx_stop - ctx_start - n_done)
    try:
        batches: Iterable = [] if remaining == 0 else iter_batches(hm.tokenizer, source, context_len, batch_size,
                                                                      start=ctx_start + n_done, limit=remaining, layout=layout)
        for first, ids in batches:
            b = ids.shape[0]
            ctx = torch.arange(first, first + b, dtype=torch.long)
            cur["ctx"] = ctx.to(device)
            cur["prio"] = _priorities(seed, ctx, total_prio, prio_sizes, device)
            hm.forward(ids.to(device), None, hooks=hooks, return_logits=False, stop_at_layer=stop)
            if contexts:
                toks = decoder(ids[:, fp:].reshape(-1).tolist())
                for j in range(b):
                    pending.append((first + j, ids[j].tolist(), toks[j * p:(j + 1) * p]))
            n_done = first + b - ctx_start
            tokens_here += b * context_len
            bar.update(b * context_len)
            batches_since += 1
            if (checkpoint_every and batches_since >= checkpoint_every) or time.perf_counter() - last_ck_t >= checkpoint_s:
                _checkpoint(store, rid, cid, state_path, n_done, ul, pending, fl, **extra)
                pending = []
                last_ck_t, batches_since = time.perf_counter(), 0
            elif len(pending) >= 2048:
                store.put_contexts(cid, pending)
                pending = []
            _after_batch(n_done)
    finally:
        bar.close()
    return n_done, tokens_here, pending


def _bar(progress: bool, n_contexts: int | None, context_len: int, n_done: int):
    from tqdm.auto import tqdm

    return tqdm(total=None if n_contexts is None else n_contexts * context_len, initial=n_done * context_len,
                unit="tok", unit_scale=True, desc="mine", file=sys.stderr, disable=not progress, dynamic_ncols=True,
                leave=False)


def _priorities(seed: int, ctx: torch.Tensor, total: int, sizes, device) -> dict:
    """Random priorities [n_units, b] per layer: a function of (seed, context index) only, so the
    sample does not depend on batch boundaries or on where a run was resumed."""
    g = torch.Generator()
    rows = []
    for c in ctx.tolist():
        g.manual_seed(seed * 1_000_003 + c)
        rows.append(torch.rand(total, generator=g))
    allp = torch.stack(rows, dim=1).to(device)              # [total, b]
    out, off = {}, 0
    for key, n in sizes:
        out[key] = allp[off:off + n]
        off += n
    return out


def _state_path(store, rid: str) -> Path:
    base = Path(store.path).resolve()
    return base.parent / f".{base.name}.mine-{rid}.pt"


def shard_state_path(store, rid: str) -> Path:
    """Where a finished corpus shard keeps its final state (beside its store, for the merge)."""
    base = Path(store.path).resolve()
    return base.parent / f"{base.name}.shard-{rid}.pt"


def _save_state(path: Path, rid, n_done, ul, fl=None, **extra) -> None:
    """The mining state: each kind's layers under its plural ({"neurons": {L: state}, "heads": ...},
    the keys of the first version), the SAE latents' under "latents" by input hook."""
    state = {"version": STATE_VERSION, "run_id": rid, "n_done": n_done, **extra,
             "latents": {name: x.state_dict() for name, x in (fl or {}).items()}}
    for x in ul.values():
        state.setdefault(x.unit_kind.plural, {})[x.L] = x.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _checkpoint(store, rid, cid, path: Path, n_done, ul, pending, fl=None, **extra) -> None:
    _save_state(path, rid, n_done, ul, fl, **extra)
    store.checkpoint_mining_run(rid, n_done, str(path), contexts=(cid, pending))
