"""Mining SAE (and transcoder) latents in the miner's one streamed pass.

The SAE is attached to the HookedModel (models/sae.py), so its encoder runs inside the forward
on the hooked activation; a hook on blocks.L.<site>.sae.latents feeds a LatentLayer, which keeps
the same kind of state as a layer of neurons (mine/state.py: TopK, reservoirs, Stats) and nothing
else, so memory is O(d_sae x (top_k + reservoirs) x context_len), flat in corpus length.

Latents are sparse (exactly 0 when off), so the records follow delphi's constructors rather
than the neurons' ones:
  * top: only contexts where the latent fires (a context with max 0 never enters the top-k, so
    a latent that fired on 3 contexts has 3 top records, not 3 plus 37 arbitrary ones);
  * quantile: drawn from a reservoir of the *active* contexts only, binned by their max
    activation (delphi's activation-quantile sampling of activating examples);
  * random: a uniform sample of all contexts (for a sparse latent almost all are non-firing:
    delphi's random non-activating examples), disjoint from top and quantile records.
Density statistics: unit_stats.frac_active is the latent's firing frequency (tokens with a
non-zero activation); the run's stats count dead latents (never fired) and the mean L0.
Output-token effect: W_dec[i] through the final norm's scale and W_U, as for neurons
(mine/logits.py), for SAEs whose output is a residual-stream write.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..core.hooks import parse_hook
from ..core.units import Unit
from .finalize import finite, histograms, select_sample
from .layers import LayerState
from .logits import TokenDecoder, top_effects
from .state import Stats, TopK

RESID_SITES = ("resid_pre", "resid_post", "mlp.out", "attn.out")


class LatentLayer(LayerState):
    """The mining state of one SAE's latents."""

    kind = "F"
    parts = ("top", "res", "act")

    lo = 0                                                   # the first latent of this state (a chunk: lo..hi-1)

    def __init__(self, sae, top_k: int, n_random: int, n_quantiles: int, per_quantile: int, p: int, first_pos: int,
                 device, lo: int = 0, hi: int | None = None):
        hi = sae.d_sae if hi is None else hi
        self.sae, self.name, self.L, self.first_pos, self.lo, self.n = sae, sae.name, sae.layer, first_pos, lo, hi - lo
        self.top = TopK(self.n, top_k, p, device)
        # uniform (random records: room for n_random after a dense latent's top and quantile contexts are excluded)
        self.res = TopK(self.n, max(1, n_random + top_k + n_quantiles * per_quantile), p, device, aux=True)
        self.act = TopK(self.n, max(1, 2 * n_quantiles * per_quantile), p, device, aux=True)     # active contexts only
        self.stats = Stats(self.n, device)

    @property
    def hook(self) -> str:
        return self.sae.latents_hook

    def unit(self, i: int) -> str:
        return Unit.latent(self.L, self.lo + i, self.name).id

    def process(self, z: torch.Tensor, ctx_ids: torch.Tensor, prio: torch.Tensor) -> None:
        if self.n != z.shape[-1]:                            # a chunk of the latents
            z, prio = z[..., self.lo:self.lo + self.n], prio[self.lo:self.lo + self.n]
        if z.dtype != torch.float32:
            z = z.float()
        x = z[:, self.first_pos:, :]                         # [b, p, n]
        mx = x.amax(dim=1)                                   # [b, n]
        self.stats.update_nonneg(z, self.first_pos, mx)
        score = mx.T                                         # [n, b]
        active = score > 0
        neg = torch.full_like(score, float("-inf"))

        def take(c, r):
            return x[c, :, r], None

        self.top.update(torch.where(active, score, neg), ctx_ids, take)
        self.res.update(prio, ctx_ids, take, aux=score)
        self.act.update(torch.where(active, prio, neg), ctx_ids, take, aux=score)

    @classmethod
    def from_saved(cls, info: dict, first_pos: int, d: dict) -> "LatentLayer":
        """Rebuilt from state_dict() and the run's settings["saes"] entry (no SAE weights needed)."""
        return cls.from_state(int(info["layer"]), first_pos, d, sae=None, name=info["name"])

    # ---- finalisation -------------------------------------------------------------------
    def density(self) -> dict:
        return latent_density(self.name, self.stats.pos, self.stats.n)

    def unit_stats(self) -> Iterator[tuple]:
        st = self.stats
        hist = []
        for a in range(0, self.n, 1024):                     # in chunks: the float copies stay small for 16k+ latents
            part = _Slice(self.res.idx[a:a + 1024], self.res.rows[a:a + 1024])
            hist += histograms(part, st.min[a:a + 1024], st.max[a:a + 1024])
        mx, mean, std, fa = st.max.tolist(), st.mean.tolist(), st.std().tolist(), st.frac_active().tolist()
        for i in range(self.n):
            yield (self.unit(i), self.L, finite(mx[i]), finite(mean[i]), finite(std[i]), finite(fa[i]), hist[i])

    def records(self, n_random: int, n_quantiles: int, per_quantile: int) -> Iterator[tuple]:
        """(unit, kind, bin, ctx_idx, max_act, acts f16 blob, None) like finalize.records."""
        parts = []
        order, valid = self.top.sorted()
        u, j = valid.nonzero(as_tuple=True)
        slot = order[u, j]
        parts.append(("top", u, j, self.top.idx[u, slot], self.top.val[u, slot], self.top.rows[u, slot]))
        top_idx = self.top.idx
        quant, q_mask = None, None
        if per_quantile > 0:
            _, q_mask, bins = select_sample(self.act, [top_idx], 0, n_quantiles, per_quantile)
            u, s = q_mask.nonzero(as_tuple=True)
            a = self.act
            parts.append(("quantile", u, bins[u, s], a.idx.cpu()[u, s], a.aux.cpu()[u, s], a.rows.cpu()[u, s]))
            qi = torch.where(q_mask, a.idx.cpu(), torch.full_like(a.idx.cpu(), -2))
            quant = qi
        if n_random > 0:
            excl = [top_idx] + ([quant] if quant is not None else [])
            r_mask, _, _ = select_sample(self.res, excl, n_random, 1, 0)
            u, s = r_mask.nonzero(as_tuple=True)
            r = self.res
            parts.append(("random", u, torch.zeros_like(u), r.idx.cpu()[u, s], r.aux.cpu()[u, s], r.rows.cpu()[u, s]))
        for kind, u, b, c, m, rows in parts:
            u, b, c, m = (t.cpu().numpy() for t in (u, b, c, m))
            rows = rows.cpu().numpy().astype("<f2")
            for k in np.lexsort((c, b, u)).tolist():
                yield (self.unit(int(u[k])), kind, int(b[k]), int(c[k]), float(m[k]), rows[k].tobytes(), None)


