"""Influence, pruning and the graph scores, as circuit-tracer defines them.

Definitions follow safety-research/circuit-tracer, circuit_tracer/graph.py (normalize_matrix,
compute_influence, find_threshold, prune_graph, compute_graph_scores), which implements Ameisen
et al. 2025, "Circuit Tracing: Revealing Computational Graphs in Language Models", section
"Graph pruning" and appendix "Graph scoring". Nodes are ordered [features, errors (layer-major,
then position), tokens, logits]; A[target, source] is the direct effect of source on target.

    normalised        Ā = |A| / row sums of |A|           (each row: shares of a node's inputs)
    influence         w @ (Ā + Ā² + ...)                   w = the logits' probabilities (0 elsewhere)
    replacement score  I_tokens / (I_tokens + I_errors)    share of token->logit influence not via errors
    completeness score sum_n (1 - error share of n's inputs) (I_n + w_n) / sum_n (I_n + w_n)
"""

from __future__ import annotations

import torch


def normalize_matrix(A: torch.Tensor) -> torch.Tensor:
    a = A.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-10)


def compute_influence(An: torch.Tensor, w: torch.Tensor, max_iter: int = 1000) -> torch.Tensor:
    """w @ (An + An^2 + ...): the graph is a DAG, so the series ends."""
    cur = w @ An
    total = cur.clone()
    for _ in range(max_iter):
        if not bool(cur.any()):
            return total
        cur = cur @ An
        total += cur
    raise RuntimeError("influence did not converge (the adjacency matrix has a cycle)")


def find_threshold(scores: torch.Tensor, share: float) -> torch.Tensor:
    """The score at which the largest scores first reach `share` of the total."""
    s = torch.sort(scores.flatten(), descending=True).values
    tot = s.sum()
    if float(tot) <= 0:
        return s[0]
    cum = torch.cumsum(s, 0) / tot
    i = min(int(torch.searchsorted(cum, torch.tensor(share, dtype=cum.dtype))), len(s) - 1)
    return s[i]


def logit_weights(n: int, probs: torch.Tensor) -> torch.Tensor:
    w = torch.zeros(n, dtype=torch.float64)
    w[n - len(probs):] = probs.double()
    return w


def prune(A: torch.Tensor, probs: torch.Tensor, n_features: int, n_tokens: int, node_share: float = 0.8,
          edge_share: float = 0.98) -> dict:
    """circuit-tracer's prune_graph: keep the nodes carrying `node_share` of the influence on the
    logits (tokens and logits always), then the edges carrying `edge_share` of the edge influence,
    then drop feature/error nodes left without outgoing (and features without incoming) edges."""
    A = A.double()
    n_logits = len(probs)
    w = logit_weights(A.shape[0], probs)
    node_inf = compute_influence(normalize_matrix(A), w)
    node_mask = node_inf >= find_threshold(node_inf, node_share)
    node_mask[-n_logits - n_tokens:] = True
    tot_inf = float(node_inf.sum())
    threshold_share = float(node_inf[node_mask].sum()) / tot_inf if tot_inf > 0 else None
    pruned = A.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    An = normalize_matrix(pruned)
    edge_scores = An * (compute_influence(An, w) + w)[:, None]
    edge_mask = (edge_scores >= find_threshold(edge_scores, edge_share)) & (pruned != 0)
    old = None
    while old is None or not torch.equal(old, node_mask):
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[: -n_logits - n_tokens] &= edge_mask[:, : -n_logits - n_tokens].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
    kept_share = float(node_inf[node_mask].sum()) / tot_inf if tot_inf > 0 else None
    tot_edge = float(edge_scores.sum())
    kept_edge_share = float(edge_scores[edge_mask].sum()) / tot_edge if tot_edge > 0 else None
    return {"node_mask": node_mask, "edge_mask": edge_mask, "node_influence": node_inf, "edge_scores": edge_scores,
            "kept_node_influence_share": kept_share,
            "node_influence_share_at_threshold": threshold_share, "kept_edge_influence_share": kept_edge_share}


def graph_scores(A: torch.Tensor, probs: torch.Tensor, n_features: int, n_errors: int, n_tokens: int) -> dict:
    """circuit-tracer's compute_graph_scores (replacement and completeness; see the module docstring)."""
    A = A.double()
    w = logit_weights(A.shape[0], probs)
    An = normalize_matrix(A)
    inf = compute_influence(An, w)
    e0, e1 = n_features, n_features + n_errors
    tok, err = inf[e1:e1 + n_tokens].sum(), inf[e0:e1].sum()
    replacement = float(tok / (tok + err)) if float(tok + err) > 0 else None
    non_error = 1 - An[:, e0:e1].sum(-1)
    out = inf + w
    completeness = float((non_error * out).sum() / out.sum())
    return {"replacement_score": replacement, "completeness_score": completeness}
