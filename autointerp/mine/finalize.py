"""The end of a mine: from the final state of every layer (mine/state.py) to the rows the store
keeps (unit_stats, records), shared by one streamed run (miner.py), the merge of corpus shards
(shards.py) and SAE latents (sae.py). Every state is put in its canonical slot order first, so
the rows are a function of the kept sets alone, not of the order the contexts arrived in."""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..core.units import Unit
from .state import TopK

HIST_BINS = 20


def finish_run(store, rid: str, n_done: int, stats: dict, layers: dict, fl: dict, *, n_random: int,
               n_quantiles: int, per_quantile: int, unit_logits=None, contexts=None, partial: bool = False,
               appended: bool = False) -> None:
    """Write a run's results (one transaction) from its layers' states: layers {(kind name, layer):
    UnitLayer (layers.py)}, fl {name: LatentLayer}. partial: rows of a part of the units (a chunk
    of latents), the run stays unfinished; appended: the last part, after partial ones (kept)."""
    for x in [*layers.values(), *fl.values()]:
        x.canonical()
    if fl and "latents" not in stats and not partial:
        stats["latents"] = [x.density() for x in fl.values()]
    ustats = list(unit_stats(layers.values())) + [r for x in fl.values() for r in x.unit_stats()]
    recs = itertools.chain(records(layers.values(), n_random, n_quantiles, per_quantile),
                           *(x.records(n_random, n_quantiles, per_quantile) for x in fl.values()))
    if partial:
        store.put_mining_rows(rid, ustats, recs, unit_logits=unit_logits, contexts=contexts)
    else:
        store.finish_mining_run(rid, n_done, stats, ustats, recs, unit_logits=unit_logits, contexts=contexts,
                                replace=not appended)


def unit_stats(layers: Iterable) -> Iterator[tuple]:
    """(unit, layer, max, mean, std, frac_active, histogram) of every unit of the layer states."""
    for x in layers:
        L, st = x.L, x.stats
        hist = histograms(x.res, st.min, st.max)
        mx, mean, std, fa = st.max.tolist(), st.mean.tolist(), st.std().tolist(), st.frac_active().tolist()
        for i in range(x.n):
            yield (Unit(L, x.unit_kind.name, i).id, L, finite(mx[i]), finite(mean[i]), finite(std[i]), finite(fa[i]), hist[i])


def finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def histograms(res: TopK, lo: torch.Tensor, hi: torch.Tensor) -> list[dict]:
    """Per unit: HIST_BINS equal-width bins over [min, max] (exact, streamed) of the per-token
    activations of the reservoir (a uniform sample of contexts, every text token)."""
    valid = res.idx >= 0                                     # [n, R]
    v = res.rows.float()                                     # [n, R, p]
    n, R, p = v.shape
    lo_, hi_ = lo.float().cpu(), hi.float().cpu()
    width = (hi_ - lo_).clamp_min(1e-12)
    v = v.cpu()
    b = ((v - lo_[:, None, None]) / width[:, None, None] * HIST_BINS).floor().clamp(0, HIST_BINS - 1).long()
    w = valid.cpu()[:, :, None].expand(-1, -1, p).float()
    counts = torch.zeros(n, HIST_BINS).scatter_add_(1, b.reshape(n, -1), w.reshape(n, -1)).long().tolist()
    lo_l, hi_l = lo_.tolist(), hi_.tolist()
    out = []
    for i in range(n):
        if not math.isfinite(lo_l[i]):
            out.append({"edges": [], "counts": [], "sample_tokens": 0})
            continue
        edges = np.linspace(lo_l[i], hi_l[i], HIST_BINS + 1).round(5).tolist()
        out.append({"edges": edges, "counts": counts[i], "sample_tokens": int(sum(counts[i]))})
    return out


