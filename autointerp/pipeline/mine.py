"""Mining as one call for the faces: resolve the SAEs, load the subject model, attach them, mine,
and return what the run holds as a typed result (`autointerp mine` renders it as text or JSON).

    from autointerp.pipeline import mine_corpus
    res = mine_corpus("autointerp.db", "smollm2-135m", n_tokens=16384, layers="3")
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class MinedSAE(BaseModel):
    """An SAE whose latents were mined in the run."""
    name: str
    id: str
    hook: str
    d_sae: int
    layer: int = Field(exclude=True)            # for the text face (its units L<layer>/F<i>@name)


class MineResult(BaseModel):
    """A mining run as `mine --json` prints it (the run's settings, statistics and record counts)."""
    run_id: str
    model: str
    corpus: str
    corpus_id: str
    context_len: int
    layers: list[int]
    units: str
    n_contexts: int
    n_tokens: int
    n_units: int | None = None
    records: dict[str, int]
    seconds: int | float | None = None
    tokens_per_s: int | float | None = None
    finalize_s: int | float | None = None
    resumed_from: int | None = None
    this_call_s: float
    store: str
    saes: list[MinedSAE]
    latents: list[dict[str, Any]] | None = None
    shard: dict[str, Any] | None = None
    unit_counts: dict[str, int] = Field(exclude=True)   # units mined per layer, by kind plural (the text face's counts)


def mine_corpus(store_path: str | Path, model: str, *, device: str = "auto", dtype: str = "float32",
                sae_specs: Sequence[str] = (), sae_name: str | None = None, corpus: str | None = None,
                n_tokens: int | None = None, context_len: int = 64, units: str | None = None,
                progress: bool = True, **mine_kw) -> MineResult:
    """Mine `model` over `corpus` into the store at `store_path`, and return the run.

    sae_specs: SAEs (a folder, saelens:RELEASE:ID, or a name registered in the store; sae_name
    names the one given) whose latents are mined in the same pass; each is resolved before the
    model loads and attached (checked against its hook) before mining. units: a registered unit
    kind's plural (neurons, heads, latents, ...), a comma-separated list of them, or both (neurons
    and heads) [default: latents with SAEs, else neurons]. mine_kw: the rest of mine.mine's
    options (layers, top_k, n_quantiles, per_quantile, n_random, batch_size, text_field, shard,
    latent_chunk). An identical finished run is found, not redone."""
    from ..core.units import parse_units
    from ..corpus.sources import DEFAULT_CORPUS
    from ..errors import UsageError
    from ..mine import get_run, mine
    from ..mine.miner import check_context_len
    from ..models.hooked import HookedModel
    from ..store import Store
    from .saes import resolve_sae

    t0 = time.perf_counter()
    if sae_name and len(sae_specs) != 1:
        raise UsageError("--sae-name names one SAE: give exactly one --sae")
    if units is not None and any(k.needs_sae for k in parse_units(units)) and not sae_specs:
        raise UsageError(f"--units {units} needs an SAE: --sae PATH")
    units = units or ("latents" if sae_specs else "neurons")
    store = Store(store_path) if sae_specs else None
    saes = [resolve_sae(x, store, sae_name) for x in sae_specs]      # a bad SAE folder fails before the model loads
    hm = HookedModel.load(model, device=device, dtype=dtype)
    check_context_len(context_len, hm.max_context)
    for x in saes:
        hm.attach_sae(x)                        # an SAE that does not fit its hook fails here, before mining
    store = store or Store(store_path)
    rid = mine(hm, store, corpus=corpus or DEFAULT_CORPUS, n_tokens=n_tokens, context_len=context_len, units=units,
               progress=progress, saes=saes, **mine_kw)
    run = get_run(store, rid)
    st = run.stats or {}
    return MineResult(
        run_id=rid, model=run.model_id, corpus=run.corpus, corpus_id=run.corpus_id, context_len=run.context_len,
        layers=run.layers, units=run.units, n_contexts=run.n_contexts, n_tokens=run.n_tokens,
        n_units=st.get("n_units"), records=store.count_records(rid), seconds=st.get("seconds"),
        tokens_per_s=st.get("tokens_per_s"), finalize_s=st.get("finalize_s"), resumed_from=st.get("resumed_from"),
        this_call_s=round(time.perf_counter() - t0, 2), store=str(store_path),
        saes=[MinedSAE(name=x.name, id=x.id, hook=x.hook, d_sae=x.d_sae, layer=x.layer) for x in saes],
        latents=st.get("latents"), shard=run.settings.get("shard"),
        unit_counts={k.plural: getattr(hm, k.size) for k in parse_units(run.units) if not k.needs_sae})
