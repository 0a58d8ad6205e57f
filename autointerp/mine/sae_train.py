"""A small, honest TopK SAE trainer: activations streamed from the hooked model, Adam on the
reconstruction loss, decoder rows kept at unit norm, and the AuxK loss of Gao et al. (2024) on
dead latents. Writes the SAELens format that models/sae.py loads.

    sae, report = train_topk(hm, "blocks.3.resid_post", n_latents=4096, k=32, n_tokens=2_000_000)
    sae.save("saes/l3-4k")

report: explained variance, L0 and the dead-latent fraction on held-out contexts (the last
`eval_contexts` of the stream, never trained on), plus the loss curve's ends.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch

from ..corpus import iter_batches, layout_for, open_source
from ..corpus.sources import DEFAULT_CORPUS
from ..errors import UsageError
from ..models.sae import SAE


def _fvu(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))


def train_topk(hm, hook: str, n_latents: int, k: int = 32, n_tokens: int = 200_000, *, corpus: str = DEFAULT_CORPUS,
               text_field: str = "text", context_len: int = 64, batch_size: int = 16, minibatch: int = 512,
               lr: float | None = None, aux_coef: float = 1 / 32, dead_tokens: int = 20_000, eval_contexts: int = 32,
               seed: int = 0, name: str = "sae", progress: bool = False) -> tuple[SAE, dict[str, Any]]:
    """Train a TopK SAE on `hook` of hm over n_tokens tokens of corpus (one pass)."""
    hook = hm.check_hook(hook)
    d_in = hm.hook_width(hook)
    L = int(hook.split(".")[1])
    if n_latents < 1 or not 1 <= k <= n_latents:
        raise UsageError(f"--latents must be >= 1 and --k in 1..latents, got latents={n_latents}, k={k}")
    if n_tokens < context_len:
        raise UsageError(f"--tokens must be at least one context ({context_len}), got {n_tokens}")
    source = open_source(corpus, text_field)
    layout = layout_for(hm.tokenizer, context_len)
    fp = layout.first_pos
    n_ctx = max(1, n_tokens // context_len)
    dev = hm.device
    g = torch.Generator().manual_seed(seed)
    torch_rng = torch.Generator(device="cpu").manual_seed(seed + 1)

    def acts(ids: torch.Tensor) -> torch.Tensor:
        v = hm.forward(ids.to(dev), cache=[hook], return_logits=False, stop_at_layer=L + 1)[hook]
        return v.reshape(v.shape[0], v.shape[1], -1)[:, fp:].reshape(-1, d_in).float()

    # held-out contexts first (indices n_ctx.. so they are never trained on)
    held = [ids for _, ids in iter_batches(hm.tokenizer, source, context_len, batch_size, start=n_ctx,
                                           limit=eval_contexts, layout=layout)]
    if not held:
        raise UsageError(f"corpus {source.spec!r} has fewer than {n_ctx} + 1 contexts of {context_len} tokens: "
                         "lower --tokens")
    x_eval = torch.cat([acts(ids) for ids in held])
    scale = float(x_eval.norm(dim=-1).mean()) or 1.0

    W_dec = torch.randn(n_latents, d_in, generator=g)
    W_dec = (W_dec / W_dec.norm(dim=-1, keepdim=True)).to(dev)
    params = {"W_enc": W_dec.T.clone().contiguous(), "b_enc": torch.zeros(n_latents, device=dev),
              "W_dec": W_dec.clone(), "b_dec": x_eval.median(dim=0).values.to(dev).clone()}
    for p in params.values():
        p.requires_grad_(True)
    lr = lr or 2e-4 / math.sqrt(n_latents / (2 ** 14))
    opt = torch.optim.Adam(list(params.values()), lr=lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(n_latents, dtype=torch.long, device=dev)
    ever_fired = torch.zeros(n_latents, dtype=torch.bool, device=dev)
    k_aux = min(n_latents, max(1, d_in // 2))
    steps, seen, losses, t0 = 0, 0, [], time.perf_counter()

    def fwd(x):
        xn = x / scale
        pre = (xn - params["b_dec"] / scale) @ params["W_enc"] + params["b_enc"]
        top = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        return pre, z, (z @ params["W_dec"]) * scale + params["b_dec"]

    for _, ids in iter_batches(hm.tokenizer, source, context_len, batch_size, start=0, limit=n_ctx, layout=layout):
        with torch.no_grad():
            x_all = acts(ids)
        perm = torch.randperm(x_all.shape[0], generator=torch_rng).to(dev)
        for a in range(0, x_all.shape[0], minibatch):
            x = x_all[perm[a:a + minibatch]]
            pre, z, y = fwd(x)
            err = (y - x) / scale
            loss = err.pow(2).sum(-1).mean()
            dead = since_fired >= dead_tokens
            if aux_coef and bool(dead.any()):
                ka = min(k_aux, int(dead.sum()))
                aux_pre = torch.where(dead[None], pre, torch.full_like(pre, float("-inf")))
                t = aux_pre.topk(ka, dim=-1)
                za = torch.zeros_like(pre).scatter(-1, t.indices, torch.relu(t.values))
                aux = ((za @ params["W_dec"]) - (-err.detach())).pow(2).sum(-1).mean()
                loss = loss + aux_coef * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():          # keep the gradient off the decoder norm (rows stay unit length)
                Wd, gd = params["W_dec"], params["W_dec"].grad
                gd -= (gd * Wd).sum(-1, keepdim=True) * Wd
            opt.step()
            with torch.no_grad():
                params["W_dec"] /= params["W_dec"].norm(dim=-1, keepdim=True).clamp_min(1e-8)
                fired = (z > 0).any(0)
                since_fired += x.shape[0]
                since_fired[fired] = 0
                ever_fired |= fired
            losses.append(float(loss.detach()))
            steps += 1
            seen += x.shape[0]
        if progress and losses:
            print(f"\rsae train: {seen:,} tokens, {steps} steps, loss {losses[-1]:.4f}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    if steps == 0:
        raise UsageError(f"corpus {source.spec!r} gave no context of {context_len} tokens")
    with torch.no_grad():  # fold the input scale into the weights: plain SAELens topk maths, no normalisation
        W_enc = params["W_enc"] / scale
        b_enc = params["b_enc"]             # (x - b_dec) @ (W/s) == (x/s - b_dec/s) @ W
        W_dec_out = params["W_dec"] * scale
    sae = SAE(architecture="topk", W_enc=W_enc.detach().cpu(), b_enc=b_enc.detach().cpu(),
              W_dec=W_dec_out.detach().cpu(), b_dec=params["b_dec"].detach().cpu(), hook=hook, k=k,
              apply_b_dec_to_input=True, name=name,
              cfg={"metadata": {"model_name": hm.spec, "hook_name": hook, "context_size": context_len,
                                "dataset_path": source.spec},
                   "autointerp_training": {"tokens": seen, "steps": steps, "lr": lr, "minibatch": minibatch,
                                           "seed": seed, "trainer": "topk-adam-auxk"}})
    with torch.no_grad():
        z, y = sae(x_eval.cpu())
        fired_eval = (z > 0).any(0)
    report = {"hook": hook, "latents": n_latents, "k": k, "tokens": seen, "steps": steps,
              "seconds": round(time.perf_counter() - t0, 2), "lr": lr,
              "explained_variance": round(1 - _fvu(x_eval.cpu(), y), 4), "l0": round(float((z > 0).sum(-1).float().mean()), 2),
              "dead_frac": round(float((~ever_fired.cpu()).float().mean()), 4),
              "dead_frac_eval": round(float((~fired_eval).float().mean()), 4), "eval_tokens": int(x_eval.shape[0]),
              "loss_first": round(losses[0], 4), "loss_last": round(sum(losses[-10:]) / len(losses[-10:]), 4)}
    sae.cfg["autointerp_training"]["report"] = report
    return sae, report
