"""The running state of a mine, as tensors over all units of a layer at once.

TopK keeps, per unit, the k contexts with the highest score seen so far, each with its
per-token activations (float16) and optionally an extra row (an attention pattern row) and an
auxiliary value. A merge touches only the units whose batch maximum beats their current k-th
score, and writes only the slots that change (never re-gathering all k rows): after the first
few batches almost nothing moves, so the cost per batch falls to a few small tensor ops.

The same structure with random priorities as the score is a reservoir sample (uniform without
replacement): the quantile and random records are drawn from it at the end.

The kept set is defined by a total order, not by the stream: a context ranks above another when
its score is higher, or equal with a lower context index. So the state after any stream is the
top k of everything seen under that order, whatever the batch boundaries, and two states over
disjoint parts of a corpus merge (TopK.merge) into exactly the state of one pass over both: this
is what lets mining be split by corpus shard (mine/shards.py). canonical() puts the slots in
that order, so everything derived from them (ranks, samples) is a function of the set alone.

Stats accumulates per-unit max, min, mean/variance (Chan's parallel update, float64) and the
count of positive activations, streamed; Stats.merge combines two (max, min, counts exactly;
mean/variance to float64 rounding, as summation order differs).
"""

from __future__ import annotations

from typing import Callable

import torch

F16_MAX = 65504.0

# take(ctx_positions [m], units [m]) -> (rows [m, p] , extra [m, pe] or None)
Take = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]

_LAST = torch.iinfo(torch.long).max


