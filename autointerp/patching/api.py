"""The patching verb: run a method on a dataset, store the run (reused when identical), return it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel, Field, model_serializer

from ..errors import UsageError
from ..core.keys import content_hash
from ..tasks.api import dataset_hash
from ..tasks.items import Dataset
from .activation import activation_patching
from .attribution import attribution_patching, rank_correlation
from .core import WHATS, PatchResult
from .detectors import detect_heads
from .dla import direct_logit_attribution
from .path import path_patching

METHODS = ("activation", "attribution", "path", "dla")
VERSION = "patch-v1"


def run_key(hm, ds: Dataset, what: str, method: str, **params) -> str:
    return content_hash(VERSION, ds.name, dataset_hash(ds.items), hm.spec, what, method, params)


def result_from_row(row: dict) -> PatchResult:
    """The PatchResult of a stored patching run (Store.get_patch_run row), marked reused."""
    from .core import sort_results

    return PatchResult(what=row["what"], method=row["method"], direction=row["direction"],
                       clean_logit_diff=row["clean_logit_diff"], corrupt_logit_diff=row["corrupt_logit_diff"],
                       normalised=row["settings"].get("normalised", True), n_items=row["settings"].get("n_items", 0),
                       results=sort_results(row["results"]), settings=row["settings"], run_id=row["id"], reused=True)


def patch(store, hm, ds: Dataset, what: str = "heads", method: str = "activation", *, direction: str = "denoising",
          layer: int | None = None, per_position: bool | None = None, layers: Sequence[int] | None = None,
          receivers: str | Sequence[str] = "logits", freeze_mlps: bool = True, batch_size: int = 32,
          max_batch: int = 256, reuse: bool = True, compare: bool | None = None,
          progress: Callable | None = None) -> PatchResult:
    """Run `method` for `what` on dataset `ds` with the subject model `hm`; store and return the run.

    method: activation (what: resid | heads | heads_pos | mlp | attn | neurons), attribution (same),
    path (senders = heads, through `receivers`), dla (what: heads | neurons, on the clean prompts).
    An identical earlier run (same dataset content, model and parameters) is returned from the store.
    For attribution, the rank correlation with the matching activation run is put in
    settings["rank_correlation_with_activation"] when that run is stored (compare=True computes it)."""
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}: use {', '.join(METHODS)}")
    if method in ("activation", "attribution") and what not in WHATS:
        raise UsageError(f"unknown --what {what!r}: use {', '.join(WHATS)}")
    if layers is not None:
        layers = sorted(set(layers))
        for L in layers:
            if not 0 <= L < hm.n_layers:
                raise UsageError(f"layer {L} out of range (model has layers 0..{hm.n_layers - 1})")
    if what != "neurons" and method in ("activation", "attribution") and layer is not None and layers is None:
        layers = [layer]
    if method == "path":
        what = "path"
        params = dict(direction=direction, receivers=receivers if isinstance(receivers, str) else ",".join(receivers),
                      freeze_mlps=freeze_mlps)
    elif method == "dla":
        if what not in ("heads", "neurons"):
            raise UsageError("--method dla takes --what heads or --what neurons")
        direction = None
        params = dict(layer=layer)
    else:
        params = dict(direction=direction, layer=layer if what == "neurons" else None, per_position=per_position,
                      layers=layers)
    key = run_key(hm, ds, what if method != "dla" else f"dla_{what}", method, **params)
    if reuse:
        row = store.get_patch_run(key)
        if row is not None:
            res = result_from_row(row)
            if method == "attribution" and compare:
                _compare(store, hm, ds, res, what, direction, layer, per_position, layers, batch_size, max_batch,
                         progress, reuse)
            return res
    common = dict(batch_size=batch_size)
    if method == "activation":
        res = activation_patching(hm, ds.items, what, direction=direction, layer=layer, per_position=per_position,
                                  layers=layers, max_batch=max_batch, progress=progress, **common)
    elif method == "attribution":
        res = attribution_patching(hm, ds.items, what, direction=direction, layer=layer, per_position=per_position,
                                   layers=layers, **common)
    elif method == "path":
        res = path_patching(hm, ds.items, receivers, direction=direction, freeze_mlps=freeze_mlps,
                            max_batch=max_batch, **common)
    else:
        res = direct_logit_attribution(hm, ds.items, what, layer=layer, **common)
    res.settings.update({"dataset": ds.name, "n_items": res.n_items, "normalised": res.normalised})
    if method == "attribution":
        _compare(store, hm, ds, res, what, direction, layer, per_position, layers, batch_size, max_batch, progress,
                 reuse, run=bool(compare))
    store.put_model(hm.spec, hm.info())
    res.run_id = store.put_patch_run(key, dataset=ds.name, model_id=hm.spec, what=res.what, method=res.method,
                                     direction=res.direction, clean_logit_diff=res.clean_logit_diff,
                                     corrupt_logit_diff=res.corrupt_logit_diff, settings=res.settings,
                                     results=res.results)
    return res


class PatchReport(BaseModel):
    """A patching run on a named dataset, as `autointerp patch` prints it (its --json is the dump:
    the run without its settings, the dataset's name, and for attribution the rank correlation
    with activation patching, null when no matching activation run is stored)."""
    clean_logit_diff: float
    corrupt_logit_diff: float
    what: str
    method: str
    direction: str | None = None
    n_items: int
    normalised: bool
    run_id: int | None = None
    results: list[dict]
    dataset: str
    rank_correlation_with_activation: float | None = None
    model: str = Field(exclude=True)                       # what the text face also shows
    receivers: str | None = Field(default=None, exclude=True)
    reused: bool = Field(default=False, exclude=True)
    plot: Path | None = Field(default=None, exclude=True)

    @model_serializer(mode="wrap")
    def _attribution_only(self, handler) -> dict[str, Any]:
        d = handler(self)
        if self.method != "attribution":
            d.pop("rank_correlation_with_activation", None)
        return d


def patch_report(store, hm, ds: Dataset, what: str = "heads", method: str = "activation", *, top: int | None = None,
                 plot: str | Path | None = None, force: bool = False, **kw) -> PatchReport:
    """Run (or reuse) `patch` and report it: the `top` components by |effect| (None: all), and a
    heatmap PNG written to `plot` when given (force: overwrite it). kw: the rest of patch's options."""
    res = patch(store, hm, ds, what, method, **kw)
    if plot:
        from .plot import plot_result

        plot_result(res, plot, hm.n_layers, hm.n_heads, title=f"{ds.name}: {method} {res.what} ({res.direction or 'clean'})",
                    force=force)
    return PatchReport(clean_logit_diff=res.clean_logit_diff, corrupt_logit_diff=res.corrupt_logit_diff, what=res.what,
                       method=res.method, direction=res.direction, n_items=res.n_items, normalised=res.normalised,
                       run_id=res.run_id, results=res.results[:top] if top is not None else res.results,
                       dataset=ds.name, rank_correlation_with_activation=res.settings.get("rank_correlation_with_activation"),
                       model=hm.spec, receivers=res.settings.get("receivers"), reused=res.reused,
                       plot=Path(plot) if plot else None)


