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
        minv, argmin = self.val.min(dim=1)                       # the current k-th best (slots are unsorted)
        hits = score > minv[:, None]                             # [n, b]
        cnt = hits.sum(dim=1)
        n_new = 0
        # the common case once the state is warm: one batch context beats the k-th best -> it takes that slot
        one = (cnt == 1).nonzero().squeeze(1)
        if one.numel():
            c = hits[one].to(torch.int8).argmax(dim=1)
            n_new += self._write(one, argmin[one], c, score, ctx_ids, take, aux)
        many = (cnt > 1).nonzero().squeeze(1)
        if many.numel():
            n_new += self._merge(many, score, ctx_ids, take, aux)
        return n_new

    def _merge(self, units: torch.Tensor, score, ctx_ids, take, aux) -> int:
        """Exact merge for units with several candidates: top-k of (current k, batch), then only the
        evicted slots are overwritten by the incoming contexts."""
        k, b = self.k, score.shape[1]
        allv = torch.cat([self.val[units], score[units]], dim=1)  # [u, k + b]
        drop = allv.topk(b, dim=1, largest=False).indices          # exactly b of the k + b leave
        dropped = torch.zeros_like(allv, dtype=torch.bool).scatter_(1, drop, True)
        ev = dropped[:, :k].nonzero()                              # old slots that leave, row-major
        inc = (~dropped[:, k:]).nonzero()                          # batch contexts that enter: as many per row,
        return self._write(units[ev[:, 0]], ev[:, 1], inc[:, 1],   # so the two lists pair up row by row
                           score, ctx_ids, take, aux)

    def _write(self, r, s, c, score, ctx_ids, take, aux) -> int:
        """Slots (r, s) <- batch context c (all [m])."""
        if r.numel() == 0:
            return 0
        self.val[r, s] = score[r, c]
        self.idx[r, s] = ctx_ids[c]
        rows, extra = take(c, r)
        self.rows[r, s] = rows.float().clamp_(-F16_MAX, F16_MAX).to(torch.float16)
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

    def update(self, x: torch.Tensor, ctx_max: torch.Tensor) -> None:
        """x [b, p, n] activations; ctx_max [b, n] their per-context max."""
        X = x.reshape(-1, x.shape[-1]).float()                   # one contiguous copy; the reductions below are cheap on it
        nb = X.shape[0]
        ones = torch.ones(1, nb, dtype=X.dtype, device=X.device)
        self._add_moments((ones @ X)[0].double(), (ones @ X.square())[0].double(), nb, ctx_max)
        self.min = torch.minimum(self.min, X.amin(dim=0))
        self.pos += X.gt(0).sum(dim=0, dtype=torch.int32).long()

    def _add_moments(self, s1: torch.Tensor, s2: torch.Tensor, nb: int, ctx_max: torch.Tensor) -> None:
        """Merge a batch of nb values per unit, given their sums s1 and sums of squares s2 (float64),
        into mean/m2 (Chan's parallel update), n and max."""
        mean_b = s1 / nb
        m2_b = (s2 - s1 * mean_b).clamp_min(0.0)                 # float64: sum (x - mean_b)^2
        n = self.n
        tot = n + nb
        delta = mean_b - self.mean
        self.mean += delta * (nb / tot)
        self.m2 += m2_b + delta * delta * (n * nb / tot)
        self.n = tot
        self.max = torch.maximum(self.max, ctx_max.amax(dim=0).float())

    def update_nonneg(self, z: torch.Tensor, first_pos: int, ctx_max: torch.Tensor) -> None:
        """The same update for units that are never negative (SAE latents: relu'd, exactly 0 when
        off), from the whole batch z [b, P, n] (positions < first_pos are left out by a zero
        weight, so no copy of the slice is made). Sums and the positive count are matrix-vector
        products; the minimum is 0 for a unit with any zero in the batch, so the only reduction
        left is over the units that were positive on every token (rare for a sparse latent)."""
        b, P, n = z.shape
        Z = z.reshape(b * P, n)
        w = torch.ones(b, P, dtype=Z.dtype, device=Z.device)
        w[:, :first_pos] = 0
        w = w.reshape(1, -1)
        nb = b * (P - first_pos)
        self._add_moments((w @ Z)[0].double(), (w @ (Z * Z))[0].double(), nb, ctx_max)
        cnt = (w @ torch.sign(Z))[0]                             # 0/1 summed in float32: exact below 2^24
        cnt_l = cnt.round().long()
        always = (cnt_l == nb).nonzero().squeeze(1)
        bmin = torch.zeros(n, dtype=torch.float32, device=Z.device)
        if always.numel():
            bmin[always] = z[:, first_pos:, :].index_select(2, always).amin(dim=(0, 1))
        self.min = torch.minimum(self.min, bmin)
        self.pos += cnt_l

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
