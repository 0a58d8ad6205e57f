"""Attribution graphs of one prompt (Ameisen et al. 2025, "Circuit Tracing", sections 2-3).

In the local replacement model (models/replacement.py: attention patterns and norm scales
frozen, MLPs replaced by transcoders + per-position error terms) every node's input is linear in
the leaves. The direct effect of a source on a target is the source's value times the gradient of
the target through the frozen model, with the MLP paths cut (stop-gradients: each layer's MLP
write is a leaf). One forward, then backward passes batched over targets (vmap over the rows of
an identity, `is_grads_batched`):

    token p -> t        emb_p . g_t(resid_pre 0, p)
    latent (L,p,i) -> t a_{L,p,i} * W_dec[i] . g_t(mlp.out L, p)
    error (L,p) -> t    err_{L,p} . g_t(mlp.out L, p)

Targets are the output logits (at the last position) and the latents' pre-activations. Since the
frozen model is affine, logit = (its value at zero leaves: the bias terms) + sum of all direct
contributions, exactly (the completeness identity, checked on every graph).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.keys import content_hash
from ..core.units import Unit
from ..errors import UsageError
from ..models.replacement import LocalReplacement
from .prune import compute_influence, graph_scores, logit_weights, normalize_matrix, prune


@dataclass
class AttributionGraph:
    prompt: str
    model: str
    transcoder_set: dict                     # name, id, path, layers
    tokens: list[str]
    token_ids: list[int]
    n_layers: int
    features: list[tuple[int, int, int, float]]         # selected (layer, pos, latent, activation)
    logits: list[dict]                       # token, token_id, prob, logit (the targets, in order)
    adjacency: torch.Tensor                  # [n, n] A[target, source], circuit-tracer's node order
    direct: dict                             # the target's raw logit, bias, every direct contribution
    scores: dict = field(default_factory=dict)
    pruning: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    n_active: int = 0
    target_given: bool = False
    max_feature_nodes: int = 0

    # ---- node layout: [features, errors (layer-major), tokens, logits]
    @property
    def P(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.P

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.P + len(self.logits)

    def node(self, j: int) -> dict:
        """The node at index j, as a record (kind, layer, pos, latent, ...)."""
        F, E, P = self.n_features, self.n_errors, self.P
        if j < F:
            L, p, i, a = self.features[j]
            return {"index": j, "kind": "latent", "layer": L, "pos": p, "latent": i, "activation": a,
                    "token": self.tokens[p]}
        if j < F + E:
            L, p = divmod(j - F, P)
            return {"index": j, "kind": "error", "layer": L, "pos": p, "token": self.tokens[p]}
        if j < F + E + P:
            p = j - F - E
            return {"index": j, "kind": "embedding", "layer": None, "pos": p, "token": self.tokens[p]}
        k = j - F - E - P
        return {"index": j, "kind": "logit", "layer": self.n_layers, "pos": P - 1, **self.logits[k]}

    def node_records(self) -> list[dict]:
        inf = self.pruning.get("node_influence")
        keep = self.pruning.get("node_mask")
        out = []
        for j in range(self.n_nodes):
            r = self.node(j)
            if inf is not None:
                r["influence"] = float(inf[j])
                r["kept"] = bool(keep[j])
            out.append(r)
        return out

    def edge_records(self, pruned: bool = True) -> list[dict]:
        """(source, target, weight) of the kept edges (all nonzero ones with pruned=False)."""
        A = self.adjacency
        mask = self.pruning["edge_mask"] if pruned and "edge_mask" in self.pruning else A != 0
        t, s = torch.nonzero(mask, as_tuple=True)
        return [{"source": int(a), "target": int(b), "weight": float(A[b, a])} for a, b in zip(s.tolist(), t.tolist())]

    def top_latents(self, n: int) -> list[dict]:
        """The n latent nodes of largest influence on the logits (pruned-in first)."""
        recs = [r for r in self.node_records() if r["kind"] == "latent"]
        recs.sort(key=lambda r: (not r.get("kept", True), -r.get("influence", 0.0)))
        return recs[:n]

    def unit(self, layer: int, latent: int) -> str:
        return str(Unit.latent(layer, latent, self.transcoder_set["name"]))

    def settings(self) -> dict:
        return {"node_share": self.pruning.get("node_share"), "edge_share": self.pruning.get("edge_share"),
                "target": self.direct["target"] if self.target_given else None, "max_feature_nodes": self.max_feature_nodes}

    def key(self) -> str:
        return content_hash({"model": self.model, "prompt": self.prompt, "set": self.transcoder_set["id"],
                             **self.settings()})

    def store_records(self) -> tuple[str, dict, list[dict], list[dict], dict]:
        """(key, graphs row, graph_nodes rows, kept edges, data) for Store.put_graph."""
        nodes = self.node_records()
        for r in nodes:
            r["idx"] = r.pop("index")
            if r["kind"] == "latent":
                r["unit"] = self.unit(r["layer"], r["latent"])
            if r["kind"] == "logit":
                r["activation"] = r["logit"]
        edges = self.edge_records(pruned=True)
        d = self.direct
        row = {"model": self.model, "prompt": self.prompt, "transcoder_set": self.transcoder_set["name"],
               "transcoder_set_id": self.transcoder_set["id"], "target": d["target"], "raw_logit": d["raw_logit"],
               "bias_terms": d["bias_terms"], "completeness_error": d["relative_error"],
               "replacement_score": self.scores.get("replacement_score"),
               "completeness_score": self.scores.get("completeness_score"),
               "node_share": self.pruning["node_share"], "edge_share": self.pruning["edge_share"],
               "n_nodes": sum(1 for r in nodes if r.get("kept")), "n_edges": len(edges)}
        data = {k: v for k, v in self.to_json().items() if k not in ("nodes", "edges")}
        data["settings"] = self.settings()
        return self.key(), row, nodes, edges, data

    def to_json(self, full: bool = True) -> dict[str, Any]:
        nodes = self.node_records()
        return {"prompt": self.prompt, "model": self.model, "transcoder_set": self.transcoder_set,
                "tokens": self.tokens, "token_ids": self.token_ids, "n_layers": self.n_layers, "logits": self.logits, "scores": self.scores,
                "n_active_latents": self.n_active, "n_selected_latents": self.n_features,
                "n_nodes": self.n_nodes, "n_nodes_kept": sum(1 for r in nodes if r.get("kept")),
                "n_edges_nonzero": int((self.adjacency != 0).sum()),
                "pruning": {k: v for k, v in self.pruning.items() if not isinstance(v, torch.Tensor)},
                "nodes": [r for r in nodes if r.get("kept")] if not full else nodes,
                "edges": self.edge_records(pruned=True), "completeness": self.direct, "timing": self.timing}


def _targets(hm, rep: LocalReplacement, target: str | None, max_logits: int, logit_prob: float) -> list[dict]:
    last = rep.logits[-1]
    probs = torch.softmax(last.double(), -1)
    if target is not None:
        tid = hm.token_id(target)
        if tid is None:
            n = len(hm.tokenizer.encode(target, add_special_tokens=False))
            raise UsageError(f"--target {target!r} is not one token (it tokenizes to {n} tokens); give a single token")
        ids = [tid]
    else:
        order = torch.argsort(probs, descending=True)
        cum, ids = 0.0, []
        for t in order[:max_logits].tolist():
            ids.append(int(t))
            cum += float(probs[t])
            if cum >= logit_prob:
                break
    return [{"token": hm.tokenizer.decode([t]), "token_id": t, "prob": float(probs[t]), "logit": float(last[t])}
            for t in ids]


def build_graph(hm, tset, prompt: str, *, target: str | None = None, max_logits: int = 10, logit_prob: float = 0.95,
                max_feature_nodes: int = 2048, batch_size: int = 64, node_share: float = 0.8, edge_share: float = 0.98,
                progress: bool = False, demean_logits: bool = False) -> AttributionGraph:
    """The pruned attribution graph of `prompt` through transcoder set `tset` (models/transcoders.py).

    demean_logits: attribute each target's logit minus the mean logit over the vocabulary (what
    circuit-tracer attributes: its logit vectors are W_U columns less their mean,
    circuit_tracer/attribution/targets.py `_compute_logit_vecs`) instead of the raw logit. The
    completeness identity then holds for the de-meaned logit."""
    t0 = time.perf_counter()
    tset.check_model(hm)
    ids = hm.tokenize(prompt)[0][0]
    P = int(ids.shape[0])
    ctx = hm.max_context
    if P < 1:
        raise UsageError("the prompt is empty")
    if ctx is not None and P > ctx:
        raise UsageError(f"the prompt is {P} tokens, longer than {hm.spec}'s context of {ctx} tokens")
    rep = LocalReplacement(hm, ids, tset.by_layer)
    logits = _targets(hm, rep, target, max_logits, logit_prob)
    tids = [r["token_id"] for r in logits]
    T, L = len(tids), hm.n_layers
    # every active latent (layer, pos, latent, activation), layer-major
    active: list[tuple[int, int, int, float]] = []
    per_layer: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}
    for layer in sorted(rep.latents):
        z = rep.latents[layer]
        pos, lat = torch.nonzero(z > 0, as_tuple=True)
        per_layer[layer] = (pos, lat, z[pos, lat], len(active))
        active += [(layer, int(p), int(i), float(z[p, i])) for p, i in zip(pos.tolist(), lat.tolist())]
    n_act = len(active)
    # one forward of the frozen model with every leaf live
    emb = rep.emb[None].clone().requires_grad_(True)
    leaves = {layer: rep.variable_part(layer)[None].clone().requires_grad_(True) for layer in range(L)}
    live: dict[int, torch.Tensor] = {}
    out = rep.forward(emb, leaves, grad=True, keep_mlp_in=live, token_ids=tids)    # [1, P, T + 1]: + the mean
    y_logits = out[0, -1, :T] - out[0, -1, T] if demean_logits else out[0, -1, :T]
    pre = []
    for layer, (pos, lat, _, _) in per_layer.items():
        tc = tset.by_layer[layer]
        pre.append((live[layer][0, pos].float() * tc.W_enc[:, lat].T).sum(-1) + tc.b_enc[lat])
    y = torch.cat([y_logits] + pre) if pre else y_logits
    inputs = [emb] + [leaves[layer] for layer in range(L)]
    t_fwd = time.perf_counter() - t0

    def rows(which: list[int]) -> torch.Tensor:
        """Direct effects [len(which), n_act + L*P + P] into rows `which` of y (sources: all active
        latents, errors layer-major, tokens)."""
        res = []
        for a in range(0, len(which), batch_size):
            chunk = which[a:a + batch_size]
            E = torch.zeros(len(chunk), y.shape[0], dtype=y.dtype, device=y.device)
            E[torch.arange(len(chunk)), torch.tensor(chunk)] = 1.0
            try:
                gs = torch.autograd.grad(y, inputs, grad_outputs=E, is_grads_batched=True, retain_graph=True,
                                         allow_unused=True)
            except RuntimeError:        # an op without a batching rule: one backward per row
                per = [torch.autograd.grad(y, inputs, grad_outputs=E[k], retain_graph=True, allow_unused=True)
                       for k in range(len(chunk))]
                gs = [None if per[0][m] is None else torch.stack([p[m] for p in per]) for m in range(len(inputs))]
            B = len(chunk)
            gs = [torch.zeros(B, 1, P, hm.d_model) if g is None else g.float() for g in gs]
            g_emb, g_mlp = gs[0][:, 0], [g[:, 0] for g in gs[1:]]
            r = torch.zeros(B, n_act + L * P + P)
            for layer, (pos, lat, act, off) in per_layer.items():
                W = tset.by_layer[layer].W_dec[lat]                              # [n_l, d]
                G = g_mlp[layer] @ W.T                                           # [B, P, n_l]
                r[:, off:off + len(lat)] = G[:, pos, torch.arange(len(lat))] * act
            for layer in range(L):
                r[:, n_act + layer * P:n_act + (layer + 1) * P] = (g_mlp[layer] * rep.error[layer]).sum(-1)
            r[:, n_act + L * P:] = (g_emb * rep.emb).sum(-1)
            res.append(r)
            if progress:
                print(f"\rgraph: {a + len(chunk)}/{len(which)} rows", end="", file=sys.stderr)
        if progress:
            print(file=sys.stderr)
        return torch.cat(res) if res else torch.zeros(0, n_act + L * P + P)

    # 1. the logit rows: every node's direct effect on each target logit
    R_logit = rows(list(range(T)))
    # 2. latent rows, visited in order of their influence estimated from the rows so far (as circuit-tracer)
    visited: list[int] = []
    R_feat = torch.zeros(0, R_logit.shape[1])
    w_logit = torch.tensor([r["prob"] for r in logits], dtype=torch.float64)
    if target is not None:
        w_logit = torch.ones(1, dtype=torch.float64)
    budget = min(max_feature_nodes, n_act)
    while len(visited) < budget:
        rows_all = torch.cat([R_feat, R_logit]).double()
        An = normalize_matrix(rows_all)
        # influence of each source: w over the rows, propagated through the visited latents' rows
        prod = torch.cat([torch.zeros(len(visited), dtype=torch.float64), w_logit])
        inf = torch.zeros(rows_all.shape[1], dtype=torch.float64)
        for _ in range(L + 2):
            nxt = prod @ An
            inf += nxt
            prod = torch.cat([nxt[visited] if visited else torch.zeros(0, dtype=torch.float64),
                              torch.zeros(T, dtype=torch.float64)])
            if not bool(prod.any()):
                break
        cand = inf[:n_act].clone()
        if visited:
            cand[visited] = -1
        k = min(batch_size, budget - len(visited))
        pick = [int(j) for j in torch.topk(cand, k).indices.tolist() if cand[j] >= 0]
        if not pick:
            break
        R_feat = torch.cat([R_feat, rows([T + j for j in pick])])
        visited += pick
    t_rows = time.perf_counter() - t0 - t_fwd
    # 3. the square adjacency over [selected latents, errors, tokens, logits] (circuit-tracer's layout)
    sel = sorted(visited, key=lambda j: active[j][:3])
    order = {j: r for r, j in enumerate(visited)}
    F = len(sel)
    cols = torch.tensor(sel + list(range(n_act, n_act + L * P + P)), dtype=torch.long)
    n = F + L * P + P + T
    A = torch.zeros(n, n)
    if F:
        A[:F, :F + L * P + P] = R_feat[[order[j] for j in sel]][:, cols]
    A[n - T:, :F + L * P + P] = R_logit[:, cols]
    # the completeness identity for the first target: raw logit = bias terms + every direct contribution
    with torch.no_grad():
        zero = rep.forward(torch.zeros_like(rep.emb)[None], {layer: torch.zeros_like(rep.emb)[None] for layer in range(L)},
                           grad=False)
    t0id = tids[0]
    def _logit(v: torch.Tensor) -> float:      # v: [V] logits at the last position
        return float(v[t0id] - v.mean()) if demean_logits else float(v[t0id])

    bias = _logit(zero[0, -1])
    contrib = R_logit[0]
    raw = _logit(rep.logits[-1])
    total = bias + float(contrib.double().sum())
    replaced = float(y_logits[0].detach())
    direct = {"target": logits[0]["token"], "target_id": t0id, "logit": "demeaned" if demean_logits else "raw",
              "raw_logit": raw, "bias_terms": bias,
              "sum_of_contributions": float(contrib.double().sum()), "bias_plus_contributions": total,
              "relative_error": abs(total - raw) / max(abs(raw), 1e-12),
              "replacement_forward_logit": replaced,
              "contributions": ([{"kind": "latent", "layer": a[0], "pos": a[1], "latent": a[2], "activation": a[3],
                                  "contribution": float(contrib[j])} for j, a in enumerate(active)]
                                + [{"kind": "error", "layer": j // P, "pos": j % P, "contribution": float(contrib[n_act + j])}
                                   for j in range(L * P)]
                                + [{"kind": "embedding", "pos": p, "contribution": float(contrib[n_act + L * P + p])}
                                   for p in range(P)])}
    g = AttributionGraph(prompt=prompt, model=hm.spec,
                         transcoder_set={"name": tset.name, "id": tset.id, "path": tset.path, "layers": tset.layers},
                         tokens=[hm.tokenizer.decode([t]) for t in ids.tolist()], token_ids=ids.tolist(), n_layers=L,
                         features=[active[j] for j in sel], logits=logits, adjacency=A, direct=direct, n_active=n_act,
                         target_given=target is not None, max_feature_nodes=max_feature_nodes)
    probs = w_logit.float()
    g.scores = graph_scores(A, probs, F, L * P, P)
    g.pruning = {**prune(A, probs, F, P, node_share, edge_share), "node_share": node_share, "edge_share": edge_share}
    g.timing = {"forward_s": round(t_fwd, 3), "rows_s": round(t_rows, 3), "rows": T + len(visited),
                "total_s": round(time.perf_counter() - t0, 3)}
    return g