def _sort_key_idx(val: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The context index as a tie-break key; empty slots (idx < 0) and -inf scores rank last."""
    return torch.where((idx < 0) | (val == float("-inf")), torch.full_like(idx, _LAST), idx)


def rank_order(val: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per row, the permutation of slots by (score descending, context index ascending), empty
    slots last (stable among themselves)."""
    o1 = _sort_key_idx(val, idx).argsort(dim=1, stable=True)
    o2 = val.gather(1, o1).argsort(dim=1, descending=True, stable=True)
    return o1.gather(1, o2)


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
            # the slot that leaves is the last in the total order: lowest score, then highest context index
            v1 = self.val[one]
            at_min = v1 == minv[one][:, None]
            key = torch.where(at_min, _sort_key_idx(v1, self.idx[one]), torch.full_like(self.idx[one], -1))
            n_new += self._write(one, key.argmax(dim=1), c, score, ctx_ids, take, aux)
        many = (cnt > 1).nonzero().squeeze(1)
        if many.numel():
            n_new += self._merge(many, score, ctx_ids, take, aux)
        return n_new

    def _merge(self, units: torch.Tensor, score, ctx_ids, take, aux) -> int:
        """Exact merge for units with several candidates: top-k of (current k, batch), then only the
        evicted slots are overwritten by the incoming contexts."""
        k, b = self.k, score.shape[1]
        allv = torch.cat([self.val[units], score[units]], dim=1)  # [u, k + b]
        alli = torch.cat([self.idx[units], ctx_ids.to(self.idx.device)[None, :].expand(len(units), b)], dim=1)
        drop = rank_order(allv, alli)[:, k:]                       # exactly b of the k + b leave: the last b
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
        """(order [n, k] of slots by score, descending, then context index; valid [n, k] mask in that order)."""
        order = rank_order(self.val, self.idx)
        valid = self.idx.gather(1, order) >= 0
        return order, valid

    def _tensors(self) -> dict:
        return {k: v for k, v in (("val", self.val), ("idx", self.idx), ("rows", self.rows), ("extra", self.extra),
                                  ("aux", self.aux)) if v is not None}

    def canonical(self, chunk: int = 4096) -> "TopK":
        """Reorder every unit's slots by the total order (in place, in chunks of units)."""
        for a in range(0, self.val.shape[0], chunk):
            order = rank_order(self.val[a:a + chunk], self.idx[a:a + chunk])
            for t in self._tensors().values():
                part = t[a:a + chunk]
                ix = order if t.dim() == 2 else order[:, :, None].expand(-1, -1, t.shape[2])
                part.copy_(part.gather(1, ix))
        return self

    def merge(self, other: "TopK", chunk: int = 4096) -> "TopK":
        """Merge in a state over other contexts of the same units (e.g. another corpus shard): the
        result is the top k of both under the total order, exactly as one pass over both."""
        if other.val.shape != self.val.shape or (other.extra is None) != (self.extra is None) or \
                (other.aux is None) != (self.aux is None):
            raise ValueError(f"cannot merge a top-k state of shape {tuple(other.val.shape)} into {tuple(self.val.shape)}")
        mine, theirs = self._tensors(), other._tensors()
        k = self.k
        for a in range(0, self.val.shape[0], chunk):
            sl = slice(a, a + chunk)
            order = rank_order(torch.cat([self.val[sl], other.val[sl].to(self.val.device)], 1),
                               torch.cat([self.idx[sl], other.idx[sl].to(self.idx.device)], 1))[:, :k]
            for name, t in mine.items():
                both = torch.cat([t[sl], theirs[name][sl].to(t.device)], 1)
                ix = order if t.dim() == 2 else order[:, :, None].expand(-1, -1, t.shape[2])
                t[sl] = both.gather(1, ix)
        return self

    @classmethod
    def from_state(cls, d: dict) -> "TopK":
        """A state rebuilt from state_dict() (on the CPU)."""
        t = cls.__new__(cls)
        t.val, t.idx, t.rows = d["val"], d["idx"], d["rows"]
        t.extra, t.aux = d.get("extra"), d.get("aux")
        t.k = t.val.shape[1]
        return t

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


def _sums(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the sum and the sum of squares of x [b, p, n] (float32) in float64, in chunks of
    units. float64 holds the sum of a context's float32 values exactly unless they span more than
    ~2^29 in magnitude, so the result hardly depends on the batch or the width of x: a merge of
    corpus shards, or a chunk of latents, then differs from one pass only by float64 rounding."""
    n = x.shape[-1]
    s1 = torch.empty(n, dtype=torch.float64, device=x.device)
    s2 = torch.empty(n, dtype=torch.float64, device=x.device)
    for a in range(0, n, chunk):
        part = x[..., a:a + chunk].double()
        s1[a:a + chunk] = part.sum(dim=(0, 1))
        s2[a:a + chunk] = part.square_().sum(dim=(0, 1))
    return s1, s2


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
        x = x.float()
        nb = x.shape[0] * x.shape[1]
        self._add_moments(*_sums(x), nb, ctx_max)
        self.min = torch.minimum(self.min, x.amin(dim=(0, 1)))
        self.pos += x.gt(0).sum(dim=(0, 1), dtype=torch.int32).long()

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
        weight, so no copy of the slice is made). The positive count is a matrix-vector
        product; the minimum is 0 for a unit with any zero in the batch, so the only reduction
        left is over the units that were positive on every token (rare for a sparse latent)."""
        b, P, n = z.shape
        Z = z.reshape(b * P, n)
        w = torch.ones(b, P, dtype=Z.dtype, device=Z.device)
        w[:, :first_pos] = 0
        w = w.reshape(1, -1)
        nb = b * (P - first_pos)
        self._add_moments(*_sums(z[:, first_pos:, :]), nb, ctx_max)
        cnt = (w @ torch.sign(Z))[0]                             # 0/1 summed in float32: exact below 2^24
        cnt_l = cnt.round().long()
        always = (cnt_l == nb).nonzero().squeeze(1)
        bmin = torch.zeros(n, dtype=torch.float32, device=Z.device)
        if always.numel():
            bmin[always] = z[:, first_pos:, :].index_select(2, always).amin(dim=(0, 1))
        self.min = torch.minimum(self.min, bmin)
        self.pos += cnt_l

    def merge(self, other: "Stats") -> "Stats":
        """Combine with the statistics of other tokens of the same units (Chan's parallel update)."""
        if other.n:
            if self.n == 0:
                self.mean, self.m2 = other.mean.clone(), other.m2.clone()
            else:
                n, nb = self.n, other.n
                tot = n + nb
                delta = other.mean - self.mean
                self.mean = self.mean + delta * (nb / tot)
                self.m2 = self.m2 + other.m2 + delta * delta * (n * nb / tot)
            self.n += other.n
        self.max = torch.maximum(self.max, other.max)
        self.min = torch.minimum(self.min, other.min)
        self.pos = self.pos + other.pos
        return self

    @classmethod
    def from_state(cls, d: dict) -> "Stats":
        s = cls(d["mean"].shape[0], "cpu")
        s.load_state_dict(d)
        return s

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
