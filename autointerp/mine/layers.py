"""Per-layer mining state: the units of one kind at one layer (MLP neurons, attention heads, or
any registered unit kind with a hook site), fed inside the forward pass by the hooks it asks for
(hooks) and keeping TopK / reservoir / Stats state (state.py) and nothing else. Layer states over
different corpus shards merge exactly (merge), and are rebuilt from a saved state without the
model (from_state).

Which state a kind gets is a registry: UnitLayer, the generic one (the units are the last axis
of the kind's hook, blocks.L.<site>: top records by per-context max, a reservoir for quantile and
random records, streamed statistics), unless a kind registers its own with
register_layer_state (heads: HeadLayer, which also captures the attention pattern). A new unit
kind with a site is mined with no code here (tests/dummy_unit_kind.py's residual dimensions)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..core.hooks import act_name
from ..core.units import HEAD, UnitKind
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


class UnitLayer(LayerState):
    """The units of a kind at one layer: the last axis of its hook blocks.L.<kind.site> (MLP
    neurons, residual dimensions, ...). Top records by the per-context max over text positions."""

    parts = ("top", "res")

    def __init__(self, kind: UnitKind, L: int, n: int, top_k: int, res: int, p: int, first_pos: int, device):
        self.unit_kind, self.L, self.n, self.first_pos = kind, L, n, first_pos
        self.top = TopK(n, top_k, p, device)
        self.res = TopK(n, res, p, device, aux=True)
        self.stats = Stats(n, device)

    @property
    def key(self) -> tuple[str, int]:
        """(kind name, layer): this state's name in the miner (its random priorities, its hooks)."""
        return self.unit_kind.name, self.L

    def hooks(self, batch: dict[str, Any]) -> dict[str, Callable]:
        """{hook name: fn(value)} feeding this state in the forward; `batch` holds the current
        batch's "ctx" (context indices [b]) and "prio" ({key: random priorities [n, b]})."""
        return {act_name(self.unit_kind.site, self.L): lambda v: self.process(v, batch["ctx"], batch["prio"][self.key])}

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


class HeadLayer(UnitLayer):
    """Attention heads: top records by the norm of each head's z output, and top_attn records by
    the max attention paid to any non-first key, each with the attention row of its peak query
    position (`extra`); the pattern is captured by a second hook, on blocks.L.attn.pattern."""

    parts = ("top", "top_attn", "res")

    def __init__(self, kind: UnitKind, L: int, n: int, top_k: int, res: int, p: int, first_pos: int, device):
        self.unit_kind, self.L, self.n, self.first_pos = kind, L, n, first_pos
        self.top = TopK(n, top_k, p, device, extra_len=p)
        self.top_attn = TopK(n, top_k, p, device, extra_len=p)
        self.res = TopK(n, max(res, 1), p, device, extra_len=p, aux=True)
        self.stats = Stats(n, device)
        self.pattern: torch.Tensor | None = None

    def hooks(self, batch: dict[str, Any]) -> dict[str, Callable]:
        return {act_name("attn.pattern", self.L): self.stash_pattern, **super().hooks(batch)}

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


# ---- which state each kind gets: UnitLayer unless registered ----------------------------------------
LAYER_STATES: dict[str, type[UnitLayer]] = {}


def register_layer_state(kind: UnitKind, cls: type[UnitLayer]) -> type[UnitLayer]:
    """Mine `kind` with `cls` (a UnitLayer subclass) instead of the generic UnitLayer."""
    if kind.site is None:
        raise ValueError(f"unit kind {kind.name!r} has no hook site: its units are an SAE's latents (mine/sae.py)")
    LAYER_STATES[kind.name] = cls
    return cls


def layer_state(kind: UnitKind) -> type[UnitLayer]:
    """The state class that mines `kind`'s units at a layer."""
    return LAYER_STATES.get(kind.name, UnitLayer)


register_layer_state(HEAD, HeadLayer)
