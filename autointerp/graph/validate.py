"""Interventions that check a graph (`graph --validate K`).

Each of the K most influential latent nodes (L, p, i) is ablated (set to 0) in the REAL model
through the transcoder splice with its error term: layer L's MLP output becomes
reconstruction(latents with (p, i) zeroed) + (real output - reconstruction), i.e. the real output
less the latent's decoder write; every other layer, attention pattern and norm runs for real. The
observed change of the target logit is compared with the graph's prediction: the latent's direct
effect plus its indirect effect through the pruned graph, propagated through the downstream
latents (each latent's activation moves by the change of its input, clamped at 0 as ReLU does;
edges are linear in their source's activation). Reported: Pearson correlation and mean absolute
error over the K latents (correlation null, with a reason, for fewer than 3 latents or no spread).
"""

from __future__ import annotations

import math

import torch


def predicted_effects(g, sources: list[int]) -> list[float]:
    """The graph's predicted change of the first target logit when each feature node in `sources`
    is ablated: direct (full adjacency) + indirect through the pruned graph's kept edges."""
    A = g.adjacency.double()
    F = g.n_features
    em = g.pruning["edge_mask"]
    W = torch.where(em, A, torch.zeros_like(A))
    acts = torch.tensor([f[3] for f in g.features], dtype=torch.float64)
    per_unit = W[:, :F] / acts.clamp_min(1e-12)           # effect on each target per unit of source activation
    full_unit = A[:, :F] / acts.clamp_min(1e-12)
    logit_row = g.n_nodes - len(g.logits)
    out = []
    for j in sources:
        src = torch.zeros(F, dtype=torch.float64)
        src[j] = -acts[j]
        d = src.clone()
        for _ in range(g.n_layers + 1):                   # a DAG in layers: settles in n_layers steps
            pre = per_unit[:F] @ d + full_unit[:F, j] * src[j] - per_unit[:F, j] * src[j]
            nd = torch.maximum(pre, -acts)                # ReLU: a latent cannot fall below 0
            nd[j] = src[j]
            if torch.allclose(nd, d):
                break
            d = nd
        direct = float(full_unit[logit_row, j] * src[j])
        others = d.clone()
        others[j] = 0
        out.append(direct + float(per_unit[logit_row] @ others))
    return out


def observed_effects(hm, tset, g, sources: list[int]) -> list[float]:
    """The real model's change of the first target logit when each latent node is ablated through
    the transcoder splice (models/ HookedModel.attach_sae: recons(edited) + error)."""
    ids = torch.tensor([g.token_ids], device=hm.device)
    t = g.direct["target_id"]
    clean = float(hm.forward(ids).logits[0, -1, t])
    out = []
    for j in sources:
        L, p, i, _ = g.features[j]
        tc = tset.by_layer[L]
        prev = hm.saes.get(tc.hook)
        hm.attach_sae(tc)
        try:
            def zero(z, p=p, i=i):
                z = z.clone()
                z[:, p, i] = 0
                return z

            out.append(float(hm.forward(ids, hooks={tc.latents_hook: zero}).logits[0, -1, t]) - clean)
        finally:
            hm.detach_sae(tc)
            if prev is not None:
                hm.attach_sae(prev)
    return out


def validate_graph(hm, tset, g, k: int) -> dict:
    """Ablate the k most influential latents; the graph's predictions vs the real model's changes."""
    index = {(f[0], f[1], f[2]): j for j, f in enumerate(g.features)}
    top = [r for r in g.top_latents(k)]
    sources = [index[(r["layer"], r["pos"], r["latent"])] for r in top]
    pred = predicted_effects(g, sources)
    obs = observed_effects(hm, tset, g, sources)
    rows = [{"unit": g.unit(r["layer"], r["latent"]), "layer": r["layer"], "pos": r["pos"], "latent": r["latent"],
             "influence": r.get("influence"), "kept": r.get("kept"), "predicted": p, "observed": o}
            for r, p, o in zip(top, pred, obs)]
    n = len(rows)
    mae = sum(abs(p - o) for p, o in zip(pred, obs)) / n if n else None
    corr, reason = None, None
    if n < 3:
        reason = f"{n} latents: a correlation needs at least 3"
    else:
        mp, mo = sum(pred) / n, sum(obs) / n
        sp = math.sqrt(sum((p - mp) ** 2 for p in pred))
        so = math.sqrt(sum((o - mo) ** 2 for o in obs))
        if sp < 1e-12 or so < 1e-12:
            reason = "no spread in the predicted or observed changes"
        else:
            corr = sum((p - mp) * (o - mo) for p, o in zip(pred, obs)) / (sp * so)
    mean_abs_obs = sum(abs(o) for o in obs) / n if n else None
    return {"k": n, "target": g.direct["target"], "intervention": "ablate (set to 0) through the transcoder splice",
            "correlation": corr, **({"correlation_reason": reason} if reason else {}), "mae": mae,
            "mean_abs_observed": mean_abs_obs, "latents": rows}
