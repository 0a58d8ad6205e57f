"""Attribution patching: the first-order (gradient) approximation of activation patching.

    effect(c) ~= sum over c's slice of (a_other - a_base) * dLD/da_base

from one forward on the other run (cached), one forward on the base run with gradients and one
backward pass, for every component at once. Normalised like activation patching (core.py).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..tasks.items import PairItem
from .activation import check_direction, result_rows
from ..core.stats import spearman
from .core import Component, PatchResult, components_for, normalise, prepare, run_ld


def attribution_patching(hm, items: Sequence[PairItem], what: str = "heads", *, direction: str = "denoising",
                         layer: int | None = None, per_position: bool | None = None,
                         layers: Sequence[int] | None = None,
                         components: Sequence[Component] | None = None, batch_size: int = 32) -> PatchResult:
    denoise = check_direction(direction)
    data = prepare(hm, items, batch_size)
    comps = list(components) if components is not None else components_for(
        hm, what, data.max_len, layer=layer, per_position=per_position, layers=layers)
    hooks_needed = sorted({c.hook for c in comps})
    # per hook: summed (delta * grad) over the batch and the feature axis -> [max_len, heads?] or [max_len, d_mlp]
    acc: dict[str, torch.Tensor] = {}
    clean_sum = corrupt_sum = 0.0
    for b in data:
        src_ids, base_ids = (b.clean, b.corrupt) if denoise else (b.corrupt, b.clean)
        with torch.no_grad():
            ld_src, src_run = run_ld(hm, src_ids, b, cache=hooks_needed)
        ld_base, base_run = run_ld(hm, base_ids, b, cache=hooks_needed, grad=True)
        ld_base.sum().backward()
        ld_clean, ld_corrupt = (ld_src, ld_base.detach()) if denoise else (ld_base.detach(), ld_src)
        clean_sum += float(ld_clean.double().sum())
        corrupt_sum += float(ld_corrupt.double().sum())
        for hook in hooks_needed:
            a = base_run.cache[hook]
            g = a.grad if a.grad is not None else torch.zeros_like(a)
            prod = ((src_run.cache[hook] - a.detach()) * g).double().sum(0)     # [p, ...]
            if hook.endswith(".attn.z"):
                prod = prod.sum(-1)                                             # [p, H]
            elif not hook.endswith(".mlp.post"):
                prod = prod.sum(-1, keepdim=True)                               # [p, 1]
            full = torch.zeros(data.max_len, *prod.shape[1:], dtype=torch.float64, device=prod.device)
            full[: prod.shape[0]] = prod
            acc[hook] = acc[hook] + full if hook in acc else full
        del base_run, ld_base
    N = data.n_items
    clean, corrupt = clean_sum / N, corrupt_sum / N
    base = corrupt if denoise else clean
    effects, normed = [], True
    cpu = {h: t.cpu() for h, t in acc.items()}
    for c in comps:
        t = cpu[c.hook]
        t = t if c.position is None else t[c.position:c.position + 1]
        if c.head is not None:
            t = t[:, c.head]
        elif c.neuron is not None:
            t = t[:, c.neuron]
        e, normed = normalise(base + float(t.sum()) / N, base, clean, corrupt)
        effects.append(e)
    return PatchResult(what=what, method="attribution", direction=direction, clean_logit_diff=round(clean, 6),
                       corrupt_logit_diff=round(corrupt, 6), normalised=normed, n_items=N,
                       results=result_rows(comps, effects),
                       settings={"layer": layer, "per_position": per_position, "n_components": len(comps),
                                 "forwards": 2 * len(data.batches), "backwards": len(data.batches),
                                 "str_tokens": data.str_tokens, "max_len": data.max_len})


def rank_correlation(a: PatchResult, b: PatchResult) -> float | None:
    """Spearman rank correlation of two runs' effects over their common components."""
    ea, eb = a.effects(), b.effects()
    keys = [k for k in ea if k in eb]
    if len(keys) < 3:
        return None
    return spearman([ea[k] for k in keys], [eb[k] for k in keys])