def latent_density(name: str, pos: torch.Tensor, n_tokens: int) -> dict:
    """An SAE's density statistics from its latents' positive counts pos [d_sae] over n_tokens."""
    n_tok = max(int(n_tokens), 1)
    fa = pos.double() / n_tok
    return {"sae": name, "d_sae": int(pos.shape[0]), "dead": int((pos == 0).sum()),
            "dead_frac": round(float((pos == 0).double().mean()), 6),
            # L0, active latents per token: the positive counts Stats already keeps, summed over latents
            "l0": round(float(pos.sum()) / n_tok, 3),
            "median_freq": float(fa.median()), "max_freq": float(fa.max())}


class _Slice:
    """The part of a TopK state that finalize.histograms reads, for a range of units."""

    def __init__(self, idx, rows):
        self.idx, self.rows = idx, rows


def mining_saes(hm, saes: Sequence) -> list:
    """The SAEs to mine, each attached to hm (attached now if it is not)."""
    out = []
    for s in saes:
        if hm.saes.get(s.hook) is not s:
            hm.attach_sae(s)
        out.append(s)
    names = [(s.name, s.layer) for s in out]          # unit ids L<layer>/F<i>@name: (name, layer) is the key
    if len(set(names)) != len(names):
        from ..errors import UsageError

        raise UsageError(f"two SAEs share a name: {names}")
    return out


def output_directions(hm, sae) -> torch.Tensor | None:
    """[d_sae, d_model] residual-stream write of each latent (its decoder row, through W_out for an
    SAE on mlp.post), or None when the SAE's output is not a residual write."""
    L, site = parse_hook(sae.output_hook)
    W = sae.W_dec.float()
    if site in RESID_SITES and W.shape[1] == hm.d_model:
        return W
    if site == "mlp.post":
        return W @ hm.W_out(L).float().to(W.device)
    return None


@torch.no_grad()
def latent_logit_effects(hm, layers: Sequence, k: int = 10, skip: set[str] = frozenset(),
                         decoder: TokenDecoder | None = None, chunk: int | None = None) -> Iterator[tuple[str, list, list]]:
    """(unit, promoted, suppressed) per latent of each LatentLayer: W_dec[i] * ln_final_scale @ W_U,
    in chunks (memory flat in d_sae and vocab)."""
    dec = decoder or TokenDecoder(hm.tokenizer)
    W_U = hm.W_U.float()
    scale = hm.ln_final_scale.float()
    k = min(k, W_U.shape[1])
    chunk = chunk or max(8, (1 << 25) // W_U.shape[1])
    for lay in layers:
        W = output_directions(hm, lay.sae)
        if W is None:
            continue
        W = W[lay.lo:lay.lo + lay.n].to(W_U.device) * scale[None, :]
        todo = [i for i in range(lay.n) if lay.unit(i) not in skip]
        for i, prom, supp in top_effects(W, W_U, todo, k, chunk, dec):
            yield lay.unit(i), prom, supp
