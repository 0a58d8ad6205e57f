"""Circuits of edges: pruning by score to a faithfulness target, an ACDC-style greedy pass, the
faithfulness-vs-edges curve measured by running each circuit, storing and exporting.

Faithfulness of a circuit C (a set of edges) = (LD(C) - LD(empty)) / (LD_clean - LD(empty)),
where LD(C) is the clean run with every edge outside C ablated (edges.circuit_logit_diff):
1 = the circuit alone recovers the clean behaviour, 0 = none of it. Ablation (edges.py's module
doc): `corrupt` (default) patches an edge to its sender's output on the corrupt prompt, so
LD(empty) = LD_corrupt; `mean` patches it to its sender's mean output over the dataset's clean
and corrupt prompts (per position, end-aligned), so LD(empty) = the mean-ablated model's LD
(measured: every edge ablated), reported as `baseline_logit_diff`. Under mean ablation the edges
are also scored against the mean (EAP's delta = mean - clean output).

    prune_to_target   edges ranked by |score| (EAP, EAP-IG or exact); the curve at a grid of sizes
                      k; the smallest k on the grid whose circuit reaches `target` (then refined
                      by bisection inside the last grid step)
    acdc              Conmy et al. 2023, greedy and exact: receivers from the logits backwards,
                      each edge into them patched for good when that costs < tau of faithfulness.
                      One circuit run per edge: for small graphs, or a pre-pruned candidate set
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..core.hooks import act_name
from ..core.keys import content_hash
from ..core.stats import gap_divisor
from ..errors import UsageError
from ..tasks.api import dataset_hash
from ..tasks.items import Dataset, PairItem
from .edges import (EdgeGraph, EdgeScores, check_ablation, prepare_data, circuit_logit_diff, eap_scores,
                    exact_edge_scores, sender_means, spearman)

SEARCH_METHODS = ("eap", "eap-ig", "acdc")
VERSION = "circuit-v1"


@dataclass
class Circuit:
    graph: EdgeGraph
    method: str
    edges: list[int]                              # in the circuit, most important first
    faithfulness: float | None
    target: float
    clean_logit_diff: float
    corrupt_logit_diff: float
    n_items: int
    scores: EdgeScores | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)      # (n edges, faithfulness), measured
    settings: dict = field(default_factory=dict)
    circuit_id: int | None = None
    reused: bool = False
    ablation: str = "corrupt"                     # corrupt | mean: what edges outside the circuit are patched to

    @property
    def baseline_logit_diff(self) -> float:
        """LD(empty): the 0 of faithfulness (the corrupt LD, or the mean-ablated model's)."""
        return self.settings.get("baseline_logit_diff", self.corrupt_logit_diff)

    def edge_names(self) -> list[str]:
        return [self.graph.edge_name(e) for e in self.edges]

    def nodes(self) -> list[str]:
        """Nodes the circuit touches (senders and receivers' nodes), in forward order."""
        seen: dict[str, None] = {}
        for e in sorted(self.edges, key=lambda e: (self.graph.edges[e][1], self.graph.edges[e][0])):
            s, r = self.graph.edges[e]
            seen.setdefault(self.graph.senders[s].name, None)
            seen.setdefault(self.graph.receivers[r].name.split(":")[0], None)
        return list(seen)

    def to_json(self, all_scores: bool = False) -> dict:
        sc = self.scores.scores if self.scores is not None else None
        out = {"method": self.method, "ablation": self.ablation, "target": self.target,
               "faithfulness": self.faithfulness, "baseline_logit_diff": self.baseline_logit_diff,
               "n_edges": len(self.edges), "n_edges_total": self.graph.n_edges,
               "clean_logit_diff": self.clean_logit_diff, "corrupt_logit_diff": self.corrupt_logit_diff,
               "n_items": self.n_items, "circuit_id": self.circuit_id, "reused": self.reused,
               "curve": [{"n_edges": k, "faithfulness": f} for k, f in self.curve], "nodes": self.nodes(),
               "edges": [{"edge": self.graph.edge_name(e), "score": None if sc is None else _f(sc[e])}
                         for e in self.edges], "settings": self.settings}
        if all_scores and sc is not None:
            out["scores"] = {n: _f(v) for n, v in zip(self.graph.names(), sc)}
        return out


def _f(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def check_target(target: float) -> float:
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= 1:
        raise UsageError(f"--target {target!r} out of range: use a fraction in (0, 1], e.g. 0.8")
    return float(target)


def ablated_logit_diff(hm, data, graph: EdgeGraph, means: torch.Tensor) -> float:
    """LD(empty) under mean ablation: the clean run with every edge mean-ablated."""
    return circuit_logit_diff(hm, data, torch.ones(graph.n_edges, dtype=torch.bool), graph, means=means)


def faithfulness_of(hm, data, graph: EdgeGraph, keep: Sequence[int], clean: float, corrupt: float, *,
                    means: torch.Tensor | None = None, baseline: float | None = None) -> float:
    """Faithfulness of the circuit `keep` (edge indices), measured by running it: the other edges
    patched to their corrupt values, or given `means` (edges.sender_means of `data`) mean-ablated
    and normalised by `baseline` = LD(empty) under mean ablation (measured if not given)."""
    patched = torch.ones(graph.n_edges, dtype=torch.bool)
    patched[list(keep)] = False
    ld = circuit_logit_diff(hm, data, patched, graph, means=means)
    if means is not None:
        corrupt = ablated_logit_diff(hm, data, graph, means) if baseline is None else baseline
    gap, _ = gap_divisor(clean, corrupt)
    return (ld - corrupt) / gap


def size_grid(n: int, points: int = 12) -> list[int]:
    """Circuit sizes to measure: 0, then geometric steps up to all n edges."""
    if n <= points:
        return list(range(n + 1))
    g = np.unique(np.round(np.geomspace(1, n, points - 1)).astype(int))
    return [0, *[int(k) for k in g]]


def prune_to_target(hm, data, scores: EdgeScores, target: float = 0.8, *, points: int = 12,
                    progress: Callable | None = None, rel_tol: float = 0.0, means: torch.Tensor | None = None,
                    baseline: float | None = None) -> Circuit:
    """The smallest top-k circuit reaching `target`: the grid, then bisection inside the step that
    crosses it, down to one edge (rel_tol > 0: stop once the bracket is within rel_tol of its top,
    fewer circuit runs, a circuit up to that much larger than the smallest). means / baseline:
    mean ablation (see faithfulness_of)."""
    target = check_target(target)
    graph = scores.graph
    order = [e for e in scores.ranked() if not np.isnan(scores.scores[e])]
    clean, corrupt = scores.clean_logit_diff, scores.corrupt_logit_diff
    measured: dict[int, float] = {}
    base = corrupt
    extra: dict = {"ablation": "corrupt" if means is None else "mean"}
    if means is not None:
        base = baseline if baseline is not None else round(ablated_logit_diff(hm, data, graph, means), 6)
        extra["baseline_logit_diff"] = base

    def faith(k: int) -> float:
        if k == 0 and means is not None and k not in measured:
            measured[0] = 0.0        # the empty circuit is the baseline itself (measured above)
            if progress:
                progress(0, 0.0)
        if k not in measured:
            measured[k] = round(faithfulness_of(hm, data, graph, order[:k], clean, base, means=means, baseline=base), 6)
            if progress:
                progress(k, measured[k])
        return measured[k]

    grid = size_grid(len(order), points)
    chosen = None
    prev = 0
    for k in grid:
        if faith(k) >= target:
            chosen = k
            break
        prev = k
    if chosen is not None and chosen - prev > 1:     # bisect inside the step (assumes monotone there)
        lo, hi = prev, chosen
        while hi - lo > max(1, rel_tol * hi):
            mid = (lo + hi) // 2
            if faith(mid) >= target:
                hi = mid
            else:
                lo = mid
        chosen = hi
    for k in grid:          # the whole curve, for the report
        faith(k)
    k = chosen if chosen is not None else len(order)
    curve = sorted(measured.items())
    return Circuit(graph, scores.method, order[:k], measured[k], target, clean, corrupt, scores.n_items,
                   scores=scores, curve=curve,
                   settings={"reached_target": chosen is not None, "grid": grid, **(scores.settings or {}), **extra})


def acdc(hm, data, graph: EdgeGraph, *, tau: float = 0.01, candidates: Sequence[int] | None = None,
         clean: float, corrupt: float, max_edges: int = 5000, progress: Callable | None = None,
         means: torch.Tensor | None = None) -> Circuit:
    """Greedy exact pruning: edges outside `candidates` start patched; the others are tried one at a
    time (receivers from the logits back, senders latest first) and stay patched if faithfulness
    drops by less than tau. means: mean ablation (`corrupt` is then LD(empty) under it)."""
    if tau < 0:
        raise UsageError(f"--tau {tau} must be >= 0")
    cand = list(range(graph.n_edges)) if candidates is None else list(candidates)
    if len(cand) > max_edges:
        raise UsageError(f"acdc over {len(cand)} edges is one circuit run per edge: pre-prune (--candidates N) "
                         f"to at most {max_edges}")
    gap, _ = gap_divisor(clean, corrupt)
    patched = torch.ones(graph.n_edges, dtype=torch.bool)
    patched[cand] = False
    cur = (circuit_logit_diff(hm, data, patched, graph, means=means) - corrupt) / gap
    order = sorted(cand, key=lambda e: (-graph.edges[e][1], -graph.edges[e][0]))
    removed_cost: dict[int, float] = {}
    for i, e in enumerate(order):
        patched[e] = True
        f = (circuit_logit_diff(hm, data, patched, graph, means=means) - corrupt) / gap
        removed_cost[e] = cur - f
        if cur - f < tau:
            cur = f
        else:
            patched[e] = False
        if progress:
            progress(i + 1, len(order))
    keep = [e for e in order if not patched[e]]
    keep.sort(key=lambda e: -removed_cost[e])
    # the circuit's "scores": minus what removing each edge would have cost at its turn
    sc = np.full(graph.n_edges, np.nan)
    for e, c in removed_cost.items():
        sc[e] = -c
    scores = EdgeScores(graph, sc, "acdc", clean, corrupt, data.n_items, settings={"tau": tau})
    return Circuit(graph, "acdc", keep, round(float(cur), 6), 0.0, clean, corrupt, data.n_items, scores=scores,
                   curve=[(len(keep), round(float(cur), 6))], settings={"tau": tau, "n_candidates": len(cand),
                                                                         "ablation": "corrupt" if means is None else "mean"})


# ----------------------------------------------------------------------------- the verb


def circuit_key(hm, ds: Dataset, **params) -> str:
    return content_hash(VERSION, ds.name, dataset_hash(ds.items), hm.spec, params)


def find_circuit(store, hm, ds: Dataset, method: str = "eap", *, target: float = 0.8, ig_steps: int = 5,
                 tau: float = 0.01, candidates: int | None = None, batch_size: int = 16, points: int = 12,
                 ablation: str = "corrupt", reuse: bool = True, progress: Callable | None = None) -> Circuit:
    """Score every edge (eap | eap-ig), prune to `target` faithfulness and measure the curve; or
    acdc (greedy, exact) over all edges or the `candidates` best EAP edges. Edges outside the
    circuit are ablated to their corrupt values or (ablation='mean') their senders' means, see
    the module doc. Stored (an identical earlier run is returned from the store)."""
    if method not in SEARCH_METHODS:
        raise UsageError(f"unknown --method {method!r}: use {', '.join(SEARCH_METHODS)}")
    ablation = check_ablation(ablation)
    target = check_target(target)
    if candidates is not None and candidates < 1:
        raise UsageError("--candidates must be >= 1")
    if method == "eap-ig" and ig_steps < 1:
        raise UsageError("--ig-steps must be >= 1")
    graph = EdgeGraph.of(hm)
    params = dict(method=method, target=target, ig_steps=ig_steps if method == "eap-ig" else None,
                  tau=tau if method == "acdc" else None, candidates=candidates if method == "acdc" else None,
                  points=points)
    if ablation != "corrupt":      # (not in the key for corrupt: circuits stored before the option keep theirs)
        params["ablation"] = ablation
    key = circuit_key(hm, ds, **params)
    if reuse:
        row = store.get_circuit(key=key)
        if row is not None:
            return circuit_from_row(row, graph)
    data = prepare_data(hm, ds.items, batch_size)
    means = base = None
    if ablation == "mean":
        means = sender_means(hm, data)
        base = round(ablated_logit_diff(hm, data, graph, means), 6)
    if method == "acdc":
        sc = (eap_scores(hm, ds.items, batch_size=batch_size, graph=graph, means=means, baseline=base)
              if candidates else None)
        clean, corrupt = _clean_corrupt(hm, data)
        cand = sc.ranked()[:candidates] if sc is not None else None
        circ = acdc(hm, data, graph, tau=tau, candidates=cand, clean=clean, corrupt=corrupt if base is None else base,
                    progress=progress, means=means)
        circ.target = target
        circ.corrupt_logit_diff = corrupt
        if sc is not None:
            circ.settings["candidates_from"] = "eap"
        if base is not None:
            circ.settings["baseline_logit_diff"] = base
    else:
        sc = eap_scores(hm, ds.items, method=method, steps=ig_steps, batch_size=batch_size, graph=graph,
                        means=means, baseline=base)
        circ = prune_to_target(hm, data, sc, target, points=points, progress=progress, means=means, baseline=base)
    circ.ablation = ablation
    circ.settings.update({"dataset": ds.name, "ablation": ablation,
                          **{k: v for k, v in params.items() if v is not None}})
    store.put_model(hm.spec, hm.info())
    circ.circuit_id = store.put_circuit(key, dataset=ds.name, model_id=hm.spec, method=method, ablation=ablation,
                                        target=target,
                                        faithfulness=circ.faithfulness, clean_logit_diff=circ.clean_logit_diff,
                                        corrupt_logit_diff=circ.corrupt_logit_diff, n_items=circ.n_items,
                                        n_edges_total=graph.n_edges, curve=circ.curve, settings=circ.settings,
                                        edges=_edge_rows(circ))
    return circ


def _clean_corrupt(hm, data) -> tuple[float, float]:
    from .core import run_ld

    c = x = 0.0
    with torch.no_grad():
        for b in data:
            c += float(run_ld(hm, b.clean, b)[0].double().sum())
            x += float(run_ld(hm, b.corrupt, b)[0].double().sum())
    return round(c / data.n_items, 6), round(x / data.n_items, 6)


def _edge_rows(c: Circuit) -> list[dict]:
    g = c.graph
    sc = c.scores.scores if c.scores is not None else np.full(g.n_edges, np.nan)
    rank = {e: i for i, e in enumerate(c.edges)}
    rows = []
    for e, (s, r) in enumerate(g.edges):
        if math.isnan(sc[e]) and e not in rank:
            continue
        rows.append({"edge": g.edge_name(e), "sender": g.senders[s].name, "receiver": g.receivers[r].name,
                     "score": _f(sc[e]), "in_circuit": e in rank, "rank": rank.get(e)})
    return rows


def circuit_from_row(row: dict, graph: EdgeGraph) -> Circuit:
    scores = np.full(graph.n_edges, np.nan)
    keep: list[tuple[int, int]] = []
    for r in row["edges"]:
        e = graph.edge_index[graph.parse_edge(r["edge"])]
        if r["score"] is not None:
            scores[e] = r["score"]
        if r["in_circuit"]:
            keep.append((r["rank"], e))
    sc = EdgeScores(graph, scores, row["method"], row["clean_logit_diff"], row["corrupt_logit_diff"], row["n_items"])
    return Circuit(graph, row["method"], [e for _, e in sorted(keep)], row["faithfulness"], row["target"],
                   row["clean_logit_diff"], row["corrupt_logit_diff"], row["n_items"], scores=sc,
                   curve=[tuple(p) for p in row["curve"]], settings=row["settings"], circuit_id=row["id"], reused=True,
                   ablation=row.get("ablation") or "corrupt")


# ----------------------------------------------------------------------------- auto-circuit export


def _ac_src(graph: EdgeGraph, i: int) -> str:
    s = graph.senders[i]
    return "Resid Start" if s.part == "embed" else (f"A{s.layer}.{s.head}" if s.part == "head" else f"MLP {s.layer}")


def _ac_dest(graph: EdgeGraph, j: int) -> tuple[str, str]:
    """(auto-circuit node name, its TransformerLens module name) of a receiver."""
    r = graph.receivers[j]
    if r.part == "logits":
        last = act_name("resid_post", graph.n_layers - 1)
        return "Resid End", last.replace("resid_post", "hook_resid_post")
    if r.part == "mlp":
        return f"MLP {r.layer}", act_name("mlp.out", r.layer).replace("mlp.out", "hook_mlp_in")
    site = act_name(f"attn.{r.channel}", r.layer)
    return f"A{r.layer}.{r.head}.{r.channel.upper()}", site.replace(f"attn.{r.channel}", f"hook_{r.channel}_input")


def auto_circuit_json(c: Circuit) -> dict:
    """The circuit in auto-circuit's shape: PruneScores (dest module name -> scores indexed
    [head?][src idx], the Edge.patch_idx convention), src nodes with their idx, and edges named
    'A0.0->A1.0.K' (src->dest). Unscored edges are 0; scores are our normalised effects."""
    g = c.graph
    sc = c.scores.scores if c.scores is not None else np.zeros(g.n_edges)
    prune: dict[str, list] = {}
    S = len(g.senders)
    for e, (s, r) in enumerate(g.edges):
        rec = g.receivers[r]
        _, mod = _ac_dest(g, r)
        v = 0.0 if math.isnan(sc[e]) else float(sc[e])
        if rec.part == "head":
            t = prune.setdefault(mod, [[0.0] * S for _ in range(g.n_heads)])
            t[rec.head][s] = v
        else:
            prune.setdefault(mod, [0.0] * S)[s] = v
    in_c = set(c.edges)
    return {
        "format": "auto-circuit",
        "prune_scores": prune,
        "src_nodes": [{"name": _ac_src(g, i), "idx": i, "ours": s.name, "layer": s.stage, "head_idx": s.head}
                      for i, s in enumerate(g.senders)],
        "edges": [{"name": f"{_ac_src(g, s)}->{_ac_dest(g, r)[0]}", "ours": g.edge_name(e),
                   "dest_module": _ac_dest(g, r)[1], "score": _f(sc[e]), "in_circuit": e in in_c}
                  for e, (s, r) in enumerate(g.edges) if e in in_c or not math.isnan(sc[e])],
        "circuit": [f"{_ac_src(g, g.edges[e][0])}->{_ac_dest(g, g.edges[e][1])[0]}" for e in c.edges],
        "faithfulness": c.faithfulness, "method": c.method, "ablation": c.ablation, "n_edges": len(c.edges),
    }


def rank_check(hm, items: Sequence[PairItem], *, method: str = "eap", receivers: str = "logits",
               batch_size: int = 16, steps: int = 5) -> dict:
    """Spearman correlation of EAP (or EAP-IG) with exact edge patching over the edges into
    `receivers` ('logits' or 'all'), with the two score lists."""
    graph = EdgeGraph.of(hm)
    sc = eap_scores(hm, items, method=method, steps=steps, batch_size=batch_size, graph=graph)
    idx = [e for e, (s, r) in enumerate(graph.edges) if receivers == "all" or graph.receivers[r].part == "logits"]
    ex = exact_edge_scores(hm, items, idx, batch_size=batch_size, graph=graph)
    return {"spearman": spearman(sc.scores[idx], ex.scores[idx]), "n_edges": len(idx),
            "edges": [graph.edge_name(e) for e in idx], "approx": [float(sc.scores[e]) for e in idx],
            "exact": [float(ex.scores[e]) for e in idx]}
