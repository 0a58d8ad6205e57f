"""Component-level diff of two models of the same architecture (checkpoints, seeds, fine-tunes,
edits): which heads, neurons and layers changed, and which carry a behaviour difference.

weights      per parameter tensor, per head (its output weights W_O^h) and per MLP neuron (its
             output row W_out[n]): relative Frobenius norm ||W_B - W_A|| / ||W_A||, ranked.
activations  on the corpus (the same token batches through both models), per head:
               attn_js   mean Jensen-Shannon divergence (nats, <= ln 2) of the attention rows of
                         every query position but the first
               head_out  relative change of the head's output z_h W_O^h:
                         sqrt(sum ||out_B - out_A||^2 / sum ||out_A||^2) over tokens
                         (a head whose output was zeroed scores 1 although its pattern is unchanged)
             per MLP neuron: Pearson correlation of its activation (blocks.L.mlp.post) in A and B
             over tokens; the least correlated are listed.
dla          on the top differing contexts, at each context's peak tokens: each head's and each MLP
             layer's direct logit attribution to the predicted token (its logit against the mean
             logit, through the final norm with its scale frozen: patching.dla.logit_direction),
             in B minus in A, averaged.
patching     from the better model into the worse on the contexts where it is much better: each
             head's output (as written to the residual: attn.out changed by the head's share,
             exact because the output projection is linear) and each MLP layer's output is set to
             the better model's, one at a time; effect = (m_patched - m_worse) / (m_better - m_worse)
             with m = summed log p of the peak tokens, so 1 = the whole improvement recovered.

Positions: the BOS (position 0) is left out of every activation statistic (its activations are
outliers that would dominate norms and correlations).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..core.hooks import act_name
from ..core.units import Unit
from ..corpus import iter_batches
from ..errors import UsageError
from ..patching.core import Batch
from ..patching.dla import logit_direction
from .blackbox import same_tokenizer


def check_same_architecture(hm_a, hm_b) -> None:
    """UsageError (one line) unless A and B have the same family, sizes, parameters and tokenizer."""
    ia, ib = hm_a.info(), hm_b.info()

    def desc(hm, i):
        return (f"{hm.spec} is {i['family']} {i['n_layers']} layers x d_model {i['d_model']}, {i['n_heads']} heads, "
                f"d_mlp {i['d_mlp']}, vocab {i['vocab_size']}")

    if ia != ib:
        raise UsageError(f"the component level needs the same architecture: {desc(hm_a, ia)}; {desc(hm_b, ib)} "
                         "(use --level blackbox)")
    pa = {n: tuple(p.shape) for n, p in hm_a.model.named_parameters()}
    pb = {n: tuple(p.shape) for n, p in hm_b.model.named_parameters()}
    if pa != pb:
        bad = sorted(set(pa) ^ set(pb)) or [n for n in pa if pa[n] != pb[n]]
        raise UsageError(f"the component level needs the same parameters: {hm_a.spec} and {hm_b.spec} differ at "
                         f"{bad[0]} (use --level blackbox)")
    if not same_tokenizer(hm_a.tokenizer, hm_b.tokenizer):
        raise UsageError(f"the component level needs the same tokenizer: {hm_a.spec} and {hm_b.spec} tokenise "
                         "differently (use --level blackbox)")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    na = float(a.norm())
    d = float((b - a).norm())
    return d / na if na > 0 else (0.0 if d == 0 else float("inf"))


def _ranked(rows: list[dict], key: str = "value", reverse: bool = True) -> list[dict]:
    rows.sort(key=lambda r: (-r[key] if reverse else r[key], r["component"]))
    for i, r in enumerate(rows):
        r["rank"] = i
    return rows


@torch.no_grad()
def weight_diff(hm_a, hm_b, *, top_neurons: int = 50) -> dict[str, list[dict]]:
    """{'weight_tensor': [...], 'weight_head': [...], 'weight_neuron': [...]} rows {component,
    layer, value, rank}, largest relative change first (neurons: the top_neurons largest)."""
    check_same_architecture(hm_a, hm_b)
    pb = dict(hm_b.model.named_parameters())
    tensors = []
    for name, p in hm_a.model.named_parameters():
        tensors.append({"component": name, "layer": None, "value": round(_rel(p, pb[name]), 6),
                        "details": {"shape": list(p.shape)}})
    heads, neurons = [], []
    for L in range(hm_a.n_layers):
        wa, wb = hm_a.W_O(L).float(), hm_b.W_O(L).float()
        for h in range(hm_a.n_heads):
            heads.append({"component": Unit.head(L, h).id, "layer": L, "value": round(_rel(wa[h], wb[h]), 6)})
        oa, ob = hm_a.W_out(L).float(), hm_b.W_out(L).float()        # [d_mlp, d_model]
        na = oa.norm(dim=1)
        d = (ob - oa).norm(dim=1)
        rel = torch.where(na > 0, d / na.clamp_min(1e-30), torch.where(d > 0, torch.inf, 0.0))
        k = min(top_neurons, rel.numel())
        vals, idx = rel.topk(k)
        neurons += [{"component": Unit.neuron(L, int(i)).id, "layer": L, "value": round(float(v), 6)}
                    for v, i in zip(vals, idx) if float(v) > 0]
    return {"weight_tensor": _ranked(tensors), "weight_head": _ranked(heads),
            "weight_neuron": _ranked(neurons)[:top_neurons]}


def _js(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) of distributions on the last axis."""
    m = 0.5 * (pa + pb)
    kl = lambda p: (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)  # noqa: E731
    return 0.5 * (kl(pa) + kl(pb))


