"""Path patching (Wang et al. 2022, "Interpretability in the Wild"): the effect of a sender head
on the metric through chosen receivers only, everything else frozen.

Receivers:
    "logits"              the sender's direct path to the logits: sender head patched, every other
                          head (and, with freeze_mlps, every MLP) frozen at its base-run value.
    ["L9/H9:q", ...]      receiver heads' queries (or :k / :v; default :q). Step 1: base run with the
                          sender patched and all other heads (and MLPs) frozen; record the receivers'
                          q/k/v. Step 2: a fresh base run where only those receiver inputs are replaced
                          by the recorded values; measure. For grouped-query models a :k or :v receiver
                          is the key/value head its query head reads (shared by its group).

Senders are heads in layers before the receiver (all heads for "logits"); batched like activation
patching (k senders per forward). Direction and normalisation as in core.py (denoising: base =
corrupt run, sender gets its clean value).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import torch

from ..core.hooks import act_name, parse_hook
from ..core.units import HEAD, Unit
from ..errors import UnitError, UsageError
from ..tasks.items import PairItem
from .activation import check_direction, result_rows
from .core import Component, PatchResult, mean_effects, prepare, run_ld, selection_mask

CHANNELS = ("q", "k", "v")


def parse_receivers(hm, receivers: str | Sequence[str]) -> list[tuple[int, int, str]] | None:
    """None for logits, else [(layer, head, channel)]."""
    if isinstance(receivers, str):
        receivers = [r for r in re.split(r"[,\s]+", receivers) if r]
    if not receivers or [r.lower() for r in receivers] == ["logits"]:
        return None
    out = []
    for r in receivers:
        unit, _, ch = r.strip().partition(":")
        ch = (ch or "q").lower()
        try:
            u = Unit.parse(unit)
        except UnitError:
            u = None
        if u is None or u.record is not HEAD or ch not in CHANNELS:
            raise UsageError(f"bad receiver {r!r}: use logits or L<layer>/H<head>[:q|:k|:v] (e.g. L9/H9:q)")
        L, h = hm.check_unit(u).layer, u.index
        if L == 0:
            raise UsageError(f"receiver {r}: a layer-0 head has no sender heads before it")
        out.append((L, h, ch))
    return out


def _freeze_fn(base: torch.Tensor, src: torch.Tensor, mask: torch.Tensor | None, k: int, B: int) -> Callable:
    """Every row block gets the base value, except the masked slice (the sender) which gets src."""
    def fn(v: torch.Tensor) -> torch.Tensor:
        out = base.unsqueeze(0).expand(k, *base.shape).to(v.dtype)
        if mask is not None:
            out = torch.where(mask, src.unsqueeze(0).to(v.dtype), out)
        return out.reshape(v.shape)

    return fn


def _replace_fn(new: torch.Tensor, mask: torch.Tensor) -> Callable:
    def fn(v: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, new.to(v.dtype), v)

    return fn


@torch.no_grad()
def path_patching(hm, items: Sequence[PairItem], receivers: str | Sequence[str] = "logits", *,
                  senders: Sequence[str] | None = None, direction: str = "denoising", freeze_mlps: bool = True,
                  batch_size: int = 32, max_batch: int = 256) -> PatchResult:
    denoise = check_direction(direction)
    recv = parse_receivers(hm, receivers)
    data = prepare(hm, items, batch_size)
    top = hm.n_layers if recv is None else max(L for L, _, _ in recv)   # senders live in layers < top
    if senders is None:
        comps = [Component(Unit.head(L, h).id, act_name("attn.z", L), L, None, head=h) for L in range(top)
                 for h in range(hm.n_heads)]
    else:
        comps = []
        for s in senders:
            u = hm.check_unit(s)
            if u.record is not HEAD:
                raise UsageError(f"sender {s}: senders are heads (L<layer>/H<head>)")
            if u.layer >= top:
                raise UsageError(f"sender {s} is not before the receivers (layer < {top})")
            comps.append(Component(u.id, u.hook, u.layer, None, head=u.index))
    z_hooks = [act_name("attn.z", L) for L in range(top)]
    mlp_hooks = [act_name("mlp.out", L) for L in range(top)] if freeze_mlps else []
    recv_hooks: dict[str, list[int]] = {}
    group = hm.n_heads // hm.n_kv_heads
    if recv is not None:
        for L, h, ch in recv:
            recv_hooks.setdefault(act_name(f"attn.{ch}", L), []).append(h if ch == "q" else h // group)
    sums = torch.zeros(len(comps), dtype=torch.float64)
    clean_sum = corrupt_sum = 0.0
    for b in data:
        B = b.size
        src_ids, base_ids = (b.clean, b.corrupt) if denoise else (b.corrupt, b.clean)
        ld_src, src_run = run_ld(hm, src_ids, b, cache=z_hooks)
        ld_base, base_run = run_ld(hm, base_ids, b, cache=z_hooks + mlp_hooks)
        ld_clean, ld_corrupt = (ld_src, ld_base) if denoise else (ld_base, ld_src)
        clean_sum += float(ld_clean.double().sum())
        corrupt_sum += float(ld_corrupt.double().sum())
        k = max(1, max_batch // B)
        for s in range(0, len(comps), k):
            chunk = comps[s:s + k]
            kk = len(chunk)
            hooks = {}
            for hook in z_hooks:
                sel = [c if c.hook == hook else None for c in chunk]
                src = src_run.cache[hook]
                mask = selection_mask(sel, src.shape[1:], src.device) if any(sel) else None
                hooks[hook] = _freeze_fn(base_run.cache[hook], src, mask, kk, B)
            for hook in mlp_hooks:
                hooks[hook] = _freeze_fn(base_run.cache[hook], base_run.cache[hook], None, kk, B)
            ids = base_ids.repeat(kk, 1)
            if recv is None:
                ld, _ = run_ld(hm, ids, b, reps=kk, hooks=hooks)
            else:
                run1 = hm.forward(ids, b.mask.repeat(kk, 1), cache=list(recv_hooks),
                                  hooks={n: f for n, f in hooks.items() if parse_hook(n)[0] < top},
                                  return_logits=False, stop_at_layer=top + 1)
                hooks2 = {}
                for hook, heads in recv_hooks.items():
                    new = run1.cache[hook]
                    mask = torch.zeros(1, 1, new.shape[2], 1, dtype=torch.bool, device=new.device)
                    mask[0, 0, heads, 0] = True
                    hooks2[hook] = _replace_fn(new, mask)
                ld, _ = run_ld(hm, ids, b, reps=kk, hooks=hooks2)
            sums[s:s + kk] += ld.double().view(kk, B).sum(1).cpu()
    N = data.n_items
    clean, corrupt, effects, normed = mean_effects(sums, clean_sum, corrupt_sum, N, denoise)
    rname = "logits" if recv is None else ",".join(f"{Unit.head(L, h).id}:{ch}" for L, h, ch in recv)
    return PatchResult(what="path", method="path", direction=direction, clean_logit_diff=round(clean, 6),
                       corrupt_logit_diff=round(corrupt, 6), normalised=normed, n_items=N,
                       results=result_rows(comps, effects),
                       settings={"receivers": rname, "freeze_mlps": freeze_mlps, "n_components": len(comps)})
