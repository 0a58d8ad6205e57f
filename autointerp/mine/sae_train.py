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


def _corpus_split(hm, corpus, text_field, n_tokens: int, context_len: int, batch_size: int, eval_contexts: int):
    """(source, layout, n_ctx, held): the corpus, its context layout, the n_ctx training contexts'
    count, and the held-out contexts read first (indices n_ctx.., so they are never trained on)."""
    if n_tokens < context_len:
        raise UsageError(f"--tokens must be at least one context ({context_len}), got {n_tokens}")
    source = open_source(corpus, text_field)
    layout = layout_for(hm.tokenizer, context_len)
    n_ctx = max(1, n_tokens // context_len)
    held = [ids for _, ids in iter_batches(hm.tokenizer, source, context_len, batch_size, start=n_ctx,
                                           limit=eval_contexts, layout=layout)]
    if not held:
        raise UsageError(f"corpus {source.spec!r} has fewer than {n_ctx} + 1 contexts of {context_len} tokens: "
                         "lower --tokens")
    return source, layout, n_ctx, held


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
    source, layout, n_ctx, held = _corpus_split(hm, corpus, text_field, n_tokens, context_len, batch_size,
                                                eval_contexts)
    fp = layout.first_pos
    dev = hm.device
    g = torch.Generator().manual_seed(seed)
    torch_rng = torch.Generator(device="cpu").manual_seed(seed + 1)

    def acts(ids: torch.Tensor) -> torch.Tensor:
        v = hm.forward(ids.to(dev), cache=[hook], return_logits=False, stop_at_layer=L + 1)[hook]
        return v.reshape(v.shape[0], v.shape[1], -1)[:, fp:].reshape(-1, d_in).float()

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


# ----------------------------------------------------------------------------- transcoders


def mlp_replaced_ce(hm, transcoders: dict, contexts: list[torch.Tensor], first_pos: int = 0) -> dict[str, float]:
    """Next-token loss on `contexts` with the MLPs of `transcoders` ({layer: SAE}) replaced by their
    reconstruction at once (each reads the MLP input of the already-replaced stream), with the same
    MLPs zero-ablated, and clean. ce_recovered = (zero - replaced) / (zero - clean), as SAE papers
    report it (e.g. Dunefsky et al. 2024, transcoders; Gao et al. 2024 for SAEs)."""
    from ..core.hooks import act_name

    def hooks(mode: str) -> dict:
        if mode == "clean":
            return {}
        h, seen = {}, {}
        for L, tc in transcoders.items():
            if mode == "zero":
                h[act_name("mlp.out", L)] = lambda v: torch.zeros_like(v)
                continue

            def keep(v, L=L):
                seen[L] = v

            def put(v, L=L, tc=tc):
                x = seen.pop(L)
                return tc(x.float())[1].to(v.dtype)

            h[act_name("mlp.in", L)], h[act_name("mlp.out", L)] = keep, put
        return h

    out = {}
    for mode in ("clean", "replaced", "zero"):
        tot, n = 0.0, 0
        for ids in contexts:
            logits = hm.forward(ids.to(hm.device), hooks=hooks(mode)).logits.float()
            lp = torch.log_softmax(logits[:, first_pos:-1], -1)
            tgt = ids[:, first_pos + 1:].to(lp.device)
            tot += float(-lp.gather(-1, tgt[..., None]).sum())
            n += tgt.numel()
        out[mode] = tot / max(n, 1)
    gap = out["zero"] - out["clean"]
    rec = (out["zero"] - out["replaced"]) / gap if gap > 1e-9 else None
    return {"ce_clean": round(out["clean"], 4), "ce_replaced": round(out["replaced"], 4),
            "ce_zero_ablated": round(out["zero"], 4), "ce_recovered": None if rec is None else round(rec, 4),
            **({} if rec is not None else {"ce_recovered_reason": "zero-ablating these MLPs does not raise the loss"})}


def _skip_init(p: dict, xn: torch.Tensor, yn: torch.Tensor, ridge: float = 1e-2) -> None:
    """Start a skip transcoder's linear path at the ridge least-squares map of the first training
    batches (xn, yn: [nL, n, d], in the trainer's units), with b_dec its intercept: the latents then
    learn what a linear map of the MLP input misses, instead of first relearning the linear part
    through Adam steps (on this CPU, the steps are the scarce thing)."""
    with torch.no_grad():
        mx, my = xn.mean(1, keepdim=True), yn.mean(1, keepdim=True)
        xc, yc = xn - mx, yn - my
        G = xc.transpose(1, 2) @ xc                                        # [nL, d, d]
        lam = ridge * G.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
        G = G + lam[:, None, None] * torch.eye(G.shape[-1], device=G.device)
        M = torch.linalg.solve(G, xc.transpose(1, 2) @ yc)                 # y ~ x @ M
        p["W_skip"].copy_(M.transpose(1, 2))
        p["b_dec"].copy_(my - mx @ M)


def train_transcoders(hm, layers: list[int], n_latents: int, l1: float = 1.0, n_tokens: int = 200_000, *,
                      skip: bool = False, corpus: str = DEFAULT_CORPUS, text_field: str = "text",
                      context_len: int = 64, batch_size: int = 16, minibatch: int = 512, lr: float | None = None,
                      l1_warmup: float = 0.2, eval_contexts: int = 32, seed: int = 0, name: str = "transcoders",
                      progress: bool = False) -> tuple[dict[int, SAE], dict[str, Any]]:
    """Per-layer MLP transcoders (ReLU; `skip` adds a linear skip W_skip) trained from ONE streamed
    pass: each forward caches every requested layer's MLP input (after its norm) and output, and
    every layer's transcoder takes an Adam step on the same minibatch. The loss is the MSE of the
    MLP output (in units of its mean norm) + l1 * sum_i z_i |W_dec_i| (Anthropic's sparsity
    penalty), l1 ramped up linearly over the first `l1_warmup` of training. All layers step
    together as one batched matmul over stacked weights; `skip` starts W_skip at the ridge
    least-squares fit of the first >= 4 x d_model tokens (see _skip_init). report["timing"] splits
    the time into model forwards, transcoder steps and evaluation. Returns
    ({layer: SAE in the SAELens transcoder format}, report with per-layer explained variance of the
    MLP output, L0, dead latents, and the CE loss with all these MLPs replaced at once)."""
    from ..core.hooks import act_name

    layers = sorted(set(int(L) for L in layers))
    if not layers or not all(0 <= L < hm.n_layers for L in layers):
        raise UsageError(f"--layers must be in 0..{hm.n_layers - 1}, got {layers}")
    if n_latents < 1 or l1 < 0:
        raise UsageError(f"--latents must be >= 1 and --l1 >= 0, got latents={n_latents}, l1={l1}")
    source, layout, n_ctx, held = _corpus_split(hm, corpus, text_field, n_tokens, context_len, batch_size,
                                                eval_contexts)
    fp = layout.first_pos
    dev = hm.device
    d = hm.d_model
    hin = {L: act_name("mlp.in", L) for L in layers}
    hout = {L: act_name("mlp.out", L) for L in layers}
    stop = max(layers) + 1

    def acts(ids: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        run = hm.forward(ids.to(dev), cache=list(hin.values()) + list(hout.values()), return_logits=False,
                         stop_at_layer=stop if stop < hm.n_layers else None)
        return {L: tuple(run[h][:, fp:].reshape(-1, d).float() for h in (hin[L], hout[L])) for L in layers}

    ev = [acts(ids) for ids in held]
    x_eval = {L: torch.cat([e[L][0] for e in ev]) for L in layers}
    y_eval = {L: torch.cat([e[L][1] for e in ev]) for L in layers}
    g = torch.Generator().manual_seed(seed)
    torch_rng = torch.Generator(device="cpu").manual_seed(seed + 1)
    lr = lr or 2e-4 / math.sqrt(n_latents / (2 ** 14))
    nL = len(layers)
    # every layer's transcoder is one slice of stacked parameters ([nL, ...]): one batched matmul
    # per step for all layers, not a Python loop of small ones. The layers' losses are summed; their
    # parameters are disjoint, so each gets exactly the gradient (and, Adam being elementwise, the
    # update) it would get alone.
    sx = torch.tensor([float(x_eval[L].norm(dim=-1).mean()) or 1.0 for L in layers], device=dev).view(nL, 1, 1)
    sy = torch.tensor([float(y_eval[L].norm(dim=-1).mean()) or 1.0 for L in layers], device=dev).view(nL, 1, 1)
    W = torch.randn(nL, n_latents, d, generator=g)
    W = W / W.norm(dim=-1, keepdim=True)
    p = {"W_enc": (0.5 * W.transpose(1, 2)).contiguous().to(dev), "b_enc": torch.zeros(nL, 1, n_latents, device=dev),
         "W_dec": ((0.05 if skip else 0.5) * W).contiguous().to(dev),   # with skip: small, next to the fitted linear path
         "b_dec": torch.stack([y_eval[L].mean(0) for L in layers]).view(nL, 1, d).to(dev) / sy}
    if skip:
        p["W_skip"] = torch.zeros(nL, d, d, device=dev)
    for t in p.values():
        t.requires_grad_(True)
    opt = torch.optim.Adam(list(p.values()), lr=lr)
    fired_all = torch.zeros(nL, n_latents, dtype=torch.bool, device=dev)
    mses: list[torch.Tensor] = []
    total_steps = max(1, (n_ctx * (context_len - fp) + minibatch - 1) // minibatch)
    steps, seen, t0 = 0, 0, time.perf_counter()
    t_fwd = t_train = 0.0

    def fwd(x):
        xn = x / sx
        z = torch.relu(torch.baddbmm(p["b_enc"], xn, p["W_enc"]))
        y = torch.baddbmm(p["b_dec"], z, p["W_dec"])
        if skip:
            y = y + torch.bmm(xn, p["W_skip"].transpose(1, 2))
        return z, y

    def train_on(X: torch.Tensor, Y: torch.Tensor) -> None:
        nonlocal steps, seen
        n = X.shape[1]
        perm = torch.randperm(n, generator=torch_rng).to(dev)
        for a in range(0, n, minibatch):
            idx = perm[a:a + minibatch]
            coef = l1 * min(1.0, steps / max(1.0, l1_warmup * total_steps))
            z, yh = fwd(X[:, idx])
            mse = (yh - Y[:, idx]).pow(2).sum(-1).mean(-1)                         # [nL]
            sparsity = (z * p["W_dec"].norm(dim=-1)[:, None]).sum(-1).mean(-1)    # [nL]
            loss = (mse + coef * sparsity).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                fired_all.logical_or_((z > 0).any(1))
            mses.append(mse.detach())
            steps += 1
            seen += int(idx.numel())

    # --skip: the first batches (>= 4 x d_model tokens, so the d x d fit does not overfit one batch)
    # are held back, the linear path is fitted to them, then they are trained on like the rest
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    fit_tokens = 4 * d if skip else 0

    def flush() -> None:
        if skip and pending and steps == 0:
            _skip_init(p, torch.cat([x for x, _ in pending], 1) / sx, torch.cat([y for _, y in pending], 1))
        for X, Y in pending:
            train_on(X, Y)
        pending.clear()

    for _, ids in iter_batches(hm.tokenizer, source, context_len, batch_size, start=0, limit=n_ctx, layout=layout):
        ta = time.perf_counter()
        with torch.no_grad():
            got = acts(ids)
            pending.append((torch.stack([got[L][0] for L in layers]), torch.stack([got[L][1] for L in layers]) / sy))
        del got
        tb = time.perf_counter()
        if steps > 0 or sum(x.shape[1] for x, _ in pending) >= fit_tokens:
            flush()
        t_fwd += tb - ta
        t_train += time.perf_counter() - tb
        if progress:
            el = time.perf_counter() - t0
            print(f"\rsae train --kind transcoder: {seen:,} tokens x {nL} layers, {steps} steps, "
                  f"{seen / max(el, 1e-9):.0f} tok/s", end="", file=sys.stderr)
    tb = time.perf_counter()
    flush()
    t_train += time.perf_counter() - tb
    if progress:
        print(file=sys.stderr)
    if steps == 0:
        raise UsageError(f"corpus {source.spec!r} gave no context of {context_len} tokens")
    te = time.perf_counter()
    arch = "skip_transcoder" if skip else "transcoder"
    mse_hist = torch.stack(mses).cpu()                                                # [steps, nL]
    out, per_layer = {}, []
    for i, L in enumerate(layers):
        sxi, syi = float(sx[i]), float(sy[i])
        with torch.no_grad():   # fold the input and output scales into the weights: plain SAELens maths
            tc = SAE(architecture=arch, W_enc=(p["W_enc"][i] / sxi).cpu(), b_enc=p["b_enc"][i, 0].cpu(),
                     W_dec=(p["W_dec"][i] * syi).cpu(), b_dec=(p["b_dec"][i, 0] * syi).cpu(),
                     W_skip=(p["W_skip"][i] * (syi / sxi)).cpu() if skip else None,
                     hook=hin[L], hook_out=hout[L], name=name,
                     cfg={"metadata": {"model_name": hm.spec, "hook_name": hin[L], "hook_name_out": hout[L],
                                       "context_size": context_len, "dataset_path": source.spec},
                          "autointerp_training": {"tokens": seen, "steps": steps, "lr": lr, "l1": l1,
                                                  "minibatch": minibatch, "seed": seed,
                                                  "trainer": "relu-l1-adam-one-pass"}})
            z, yh = tc(x_eval[L])
        rep = {"layer": L, "explained_variance": round(1 - _fvu(y_eval[L], yh), 4),
               "l0": round(float((z > 0).sum(-1).float().mean()), 2),
               "dead_frac": round(float((~fired_all[i].cpu()).float().mean()), 4),
               "mse_first": round(float(mse_hist[0, i]), 4), "mse_last": round(float(mse_hist[-10:, i].mean()), 4)}
        tc.cfg["autointerp_training"]["report"] = rep
        out[L] = tc
        per_layer.append(rep)
    ce = mlp_replaced_ce(hm, out, held, fp)
    t_end = time.perf_counter()
    report = {"kind": arch, "layers": layers, "latents": n_latents, "l1": l1, "tokens": seen, "steps": steps,
              "minibatch": minibatch, "one_pass": True, "seconds": round(t_end - t0, 2), "lr": lr,
              "timing": {"forward_s": round(t_fwd, 2), "train_s": round(t_train, 2), "eval_s": round(t_end - te, 2),
                         "torch_threads": torch.get_num_threads()},
              "eval_tokens": int(next(iter(x_eval.values())).shape[0]), "per_layer": per_layer, **ce}
    return out, report
