"""The running state of a mine, as tensors over all units of a layer at once.

TopK keeps, per unit, the k contexts with the highest score seen so far, each with its
per-token activations (float16) and optionally an extra row (an attention pattern row) and an
auxiliary value. A merge touches only the units whose batch maximum beats their current k-th
score, and writes only the slots that change (never re-gathering all k rows): after the first
few batches almost nothing moves, so the cost per batch falls to a few small tensor ops.

The same structure with random priorities as the score is a reservoir sample (uniform without
replacement): the quantile and random records are drawn from it at the end.

Stats accumulates per-unit max, min, mean/variance (Chan's parallel update, float64) and the
count of positive activations, streamed.
"""

from __future__ import annotations

from typing import Callable

import torch

F16_MAX = 65504.0

# take(ctx_positions [m], units [m]) -> (rows [m, p] , extra [m, pe] or None)
Take = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


class TopK:
    def __init__(self, n_units: int, k: int, p: int, device, extra_len: int = 0, aux: bool = False):
        self.k = k
        self.val = torch.full((n_units, k), float("-inf"), dtype=torch.float32, device=device)
        self.idx = torch.full((n_units, k), -1, dtype=torch.long, device=device)
        self.rows = torch.zeros((n_units, k, p), dtype=torch.float16, device=device)
        self.extra = torch.zeros((n_units, k, extra_len), dtype=torch.float16, device=device) if extra_len else None
        self.aux = torch.zeros((n_units, k), dtype=torch.float32, device=device) if aux else None

    def update(self, score: torch.Tensor, ctx_ids: torch.Tensor, take: Take, aux: torch.Tensor | None = None) -> int:
        """Merge a batch: score [n_units, b] (one value per unit and batch context), ctx_ids [b].
        Returns the number of slots replaced."""
        k = self.k
        b = score.shape[1]
        thresh = self.val.min(dim=1).values                      # the current k-th best (slots are unsorted)
        hit = (score > thresh[:, None]).any(dim=1)
        units = hit.nonzero().squeeze(1)
        if units.numel() == 0:
            return 0
        s_u = score[units]
        allv = torch.cat([self.val[units], s_u], dim=1)          # [u, k + b]
        keep = allv.topk(k, dim=1).indices
        sel = torch.zeros_like(allv, dtype=torch.bool).scatter_(1, keep, True)
        evicted = ~sel[:, :k]                                    # old slots that leave
        incoming = sel[:, k:]                                    # batch contexts that enter (as many per row)
        m = min(k, b)
        slot_ord = torch.sort(evicted.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :m]
        in_ord = torch.sort(incoming.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :m]
        n_in = incoming.sum(dim=1)
        valid = torch.arange(m, device=score.device)[None, :] < n_in[:, None]
        r = units[:, None].expand(-1, m)[valid]
        s = slot_ord[valid]
        c = in_ord[valid]
        if r.numel() == 0:
            return 0
        self.val[r, s] = score[r, c]
        self.idx[r, s] = ctx_ids[c]
        rows, extra = take(c, r)
        self.rows[r, s] = rows.float().clamp(-F16_MAX, F16_MAX).to(torch.float16)
        if self.extra is not None and extra is not None:
            self.extra[r, s] = extra.to(torch.float16)
        if self.aux is not None and aux is not None:
            self.aux[r, s] = aux[r, c]
        return int(r.numel())

    def sorted(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(order [n, k] of slots by score, descending; valid [n, k] mask in that order)."""
        order = self.val.argsort(dim=1, descending=True, stable=True)
        valid = self.idx.gather(1, order) >= 0
        return order, valid

    def state_dict(self) -> dict:
        d = {"val": self.val, "idx": self.idx, "rows": self.rows}
        if self.extra is not None:
            d["extra"] = self.extra
        if self.aux is not None:
            d["aux"] = self.aux
        return {k: v.cpu() for k, v in d.items()}

    def load_state_dict(self, d: dict) -> None:
        for name, v in d.items():
            cur = getattr(self, name)
            if cur is None or cur.shape != v.shape:
                raise ValueError(f"checkpoint tensor {name} has shape {tuple(v.shape)}, expected "
                                 f"{None if cur is None else tuple(cur.shape)}")
            cur.copy_(v)


class Stats:
    """Streaming per-unit statistics over every text token."""

    def __init__(self, n_units: int, device):
        self.n = 0
        self.mean = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.max = torch.full((n_units,), float("-inf"), dtype=torch.float32, device=device)
        self.min = torch.full((n_units,), float("inf"), dtype=torch.float32, device=device)
        self.pos = torch.zeros(n_units, dtype=torch.long, device=device)

    def update(self, x: torch.Tensor, ctx_min: torch.Tensor, ctx_max: torch.Tensor) -> None:
        """x [b, p, n] activations; ctx_min/ctx_max [b, n] their per-context min/max."""
        nb = x.shape[0] * x.shape[1]
        var_b, mean_b = torch.var_mean(x, dim=(0, 1), correction=0)
        mean_b, m2_b = mean_b.double(), var_b.double() * nb
        n = self.n
        tot = n + nb
        delta = mean_b - self.mean
        self.mean += delta * (nb / tot)
        self.m2 += m2_b + delta * delta * (n * nb / tot)
        self.n = tot
        self.max = torch.maximum(self.max, ctx_max.amax(dim=0).float())
        self.min = torch.minimum(self.min, ctx_min.amin(dim=0).float())
        self.pos += (x > 0).sum(dim=(0, 1))

    def std(self) -> torch.Tensor:
        return (self.m2 / max(self.n, 1)).sqrt()

    def frac_active(self) -> torch.Tensor:
        return self.pos.double() / max(self.n, 1)

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean.cpu(), "m2": self.m2.cpu(), "max": self.max.cpu(),
                "min": self.min.cpu(), "pos": self.pos.cpu()}

    def load_state_dict(self, d: dict) -> None:
        self.n = int(d["n"])
        for name in ("mean", "m2", "max", "min", "pos"):
            getattr(self, name).copy_(d[name])