def select_sample(res: TopK, exclude_idx: Sequence[torch.Tensor], n_random: int, n_quantiles: int,
                   per_quantile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From a reservoir: (random mask [n, R], quantile mask [n, R], bin [n, R]).

    Entries whose context is among `exclude_idx` (the unit's top records) are skipped. Random:
    the n_random highest priorities. Quantile: the rest are binned by equal-count quantiles of
    their max activation; the per_quantile highest priorities of each bin are taken."""
    idx, prio, mx = res.idx.cpu(), res.val.cpu(), res.aux.cpu()
    n, R = idx.shape
    ok = idx >= 0
    for ex in exclude_idx:
        ex = ex.cpu()
        ok &= ~(idx[:, :, None] == ex[:, None, :]).any(-1)
    pr = torch.where(ok, prio, torch.full_like(prio, -1.0))
    order = pr.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(R).expand(n, R))
    rand = ok & (rank < n_random)
    cand = ok & ~rand
    c = cand.sum(dim=1, keepdim=True)                        # [n, 1]
    key = torch.where(cand, mx, torch.full_like(mx, float("inf")))
    order_m = key.argsort(dim=1, stable=True)
    rank_m = torch.empty_like(order_m).scatter_(1, order_m, torch.arange(R).expand(n, R))
    bins = torch.where(cand, (rank_m * n_quantiles) // c.clamp_min(1), torch.zeros_like(rank_m))
    key2 = torch.where(cand, bins.double() + (1.0 - prio.double()) * 0.5, torch.full_like(prio, float("inf"), dtype=torch.float64))
    order2 = key2.argsort(dim=1, stable=True)
    pos2 = torch.empty_like(order2).scatter_(1, order2, torch.arange(R).expand(n, R))
    start = -((-bins * c) // n_quantiles)                    # ceil(bin * c / n_q): first rank of the bin
    quant = cand & ((pos2 - start) < per_quantile)
    return rand, quant, bins


KIND_ORDER = ("quantile", "random", "top", "top_attn")   # the order of the UNIQUE index: appends stay local


def records(layers: Iterable, n_random: int, n_quantiles: int, per_quantile: int) -> Iterator[tuple]:
    """(unit, kind, bin, ctx_idx, max_act, acts f16 blob, extra f16 blob | None), one layer at a time,
    in the order of the records' UNIQUE (run, unit, kind, bin, ctx_idx) index (units as strings), so
    that SQLite inserts append instead of seeking."""
    jobs = [(Unit(x.L, x.unit_kind.name, 0).id[:-1], x) for x in layers]
    for _prefix, x in sorted(jobs, key=lambda j: j[0]):
        names = [Unit(x.L, x.unit_kind.name, i).id for i in range(x.n)]
        parts = []                                  # (kind code, unit [m], bin [m], ctx [m], max [m], rows [m,p], extra)
        tops = [(k, getattr(x, k)) for k in ("top", "top_attn") if k in x.parts]   # top_attn: heads' layers
        for kind, tk in tops:
            order, valid = tk.sorted()
            u, j = valid.nonzero(as_tuple=True)
            slot = order[u, j]
            parts.append((KIND_ORDER.index(kind), u, j, tk.idx[u, slot], tk.val[u, slot], tk.rows[u, slot],
                          None if tk.extra is None else tk.extra[u, slot]))
        rand, quant, bins = select_sample(x.res, [tk.idx for _, tk in tops], n_random, n_quantiles, per_quantile)
        res = x.res
        for kind, mask, binned in (("random", rand, None), ("quantile", quant, bins)):
            u, s = mask.nonzero(as_tuple=True)
            b = torch.zeros_like(u) if binned is None else binned[u, s]
            parts.append((KIND_ORDER.index(kind), u, b, res.idx.cpu()[u, s], res.aux.cpu()[u, s], res.rows.cpu()[u, s],
                          None if res.extra is None else res.extra.cpu()[u, s]))
        kind_c = np.concatenate([np.full(len(p[1]), p[0]) for p in parts])
        unit = np.concatenate([p[1].cpu().numpy() for p in parts])
        binv = np.concatenate([p[2].cpu().numpy() for p in parts])
        ctx = np.concatenate([p[3].cpu().numpy() for p in parts])
        mx = np.concatenate([p[4].cpu().numpy() for p in parts])
        rows = np.concatenate([p[5].cpu().numpy() for p in parts]).astype("<f2")
        has_extra = any(p[6] is not None for p in parts)
        extra = np.concatenate([p[6].cpu().numpy() for p in parts]).astype("<f2") if has_extra else None
        name_rank = np.argsort(np.array(names, dtype=object), kind="stable")
        rank_of = np.empty(len(names), dtype=np.int64)
        rank_of[name_rank] = np.arange(len(names))
        order = np.lexsort((ctx, binv, kind_c, rank_of[unit]))
        kinds = KIND_ORDER
        for i in order.tolist():
            yield (names[unit[i]], kinds[kind_c[i]], int(binv[i]), int(ctx[i]), float(mx[i]), rows[i].tobytes(),
                   None if extra is None else extra[i].tobytes())
