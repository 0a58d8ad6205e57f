"""Each MLP neuron's direct effect on the logits: its output weights (a row of W_out), scaled by
the final norm's scale, through the unembedding. The tokens it most promotes and suppresses.

    effect[n, t] = sum_d W_out[L][n, d] * ln_final_scale[d] * W_U[d, t]

(the final norm's centring/normalisation is ignored: it rescales all tokens together).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from ..core.units import Unit
from ..models.hooked import HookedModel


class TokenDecoder:
    """id -> decoded single-token string, memoised (decode is slow per call)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, ids: Iterable[int]) -> list[str]:
        ids = [int(i) for i in ids]
        miss = sorted({i for i in ids if i not in self.cache})
        if miss:
            for i, s in zip(miss, self.tokenizer.batch_decode([[i] for i in miss])):
                self.cache[i] = s
        return [self.cache[i] for i in ids]


@torch.no_grad()
def neuron_logit_effects(hm: HookedModel, layer: int, neurons: torch.Tensor | None = None) -> torch.Tensor:
    """[n, vocab] direct logit effect of the layer's neurons (all, or the given indices)."""
    W = hm.W_out(layer).float()
    if neurons is not None:
        W = W[neurons]
    return (W * hm.ln_final_scale.float()[None, :]) @ hm.W_U.float()


@torch.no_grad()
def direct_logit_effects(hm: HookedModel, layers: Iterable[int], k: int = 10, skip: set[str] = frozenset(),
                         chunk: int | None = None, decoder: TokenDecoder | None = None) -> Iterator[tuple[str, list, list]]:
    """(unit, promoted [[token, weight], ...], suppressed [[token, weight], ...]) per neuron, most
    extreme first; units in `skip` are left out. Batched per layer in chunks of `chunk` neurons
    (memory flat in d_mlp and vocab)."""
    dec = decoder or TokenDecoder(hm.tokenizer)
    W_U = hm.W_U.float()
    scale = hm.ln_final_scale.float()
    k = min(k, W_U.shape[1])
    chunk = chunk or max(8, (1 << 25) // W_U.shape[1])         # ~128 MB of float32 effects at a time
    for L in layers:
        todo = [n for n in range(hm.d_mlp) if Unit.neuron(L, n).id not in skip]
        if not todo:
            continue
        W = hm.W_out(L).float() * scale[None, :]
        for n, prom, supp in top_effects(W, W_U, todo, k, chunk, dec):
            yield Unit.neuron(L, n).id, prom, supp


def top_effects(W: torch.Tensor, W_U: torch.Tensor, rows: list[int], k: int, chunk: int, dec: TokenDecoder):
    """(row, promoted, suppressed) for each of `rows` of W (output directions, already scaled by
    the final norm): the k most promoted and suppressed tokens of W[row] @ W_U, in chunks."""
    for a in range(0, len(rows), chunk):
        idx = torch.tensor(rows[a:a + chunk], device=W.device)
        eff = W[idx] @ W_U
        pv, pi = eff.topk(k, dim=1)
        sv, si = eff.topk(k, dim=1, largest=False)
        pv, pi, sv, si = pv.cpu().tolist(), pi.cpu().tolist(), sv.cpu().tolist(), si.cpu().tolist()
        for j, r in enumerate(idx.tolist()):
            yield (r, [[t, round(v, 4)] for t, v in zip(dec(pi[j]), pv[j])],
                   [[t, round(v, 4)] for t, v in zip(dec(si[j]), sv[j])])


# the direct logit effect stored by mining for each unit kind with `logits` and a hook site, by kind name:
# fn(hm, layers, k=, skip=, decoder=) -> (unit, promoted, suppressed) rows (SAE latents: mine/sae.py)
LOGIT_EFFECTS = {"neuron": direct_logit_effects}