@torch.no_grad()
def activation_diff(hm_a, hm_b, source, *, n_tokens: int = 2048, context_len: int = 64, batch_size: int = 8,
                    top_neurons: int = 50, progress: Callable | None = None) -> dict[str, list[dict]]:
    """{'attn_js': [...], 'head_out': [...], 'neuron_corr': [...]} (module doc); neuron rows are the
    top_neurons least correlated, value = the correlation."""
    check_same_architecture(hm_a, hm_b)
    nL, H = hm_a.n_layers, hm_a.n_heads
    names = [act_name(s, L) for L in range(nL) for s in ("attn.pattern", "attn.z", "mlp.post")]
    js = torch.zeros(nL, H, dtype=torch.float64)
    n_q = 0
    out_d = torch.zeros(nL, H, dtype=torch.float64)
    out_a = torch.zeros(nL, H, dtype=torch.float64)
    S = {k: torch.zeros(nL, hm_a.d_mlp, dtype=torch.float64) for k in ("a", "b", "aa", "bb", "ab")}
    n_tok = 0
    WO = [(hm_a.W_O(L).float(), hm_b.W_O(L).float()) for L in range(nL)]
    n_ctx = max(1, n_tokens // context_len)
    bar = progress(total=n_ctx) if progress else None
    for _, ids in iter_batches(hm_a.tokenizer, source, context_len, batch_size, limit=n_ctx):
        ra = hm_a.forward(ids.to(hm_a.device), cache=names, return_logits=False).cache
        rb = hm_b.forward(ids.to(hm_b.device), cache=names, return_logits=False).cache
        b, P = ids.shape
        n_q += b * (P - 1)
        n_tok += b * (P - 1)
        for L in range(nL):
            pa = ra[act_name("attn.pattern", L)][:, :, 1:].float().cpu()
            pb = rb[act_name("attn.pattern", L)][:, :, 1:].float().cpu()
            js[L] += _js(pa, pb).sum(dim=(0, 2)).double()
            za = ra[act_name("attn.z", L)][:, 1:].float().cpu()
            zb = rb[act_name("attn.z", L)][:, 1:].float().cpu()
            oa = torch.einsum("bphe,hed->bphd", za, WO[L][0].cpu())
            ob = torch.einsum("bphe,hed->bphd", zb, WO[L][1].cpu())
            out_d[L] += (ob - oa).pow(2).sum(dim=(0, 1, 3)).double()
            out_a[L] += oa.pow(2).sum(dim=(0, 1, 3)).double()
            xa = ra[act_name("mlp.post", L)][:, 1:].reshape(-1, hm_a.d_mlp).double().cpu()
            xb = rb[act_name("mlp.post", L)][:, 1:].reshape(-1, hm_a.d_mlp).double().cpu()
            S["a"][L] += xa.sum(0)
            S["b"][L] += xb.sum(0)
            S["aa"][L] += (xa * xa).sum(0)
            S["bb"][L] += (xb * xb).sum(0)
            S["ab"][L] += (xa * xb).sum(0)
        if bar:
            bar.update(b)
    if bar:
        bar.close()
    if n_tok == 0:
        raise UsageError("the corpus gave no contexts for the activation diff")
    js_rows, out_rows = [], []
    for L in range(nL):
        for h in range(H):
            name = Unit.head(L, h).id
            js_rows.append({"component": name, "layer": L, "value": round(float(js[L, h] / n_q), 6)})
            rel = float((out_d[L, h] / out_a[L, h]).sqrt()) if out_a[L, h] > 0 else (0.0 if out_d[L, h] == 0 else 1.0)
            out_rows.append({"component": name, "layer": L, "value": round(rel, 6)})
    N = n_tok
    cov = S["ab"] / N - (S["a"] / N) * (S["b"] / N)
    va = (S["aa"] / N - (S["a"] / N) ** 2).clamp_min(0)
    vb = (S["bb"] / N - (S["b"] / N) ** 2).clamp_min(0)
    den = (va * vb).sqrt()
    corr = torch.where(den > 1e-12, cov / den.clamp_min(1e-30), torch.where((va + vb) > 1e-12, 0.0, 1.0))
    flat = corr.flatten()
    k = min(top_neurons, flat.numel())
    vals, idx = (-flat).topk(k)
    neuron_rows = [{"component": Unit.neuron(int(i) // hm_a.d_mlp, int(i) % hm_a.d_mlp).id,
                    "layer": int(i) // hm_a.d_mlp, "value": round(float(-v), 6)} for v, i in zip(vals, idx)]
    return {"attn_js": _ranked(js_rows), "head_out": _ranked(out_rows),
            "neuron_corr": _ranked(neuron_rows, reverse=False),
            "_summary": [{"component": "tokens", "layer": None, "value": n_tok,
                          "details": {"mean_neuron_corr": round(float(corr.mean()), 6)}}]}


# ----------------------------------------------------------------------------- targets on the top contexts


def peak_targets(records: Sequence, n_pos: int = 3) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """(ids [n, P] of the records' contexts, [(row, position, target)]): for each record its n_pos
    strongest tokens, as (the context row, the position that predicts the token, the token's id).
    Records need input_ids (token-level diffs)."""
    recs = [r for r in records if r.input_ids]
    if not recs:
        raise UsageError("the component diff on contexts needs token-level records (the same tokenizer)")
    P = max(len(r.input_ids) for r in recs)
    ids = torch.zeros(len(recs), P, dtype=torch.long)
    out = []
    for i, r in enumerate(recs):
        ids[i, :len(r.input_ids)] = torch.tensor(r.input_ids)
        first = len(r.input_ids) - len(r.acts)
        order = sorted(range(len(r.acts)), key=lambda j: -r.acts[j])[:n_pos]
        for j in order:
            tpos = j + first                      # the predicted token's position
            if tpos >= 1:
                out.append((i, tpos - 1, int(r.input_ids[tpos])))
    return ids, out


def _components(hm) -> list[tuple[str, int, int | None]]:
    return [(Unit.head(L, h).id, L, h) for L in range(hm.n_layers) for h in range(hm.n_heads)] + \
           [(act_name("mlp.out", L), L, None) for L in range(hm.n_layers)]


@torch.no_grad()
def _dla(hm, ids: torch.Tensor, targets: list[tuple[int, int, int]]) -> torch.Tensor:
    """[n_targets, n_components] direct logit attribution of every head and MLP layer (module doc)."""
    nL = hm.n_layers
    last = act_name("resid_post", nL - 1)
    fin = act_name("ln_final.out")
    names = [last, fin] + [act_name("attn.z", L) for L in range(nL)] + [act_name("mlp.out", L) for L in range(nL)]
    run = hm.forward(ids.to(hm.device), cache=names, return_logits=False)
    rows = torch.tensor([t[0] for t in targets], device=hm.device)
    pos = torch.tensor([t[1] for t in targets], device=hm.device)
    tgt = torch.tensor([t[2] for t in targets], device=hm.device)
    R = len(targets)
    W_U = hm.W_U.float()
    u = W_U[:, tgt].T - W_U.mean(1)[None]
    b = Batch(clean=ids[rows.cpu()], corrupt=ids[rows.cpu()], mask=torch.ones_like(ids[rows.cpu()]),
              last=pos, ans=tgt, wrong=tgt)
    g = logit_direction(hm, b, run.cache[last][rows], run.cache[fin][rows], u=u)         # [R, d]
    cols = []
    for L in range(nL):
        z = run.cache[act_name("attn.z", L)][rows, pos].float()                          # [R, H, dh]
        cols.append(torch.einsum("bhe,hed,bd->bh", z, hm.W_O(L).float(), g))
    for L in range(nL):
        cols.append((run.cache[act_name("mlp.out", L)][rows, pos].float() * g).sum(-1, keepdim=True))
    heads = torch.cat(cols[:nL], dim=1)
    mlps = torch.cat(cols[nL:], dim=1)
    return torch.cat([heads, mlps], dim=1).reshape(R, -1).cpu()


def dla_diff(hm_a, hm_b, records: Sequence, *, n_pos: int = 3) -> list[dict]:
    """Per head and MLP layer: mean over the records' peak tokens of DLA_B - DLA_A (module doc),
    ranked by size; details hold both means."""
    check_same_architecture(hm_a, hm_b)
    ids, targets = peak_targets(records, n_pos)
    da, db = _dla(hm_a, ids, targets), _dla(hm_b, ids, targets)
    rows = []
    for j, (name, L, _) in enumerate(_components(hm_a)):
        a, b = float(da[:, j].mean()), float(db[:, j].mean())
        rows.append({"component": name, "layer": L, "value": round(b - a, 6),
                     "details": {"dla_a": round(a, 6), "dla_b": round(b, 6), "n": len(targets)}})
    rows.sort(key=lambda r: (-abs(r["value"]), r["component"]))
    for i, r in enumerate(rows):
        r["rank"] = i
    return rows


@torch.no_grad()
def _target_logps(hm, ids: torch.Tensor, targets, hooks=None, reps: int = 1) -> torch.Tensor:
    """[reps, n_targets] log p of the targets, the batch repeated reps times."""
    fin = act_name("ln_final.out")
    big = ids.repeat(reps, 1).to(hm.device)
    run = hm.forward(big, cache=[fin], hooks=hooks or {}, return_logits=False)
    n = ids.shape[0]
    rows = torch.tensor([t[0] + k * n for k in range(reps) for t in targets], device=hm.device)
    pos = torch.tensor([t[1] for t in targets] * reps, device=hm.device)
    tgt = torch.tensor([t[2] for t in targets] * reps, device=hm.device)
    logits = hm.unembed(run.cache[fin][rows, pos]).float()
    lp = torch.log_softmax(logits, -1).gather(-1, tgt[:, None])[:, 0]
    return lp.view(reps, len(targets)).cpu()


@torch.no_grad()
def patch_diff(better, worse, records: Sequence, *, n_pos: int = 3, max_batch: int = 128,
               only: Sequence[str] | None = None, progress: Callable | None = None) -> tuple[list[dict], dict]:
    """Patch each head's output and each MLP layer's output from `better` into `worse` on the
    records' contexts (module doc). only: the component names to patch (default: every head and
    MLP layer; one forward of the contexts per component, batched). Returns (rows ranked by
    effect, {m_better, m_worse, n_targets, ...})."""
    check_same_architecture(better, worse)
    ids, targets = peak_targets(records, n_pos)
    nL, n = worse.n_layers, ids.shape[0]
    names = [act_name(s, L) for L in range(nL) for s in ("attn.z", "mlp.out")]
    cb = better.forward(ids.to(better.device), cache=names, return_logits=False).cache
    cw = worse.forward(ids.to(worse.device), cache=names, return_logits=False).cache
    m_b = float(_target_logps(better, ids, targets).sum())
    m_w = float(_target_logps(worse, ids, targets).sum())
    gap = m_b - m_w
    comps = _components(worse)
    if only is not None:
        keep = set(only)
        comps = [c for c in comps if c[0] in keep]

    def delta(L: int, h: int | None) -> torch.Tensor:                # [n, P, d]: better's share minus worse's
        if h is None:
            return (cb[act_name("mlp.out", L)].to(worse.device).float() - cw[act_name("mlp.out", L)].float())
        zb = cb[act_name("attn.z", L)][:, :, h].to(worse.device).float()
        zw = cw[act_name("attn.z", L)][:, :, h].float()
        return zb @ better.W_O(L)[h].float().to(worse.device) - zw @ worse.W_O(L)[h].float()

    k = max(1, max_batch // n)
    effects: list[float] = []
    bar = progress(total=len(comps)) if progress else None
    for s in range(0, len(comps), k):
        chunk = comps[s:s + k]
        kk = len(chunk)
        adds: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for j, (_, L, h) in enumerate(chunk):
            site = act_name("mlp.out" if h is None else "attn.out", L)
            adds.setdefault(site, []).append((j, delta(L, h)))

        def make(items):
            def fn(v):
                out = v.view(kk, n, *v.shape[1:]).clone()
                for j, d in items:
                    out[j] = out[j] + d.to(out.dtype)
                return out.view(v.shape)
            return fn

        hooks = {site: make(items) for site, items in adds.items()}
        lp = _target_logps(worse, ids, targets, hooks=hooks, reps=kk)
        for j in range(kk):
            m = float(lp[j].sum())
            effects.append((m - m_w) / gap if abs(gap) > 1e-6 else m - m_w)
        if bar:
            bar.update(kk)
    if bar:
        bar.close()
    rows = [{"component": name, "layer": L, "value": round(e, 6)} for (name, L, _), e in zip(comps, effects)]
    rows.sort(key=lambda r: (-r["value"], r["component"]))
    for i, r in enumerate(rows):
        r["rank"] = i
    return rows, {"m_better": round(m_b, 4), "m_worse": round(m_w, 4), "n_targets": len(targets),
                  "n_contexts": n, "normalised": abs(gap) > 1e-6, "n_components": len(comps),
                  "of_components": len(_components(worse))}