def _compare(store, hm, ds, res, what, direction, layer, per_position, layers, batch_size, max_batch, progress,
             reuse, run: bool = True) -> None:
    params = dict(direction=direction, layer=layer if what == "neurons" else None, per_position=per_position,
                  layers=layers)
    row = store.get_patch_run(run_key(hm, ds, what, "activation", **params))
    if row is not None:
        act = result_from_row(row)
    elif run:
        act = patch(store, hm, ds, what, "activation", direction=direction, layer=layer, per_position=per_position,
                    layers=layers, batch_size=batch_size, max_batch=max_batch, reuse=reuse, progress=progress)
    else:
        return
    res.settings["rank_correlation_with_activation"] = rank_correlation(res, act)
    res.settings["activation_run_id"] = act.run_id


def head_wiki(store, hm, *, recompute: bool = False, n_seqs: int = 16, seq_len: int = 24, seed: int = 0
              ) -> dict[str, dict[str, float]]:
    """Detector scores of every head of `hm` ({unit: {detector: score}}), computed once and stored."""
    scores = {} if recompute else store.get_head_scores(hm.spec)
    if len(scores) < hm.n_layers * hm.n_heads:
        scores = detect_heads(hm, n_seqs=n_seqs, seq_len=seq_len, seed=seed)
        store.put_model(hm.spec, hm.info())
        store.put_head_scores(hm.spec, scores)
    return scores
