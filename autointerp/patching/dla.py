"""Direct logit attribution (DLA) on the clean prompts.

The final residual stream at the last token is a sum of component outputs; the final norm is
linear once its scale is frozen at the value the run used, so each head's output (z_h W_O^h) and
each neuron's output (act_n W_out[n]) has a direct contribution to logit(answer) - logit(wrong):

    dla(c) = mean over items of  c_out . g,   g = (w / s) * (W_U[:, answer] - W_U[:, wrong])

with w the norm's (effective) weight, s the frozen scale, and g centred for LayerNorm. Effects
are in logits (not normalised): they sum, with the embeddings' and biases' shares, to the clean
logit difference.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..core.hooks import act_name
from ..core.units import Unit, kind_of_plural
from ..errors import UsageError
from ..tasks.items import PairItem
from .core import Batch, PatchResult, prepare, run_ld, sort_results


def _is_layernorm(hm) -> bool:
    return hm.norm_kind == "layernorm"


def logit_direction(hm, b: Batch, resid_final: torch.Tensor, normed_final: torch.Tensor,
                    u: torch.Tensor | None = None) -> torch.Tensor:
    """g [B, d_model]: the direction in the final residual stream (at each item's last token) that
    reads the logit difference, through the final norm with its scale frozen. u [B, d_model]: read
    another unembedding direction instead of W_U[:, answer] - W_U[:, wrong] (e.g. a token's logit
    against the mean logit)."""
    rows = torch.arange(b.size, device=resid_final.device)
    r = resid_final[rows, b.last].float()
    y = normed_final[rows, b.last].float()
    w = hm.ln_final_scale.float()
    centred = _is_layernorm(hm)
    bias = hm.ln_final_bias
    yb = y - (bias.float() if bias is not None else 0.0)
    rc = r - r.mean(-1, keepdim=True) if centred else r
    s = (w * rc).norm(dim=-1) / yb.norm(dim=-1).clamp_min(1e-12)          # [B] frozen scale
    if u is None:
        W_U = hm.W_U.float()
        u = W_U[:, b.ans].T - W_U[:, b.wrong].T                           # [B, d]
    g = w * u / s[:, None]
    return g - g.mean(-1, keepdim=True) if centred else g


@torch.no_grad()
def direct_logit_attribution(hm, items: Sequence[PairItem], what: str = "heads", *, layer: int | None = None,
                             batch_size: int = 32) -> PatchResult:
    if what not in ("heads", "neurons"):
        raise UsageError("direct logit attribution is per head (--what heads) or per neuron (--what neurons)")
    layers = list(range(hm.n_layers)) if layer is None else [layer]
    if layer is not None and not 0 <= layer < hm.n_layers:
        raise UsageError(f"--layer {layer} out of range (model has layers 0..{hm.n_layers - 1})")
    data = prepare(hm, items, batch_size)
    last_resid = act_name("resid_post", hm.n_layers - 1)
    pt = "attn.z" if what == "heads" else "mlp.post"
    hooks = [act_name(pt, L) for L in layers]
    sums = {L: None for L in layers}
    clean_sum = corrupt_sum = 0.0
    for b in data:
        ld, run = run_ld(hm, b.clean, b, cache=[last_resid, *hooks])
        ldx, _ = run_ld(hm, b.corrupt, b)
        clean_sum += float(ld.double().sum())
        corrupt_sum += float(ldx.double().sum())
        g = logit_direction(hm, b, run.cache[last_resid], run.cache[act_name("ln_final.out")])       # [B, d]
        rows = torch.arange(b.size, device=g.device)
        for L in layers:
            a = run.cache[act_name(pt, L)][rows, b.last].float()                           # [B, H, dh] | [B, d_mlp]
            if what == "heads":
                per = torch.einsum("bhe,hed,bd->bh", a, hm.W_O(L).float(), g)
            else:
                per = a * (g @ hm.W_out(L).float().T)                                       # [B, d_mlp]
            s = per.double().sum(0).cpu()
            sums[L] = s if sums[L] is None else sums[L] + s
    N = data.n_items
    rows_out = []
    for L in layers:
        for i, v in enumerate((sums[L] / N).tolist()):
            name = Unit(L, kind_of_plural(what).name, i).id
            rows_out.append({"component": name, "layer": L, "position": None, "effect": round(v, 6)})
    return PatchResult(what=f"dla_{what}", method="dla", direction=None, clean_logit_diff=round(clean_sum / N, 6),
                       corrupt_logit_diff=round(corrupt_sum / N, 6), normalised=False, n_items=N,
                       results=sort_results(rows_out), settings={"layer": layer, "units": "logits"})
