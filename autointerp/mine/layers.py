"""Per-layer mining state: a layer of MLP neurons or of attention heads, fed inside the forward
pass (process) and keeping TopK / reservoir / Stats state (state.py) and nothing else. Layer
states over different corpus shards merge exactly (merge), and are rebuilt from a saved state
without the model (from_state)."""

from __future__ import annotations

import torch

from .state import Stats, TopK


class LayerState:
    """What every layer state has: TopK parts (`parts`) and Stats (`stats`), saved, merged and
    reordered together. Subclasses set `parts` and L, n, first_pos."""

    parts: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        return {**{k: getattr(self, k).state_dict() for k in self.parts}, "stats": self.stats.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        for k in self.parts:
            getattr(self, k).load_state_dict(d[k])
        self.stats.load_state_dict(d["stats"])

    def merge(self, other: "LayerState") -> "LayerState":
        """Merge in the state of the same units over other contexts (another corpus shard)."""
        for k in self.parts:
            getattr(self, k).merge(getattr(other, k))
        self.stats.merge(other.stats)
        return self

    def canonical(self) -> "LayerState":
        for k in self.parts:
            getattr(self, k).canonical()
        return self

    @classmethod
    def from_state(cls, L: int, first_pos: int, d: dict, **attrs):
        """The layer rebuilt from state_dict() (CPU tensors), for finalising without the model."""
        x = cls.__new__(cls)
        for k in cls.parts:
            setattr(x, k, TopK.from_state(d[k]))
        x.stats = Stats.from_state(d["stats"])
        x.L, x.first_pos, x.n = L, first_pos, x.stats.mean.shape[0]
        for k, v in attrs.items():
            setattr(x, k, v)
        return x


class NeuronLayer(LayerState):
    parts = ("top", "res")

    def __init__(self, L: int, n: int, top_k: int, res: int, p: int, first_pos: int, device):
        self.L, self.n, self.first_pos = L, n, first_pos
        self.top = TopK(n, top_k, p, device)
        self.res = TopK(n, res, p, device, aux=True)
        self.stats = Stats(n, device)

    def process(self, acts: torch.Tensor, ctx_ids: torch.Tensor, prio: torch.Tensor) -> None:
        x = acts[:, self.first_pos:, :]                     # [b, p, n]
        if x.dtype != torch.float32:
            x = x.float()
        mx = x.amax(dim=1)                                  # [b, n]
        self.stats.update(x, mx)
        score = mx.T                                        # [n, b]

        def take(c, r):
            return x[c, :, r], None

        self.top.update(score, ctx_ids, take)
        self.res.update(prio, ctx_ids, take, aux=score)


class HeadLayer(LayerState):
    parts = ("top", "top_attn", "res")

    def __init__(self, L: int, n: int, top_k: int, res: int, p: int, first_pos: int, device):
        self.L, self.n, self.first_pos = L, n, first_pos
        self.top = TopK(n, top_k, p, device, extra_len=p)
        self.top_attn = TopK(n, top_k, p, device, extra_len=p)
        self.res = TopK(n, res, p, device, extra_len=p, aux=True)
        self.stats = Stats(n, device)
        self.pattern: torch.Tensor | None = None

    def stash_pattern(self, pattern: torch.Tensor) -> None:
        self.pattern = pattern

    def process(self, z: torch.Tensor, ctx_ids: torch.Tensor, prio: torch.Tensor) -> None:
        fp = self.first_pos
        zn = z[:, fp:].float().norm(dim=-1)                 # [b, p, h] norm of each head's output
        pat = self.pattern[:, :, fp:, :].float()            # [b, h, p(query), P(key)]
        self.pattern = None
        attn = pat[..., 1:].amax(dim=-1).permute(0, 2, 1)   # [b, p, h] max attention to a non-first key
        mx = zn.amax(dim=1)
        self.stats.update(zn, mx)
        peak_z = zn.argmax(dim=1)                           # [b, h]
        amx = attn.amax(dim=1)
        peak_a = attn.argmax(dim=1)

        def take_z(c, r):
            return zn[c, :, r], pat[c, r, peak_z[c, r], fp:]

        def take_a(c, r):
            return attn[c, :, r], pat[c, r, peak_a[c, r], fp:]

        self.top.update(mx.T, ctx_ids, take_z)
        self.top_attn.update(amx.T, ctx_ids, take_a)
        self.res.update(prio, ctx_ids, take_z, aux=mx.T)
