"""trace: run the subject model on one text and report, per token, the most active MLP
neurons and where the heads attend. Stores nothing: the first look at a new model."""

from __future__ import annotations

import torch
from pydantic import BaseModel

from ..models.hooked import HookedModel
from ..core.hooks import act_name
from ..core.units import Unit
from ..errors import UnitError


class NeuronHit(BaseModel):
    unit: str
    act: float


class HeadHit(BaseModel):
    unit: str
    attends_to: int          # key position
    token: str               # the attended token
    weight: float


class TokenTrace(BaseModel):
    pos: int
    token: str
    neurons: list[NeuronHit]
    heads: list[HeadHit]


class Trace(BaseModel):
    model: str
    text: str
    layers: list[int]
    tokens: list[TokenTrace]


def trace(hm: HookedModel, text: str, layers: list[int] | None = None, top: int = 5) -> Trace:
    """Per token: the `top` most active neurons over `layers` (default all) and the `top`
    heads attending most strongly to an earlier, non-first token."""
    layers = list(range(hm.n_layers)) if layers is None else layers
    for L in layers:
        hm.check_unit(Unit.neuron(L, 0))
    ids, mask = hm.tokenize([text])
    names = [act_name("mlp.post", L) for L in layers] + [act_name("attn.pattern", L) for L in layers]
    run = hm.forward(ids, mask, cache=names, return_logits=False)
    n_tok = int(mask[0].sum())
    toks = hm.to_str_tokens(ids[0, :n_tok])

    acts = torch.stack([run.cache[act_name("mlp.post", L)][0, :n_tok] for L in layers])  # [nl, pos, d_mlp]
    nl, _, d_mlp = acts.shape
    flat = acts.permute(1, 0, 2).reshape(n_tok, nl * d_mlp)
    n_vals, n_idx = flat.float().topk(min(top, flat.shape[1]), dim=1)

    pats = torch.stack([run.cache[act_name("attn.pattern", L)][0, :, :n_tok, :n_tok] for L in layers])  # [nl, h, q, k]
    pats = pats.float().clone()
    pats[..., 0] = 0.0                                     # attention to the first token is a no-op sink
    w, k = pats.max(dim=-1)                                # [nl, h, q]
    nh = w.shape[1]
    w_flat = w.permute(2, 0, 1).reshape(n_tok, nl * nh)
    k_flat = k.permute(2, 0, 1).reshape(n_tok, nl * nh)
    h_vals, h_idx = w_flat.topk(min(top, w_flat.shape[1]), dim=1)

    out = []
    for p in range(n_tok):
        neurons = [NeuronHit(unit=str(Unit.neuron(layers[i // d_mlp], i % d_mlp)), act=round(float(v), 4))
                   for v, i in zip(n_vals[p].tolist(), n_idx[p].tolist())]
        heads = []
        if p > 0:
            for v, i in zip(h_vals[p].tolist(), h_idx[p].tolist()):
                kp = int(k_flat[p, i])
                if v > 0:
                    heads.append(HeadHit(unit=str(Unit.head(layers[i // nh], i % nh)), attends_to=kp, token=toks[kp], weight=round(v, 4)))
        out.append(TokenTrace(pos=p, token=toks[p], neurons=neurons, heads=heads))
    return Trace(model=hm.spec, text=text, layers=layers, tokens=out)


class UnitTrace(BaseModel):
    """One unit's activation on every token of a text: what the miner records for it (a neuron's
    mlp.post, the norm of a head's attn.z output, an SAE latent's value)."""

    model: str
    unit: str
    text: str
    tokens: list[str]
    acts: list[float]


def unit_trace(hm: HookedModel, text: str, unit: Unit | str, sae=None) -> UnitTrace:
    """Per token of `text`, the activation of one unit, as mining measures it. An SAE latent needs
    its SAE (attached for this call, then detached unless it was already attached)."""
    u = Unit.parse(unit) if isinstance(unit, str) else unit
    if u.record.needs_sae:
        if sae is None:
            raise UnitError(f"{u} is an SAE latent: give its SAE")
        if sae.layer != u.layer or not 0 <= u.index < sae.d_sae:
            raise UnitError(f"{u}: not a latent of SAE {sae.name} (layer {sae.layer}, latents 0..{sae.d_sae - 1})")
        was = hm.saes.get(sae.hook)
        hm.attach_sae(sae)
        name = sae.latents_hook
    else:
        hm.check_unit(u)
        was, name = None, u.hook
    ids, mask = hm.tokenize([text])
    try:
        with torch.no_grad():
            run = hm.forward(ids, mask, cache=[name], return_logits=False)
    finally:
        if u.record.needs_sae and was is not sae:
            hm.detach_sae(sae)
            if was is not None:
                hm.attach_sae(was)
    n_tok = int(mask[0].sum())
    x = run.cache[name][0, :n_tok].float()
    acts = x[:, u.index] if u.record.axis != "head" else x[:, u.index].norm(dim=-1)   # a head: its output norm
    return UnitTrace(model=hm.spec, unit=str(u), text=text, tokens=hm.to_str_tokens(ids[0, :n_tok]),
                     acts=[round(float(a), 6) for a in acts.tolist()])
