"""Activation patching, batched: many components patched per forward pass.

For each batch of B items, the clean and corrupt runs are cached once; then the "base" batch
(corrupt when denoising, clean when noising) is repeated k times along the batch axis and row
block j gets component j's activations from the other run (a boolean mask per hook, one
torch.where per hook point). k = max_batch // B components per forward (k = 1 when
one_per_forward, the slow reference the benchmark compares against).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import UsageError
from ..tasks.items import PairItem
from .core import (DIRECTIONS, Component, PatchResult, by_hook, components_for, mean_effects, prepare, run_ld,
                   selection_mask, sort_results)


def _patch_fn(mask: torch.Tensor, src: torch.Tensor, k: int, B: int) -> Callable:
    def fn(v: torch.Tensor) -> torch.Tensor:
        vv = v.view(k, B, *v.shape[1:])
        return torch.where(mask, src.unsqueeze(0).to(v.dtype), vv).reshape(v.shape)

    return fn


def check_direction(direction: str) -> bool:
    if direction not in DIRECTIONS:
        raise UsageError(f"unknown --direction {direction!r}: use denoising or noising")
    return direction == "denoising"


def result_rows(comps: Sequence[Component], effects: Sequence[float]) -> list[dict]:
    return sort_results([{"component": c.name, "layer": c.layer, "position": c.position, "effect": round(float(e), 6)}
                         for c, e in zip(comps, effects)])


@torch.no_grad()
def activation_patching(hm, items: Sequence[PairItem], what: str = "heads", *, direction: str = "denoising",
                        layer: int | None = None, per_position: bool | None = None,
                        layers: Sequence[int] | None = None,
                        components: Sequence[Component] | None = None, batch_size: int = 32, max_batch: int = 256,
                        one_per_forward: bool = False, progress: Callable | None = None) -> PatchResult:
    """Patch each component (see core.components_for) and measure the normalised logit difference."""
    denoise = check_direction(direction)
    data = prepare(hm, items, batch_size)
    comps = list(components) if components is not None else components_for(
        hm, what, data.max_len, layer=layer, per_position=per_position, layers=layers)
    hooks_needed = sorted({c.hook for c in comps})
    sums = torch.zeros(len(comps), dtype=torch.float64)
    clean_sum = corrupt_sum = 0.0
    n_forwards = 0
    bar = progress(total=len(comps) * len(data.batches)) if progress else None
    for b in data:
        B = b.size
        src_ids, base_ids = (b.clean, b.corrupt) if denoise else (b.corrupt, b.clean)
        ld_src, src_run = run_ld(hm, src_ids, b, cache=hooks_needed)
        ld_base, _ = run_ld(hm, base_ids, b)
        ld_clean, ld_corrupt = (ld_src, ld_base) if denoise else (ld_base, ld_src)
        clean_sum += float(ld_clean.double().sum())
        corrupt_sum += float(ld_corrupt.double().sum())
        k = 1 if one_per_forward else max(1, max_batch // B)
        for s in range(0, len(comps), k):
            chunk = comps[s:s + k]
            kk = len(chunk)
            hooks = {}
            for hook in by_hook(chunk):
                src = src_run.cache[hook]
                mask = selection_mask([c if c.hook == hook else None for c in chunk], src.shape[1:], src.device)
                hooks[hook] = _patch_fn(mask, src, kk, B)
            ld, _ = run_ld(hm, base_ids.repeat(kk, 1), b, reps=kk, hooks=hooks)
            sums[s:s + kk] += ld.double().view(kk, B).sum(1).cpu()
            n_forwards += 1
            if bar:
                bar.update(kk)
    if bar:
        bar.close()
    N = data.n_items
    clean, corrupt, effects, normed = mean_effects(sums, clean_sum, corrupt_sum, N, denoise)
    return PatchResult(what=what, method="activation", direction=direction, clean_logit_diff=round(clean, 6),
                       corrupt_logit_diff=round(corrupt, 6), normalised=normed, n_items=N,
                       results=result_rows(comps, effects),
                       settings={"layer": layer, "per_position": per_position, "n_components": len(comps),
                                 "forwards": n_forwards + 2 * len(data.batches), "str_tokens": data.str_tokens,
                                 "max_len": data.max_len})
