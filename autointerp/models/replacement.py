"""The local replacement model of one prompt (Ameisen et al. 2025, "Circuit Tracing", section 2):
the real model with its MLPs replaced by transcoders plus a per-position error term fixed for this
prompt, and its attention patterns and norm scales frozen at their values in the real forward.
With those frozen, the model is affine in its leaves (the embeddings, each layer's MLP write):
the logits equal their value at zero leaves (the bias terms) plus a linear map of the leaves.

Only this module knows where the norms are and how to freeze them (RMSNorm: x * s * w; LayerNorm:
(x - mean x) * s * w + b, s = 1/sqrt(mean square or variance + eps) of the real input). A layer
without a transcoder keeps its whole MLP output as the error term.

    rep = LocalReplacement(hm, ids, {3: tc3, 5: tc5})
    out = rep.forward(emb, leaves)        # leaves[L]: [B, P, d] = z_L @ W_dec + error_L (its variable part)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..core.hooks import act_name
from ..errors import HookError
from .adapters import norm_kind_of

_NORM_PAIRS = (("ln_1", "ln_2"), ("input_layernorm", "post_attention_layernorm"))


def block_norms(hm) -> list[tuple[nn.Module, nn.Module]]:
    """(pre-attention norm, pre-MLP norm) of every block."""
    out = []
    for blk in hm._blocks:
        for a, b in _NORM_PAIRS:
            if isinstance(getattr(blk, a, None), nn.Module) and isinstance(getattr(blk, b, None), nn.Module):
                out.append((getattr(blk, a), getattr(blk, b)))
                break
        else:
            raise HookError(f"attribution graphs: cannot find the norms of {type(blk).__name__} ({hm.spec})")
    return out


def _eps(norm: nn.Module) -> float:
    for k in ("variance_epsilon", "eps", "epsilon"):
        v = getattr(norm, k, None)
        if isinstance(v, (int, float)):
            return float(v)
    raise HookError(f"attribution graphs: {type(norm).__name__} has no eps attribute")


@dataclass
class _Frozen:
    module: nn.Module
    centred: bool             # a LayerNorm (subtracts the mean); else an RMSNorm
    scale: torch.Tensor       # [1, P, 1] from the real input
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.centred:
            xf = xf - xf.mean(-1, keepdim=True)
        y = xf * self.scale
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


class LocalReplacement:
    """The frozen replacement model of one prompt (ids [1, P]); see the module docstring."""

    def __init__(self, hm, ids: torch.Tensor, transcoders: dict[int, object]):
        if hm.adapter.post_norms or hm.final_logit_softcap:
            raise HookError(f"attribution graphs support pre-norm models without logit soft-capping (GPT-2, Llama "
                            f"families); {hm.spec} is a {hm.adapter.family} model")
        self.hm = hm
        self.ids = torch.as_tensor(ids).reshape(1, -1).to(hm.device)
        self.P = int(self.ids.shape[1])
        self.transcoders = dict(transcoders)
        norms = [m for pair in block_norms(hm) for m in pair] + [hm.adapter.final_norm()]
        seen: dict[int, tuple] = {}
        handles = [m.register_forward_hook(lambda mod, a, out: seen.__setitem__(id(mod), (a[0], out))) for m in norms]
        L = hm.n_layers
        names = ([act_name("attn.pattern", i) for i in range(L)] + [act_name("mlp.in", i) for i in range(L)]
                 + [act_name("mlp.out", i) for i in range(L)] + [act_name("resid_pre", 0)])
        try:
            run = hm.forward(self.ids, cache=names)
        finally:
            for h in handles:
                h.remove()
        self.logits = run.logits[0].float()                                  # [P, V]
        self.patterns = {i: run[act_name("attn.pattern", i)] for i in range(L)}
        self.mlp_in = {i: run[act_name("mlp.in", i)][0].float() for i in range(L)}
        self.mlp_out = {i: run[act_name("mlp.out", i)][0].float() for i in range(L)}
        self.emb = run[act_name("resid_pre", 0)][0].float()                 # [P, d]: what block 0 reads
        self.frozen: list[_Frozen] = []
        for m in norms:
            x0, y0 = seen[id(m)]
            centred = norm_kind_of(m) == "layernorm"
            xf = x0.float()
            if centred:
                s = torch.rsqrt(xf.var(-1, keepdim=True, unbiased=False) + _eps(m))
            else:
                s = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + _eps(m))
            w, b = hm.adapter.norm_affine(m)
            fz = _Frozen(m, centred, s.detach(), None if w is None else w.detach().float(),
                         None if b is None else b.detach().float())
            if not torch.allclose(fz.linear(x0).float(), y0.float(), rtol=1e-4, atol=1e-4 * float(y0.abs().max())):
                raise HookError(f"attribution graphs: cannot reproduce {type(m).__name__} as a frozen-scale norm")
            self.frozen.append(fz)
        # per layer: latents, error (real MLP out minus reconstruction), the transcoder's output bias
        self.latents: dict[int, torch.Tensor] = {}
        self.error: dict[int, torch.Tensor] = {}
        for i in range(L):
            tc = self.transcoders.get(i)
            if tc is None:
                self.error[i] = self.mlp_out[i]
                continue
            tc.to(hm.device)
            z, rec = tc(self.mlp_in[i])
            self.latents[i] = z
            self.error[i] = self.mlp_out[i] - rec

    @contextmanager
    def _linear_norms(self):
        saved = []
        try:
            for fz in self.frozen:
                saved.append((fz.module, fz.module.__dict__.get("forward")))
                fz.module.forward = fz.linear
            yield
        finally:
            for mod, old in reversed(saved):
                mod.__dict__.pop("forward", None)
                if old is not None:
                    mod.forward = old

    def variable_part(self, layer: int) -> torch.Tensor:
        """[P, d]: the MLP write of `layer` less its constant (the transcoder's b_dec and skip path)."""
        tc = self.transcoders.get(layer)
        if tc is None:
            return self.error[layer]
        return self.latents[layer] @ tc.W_dec + self.error[layer]

    def forward(self, emb: torch.Tensor, leaves: dict[int, torch.Tensor], grad: bool = True,
                keep_mlp_in: dict | None = None, token_ids: list[int] | None = None) -> torch.Tensor:
        """Logits [B, P, V] of the frozen model with block 0 reading `emb` ([B, P, d]) and layer L's MLP
        writing leaves[L] ([B, P, d]) + its transcoder's b_dec (+ its skip path, live). keep_mlp_in,
        if given, receives each layer's live MLP input [B, P, d] (for latent pre-activations).

        token_ids: unembed only these tokens, [B, P, len(token_ids) + 1], the last column the mean
        logit over the whole vocabulary. Same numbers as the full logits' columns, but a backward
        pass from them costs d x len(token_ids) per position instead of d x V (for SmolLM2, V = 49,152:
        the full unembedding's backward was most of a graph's time)."""
        B = int(emb.shape[0])
        ids = self.ids.expand(B, self.P)
        live: dict[int, torch.Tensor] = {} if keep_mlp_in is None else keep_mlp_in
        hooks = {act_name("resid_pre", 0): lambda v: emb}
        for i in range(self.hm.n_layers):
            pat = self.patterns[i]
            hooks[act_name("attn.pattern", i)] = (lambda v, pat=pat: pat.expand(v.shape[0], *pat.shape[1:]))

            def keep(v, i=i):
                live[i] = v

            def write(v, i=i):
                tc = self.transcoders.get(i)
                out = leaves[i]
                if tc is not None:
                    out = out + tc.b_dec
                    if tc.W_skip is not None:
                        out = out + live[i].float() @ tc.W_skip.T
                return out.to(v.dtype)

            hooks[act_name("mlp.in", i)], hooks[act_name("mlp.out", i)] = keep, write
        if token_ids is None:
            with self._linear_norms():
                run = self.hm.forward(ids, hooks=hooks, grad=grad)
            return run.logits.float()
        if self.hm.final_logit_softcap:     # pragma: no cover  (refused in __init__)
            raise HookError("token_ids: soft-capped logits are not linear")
        final = act_name("ln_final.out")
        with self._linear_norms():
            run = self.hm.forward(ids, hooks=hooks, grad=grad, cache=[final], return_logits=False)
        h = run[final].float()                                               # [B, P, d]
        W_U, b_U = self.hm.W_U.float(), self.hm.b_U
        W = torch.cat([W_U[:, token_ids], W_U.mean(1, keepdim=True)], 1)   # [d, T + 1]
        out = h @ W
        if b_U is not None:
            b_U = b_U.float()
            out = out + torch.cat([b_U[token_ids], b_U.mean().reshape(1)])
        return out
