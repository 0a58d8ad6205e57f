"""Edge-level circuits: the computational graph, edge attribution patching (EAP, EAP-IG), exact
edge patching, and running a circuit (every edge outside it patched to its corrupt value).

The graph (nodes through the residual stream):
    senders    embed (the input embeddings), every head's output L/H (z_h @ W_O[h]), every MLP
               (blocks.L.mlp.out)
    receivers  every head's query / key / value input L/H:q, L/H:k, L/H:v, every MLP's input
               (named by the MLP node, blocks.L.mlp.out), logits (the input of the final norm)
    edges      every sender to every later receiver: `L0/H0 -> L1/H0:k`, `embed -> logits`,
               `L2/H3 -> blocks.2.mlp.out` (an MLP reads the heads of its own block)

A receiver's input is the residual stream it reads, i.e. the sum of every earlier sender's output
(plus constant biases). Patching the edge s -> r (noising) replaces s's term in r's input by s's
output on the corrupt prompt; every other receiver, and everything downstream of r, is computed
as usual. Patching a set of edges does this for each of them, with the current (not the clean)
value of every unpatched term: a circuit run.

Grouped-query attention. A key/value head is shared by its query group, but the graph gives each
*query* head its own k and v inputs (`L3/H5:k` is the key input *as seen by query head 5*), as
auto-circuit's split q/k/v inputs do: patching `s -> L3/H5:k` changes head 5's attention only,
not that of the other heads of its group. Edges into k/v are therefore counted per query head
(n_heads per layer and channel, not n_kv_heads); the edges into a shared kv head are the sum of
its group's.

Ablation: what an edge outside the circuit (or a scored edge) is patched to.
    corrupt  the sender's output on the item's corrupt prompt (default; interchange ablation)
    mean     the sender's mean output over the dataset: over all its items' clean *and* corrupt
             prompts (auto-circuit's TOKENWISE_MEAN_CLEAN_AND_CORRUPT), per position. Prompts of
             one dataset can differ in length (they are right-padded), so positions are counted
             back from the final token, the one the metric reads (as patching/circuit.py's mean
             ablation of heads): row r of the mean is the mean over the prompts at r tokens before
             their last one; for prompts of one length this is auto-circuit's per-position mean.
             Positions no prompt reaches (never read) get the sender's overall mean.
    Under mean ablation EAP uses (mean - clean output) as the edge's delta and EAP-IG
    interpolates from the mean embeddings; scores are then normalised by the gap between the
    clean run and the model with every edge mean-ablated (`baseline`), the 0 of faithfulness.

Scores are effects on the normalised logit difference (core.py): (LD_patched - LD_clean) /
(LD_clean - LD_corrupt), i.e. -1 = the edge alone carries the whole clean-vs-corrupt gap.
EAP (Syed et al. 2023) approximates an edge's effect to first order,
    score(s -> r) = (out_s(corrupt) - out_s(clean)) . dLD/d input_r   (on the clean run)
from one clean forward with gradients, one corrupt forward and one backward per batch (plus a
small local vector-Jacobian product per receiver, layer by layer: memory stays bounded by one
layer's receivers). EAP-IG (Hanna et al. 2024) averages the gradient over `steps` inputs
interpolated between the corrupt and the clean embeddings.

Requires a model whose residual stream is the sum of its heads' and MLPs' outputs (GPT-2,
Llama-style, Gemma-1; not Gemma-2/3, whose post-norms make head outputs non-additive): checked
numerically on the first batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core.hooks import act_name, canonical, is_hook
from ..core.stats import gap_divisor, spearman  # noqa: F401  (spearman: re-exported)
from ..core.units import Unit
from ..errors import DatasetError, ModelSpecError, UnitError, UsageError
from ..tasks.items import PairItem
from .core import Batch, Data, prepare, run_ld

EMBED = "embed"
LOGITS = "logits"
CHANNELS = ("q", "k", "v")
METHODS = ("eap", "eap-ig")
ABLATIONS = ("corrupt", "mean")


def check_ablation(ablation: object) -> str:
    if ablation not in ABLATIONS:
        raise UsageError(f"unknown --ablation {ablation!r}: use {' or '.join(ABLATIONS)}")
    return str(ablation)


@dataclass(frozen=True)
class Sender:
    name: str          # embed | L3/H1 | blocks.3.mlp.out
    part: str          # embed | head | mlp
    layer: int         # -1 for embed
    head: int | None = None

    @property
    def stage(self) -> int:       # forward order through the residual stream
        return 0 if self.part == "embed" else 2 * self.layer + (1 if self.part == "head" else 2)


@dataclass(frozen=True)
class Receiver:
    name: str          # L3/H1:q | blocks.3.mlp.out | logits
    part: str          # head | mlp | logits
    layer: int         # n_layers for logits
    head: int | None = None
    channel: str | None = None     # q | k | v for heads

    @property
    def stage(self) -> int:
        return 2 * self.layer + (1 if self.part == "head" else 2) if self.part != "logits" else 2 * self.layer + 1


class EdgeGraph:
    """Senders, receivers and the valid (sender before receiver) edges of a model's graph."""

    def __init__(self, n_layers: int, n_heads: int, n_kv_heads: int | None = None):
        self.n_layers, self.n_heads = n_layers, n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        if n_heads % self.n_kv_heads:
            raise ModelSpecError(f"{n_heads} query heads do not split into {self.n_kv_heads} key/value groups")
        self.group = n_heads // self.n_kv_heads
        self.senders: list[Sender] = [Sender(EMBED, "embed", -1)]
        self.receivers: list[Receiver] = []
        for L in range(n_layers):
            self.senders += [Sender(Unit.head(L, h).id, "head", L, h) for h in range(n_heads)]
            self.senders.append(Sender(act_name("mlp.out", L), "mlp", L))
            self.receivers += [Receiver(f"{Unit.head(L, h).id}:{c}", "head", L, h, c) for c in CHANNELS
                               for h in range(n_heads)]
            self.receivers.append(Receiver(act_name("mlp.out", L), "mlp", L))
        self.receivers.append(Receiver(LOGITS, "logits", n_layers))
        self.sender_index = {s.name: i for i, s in enumerate(self.senders)}
        self.receiver_index = {r.name: i for i, r in enumerate(self.receivers)}
        ss = np.array([s.stage for s in self.senders])
        rs = np.array([r.stage for r in self.receivers])
        self.valid = torch.as_tensor(ss[:, None] < rs[None, :])            # [S, R]
        si, ri = torch.nonzero(self.valid.T, as_tuple=True)                # receiver-major order
        self.edges: list[tuple[int, int]] = list(zip(ri.tolist(), si.tolist()))
        self.edge_index = {e: j for j, e in enumerate(self.edges)}

    @classmethod
    def of(cls, hm) -> "EdgeGraph":
        return cls(hm.n_layers, hm.n_heads, hm.n_kv_heads)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def n_senders_before(self, r: Receiver) -> int:
        """Senders are in stage order, so the valid senders of r are a prefix."""
        return int(self.valid[:, self.receiver_index[r.name]].sum())

    def edge_name(self, e: tuple[int, int] | int) -> str:
        s, r = e if isinstance(e, tuple) else self.edges[int(e)]
        return f"{self.senders[s].name} -> {self.receivers[r].name}"

    def names(self) -> list[str]:
        return [self.edge_name(e) for e in self.edges]

    def parse_edge(self, name: str) -> tuple[int, int]:
        """(sender index, receiver index) of 'L0/H0 -> L1/H0:k' (spaces optional; ids any case)."""
        if not isinstance(name, str) or "->" not in name:
            raise UsageError(f"bad edge {name!r}: use SENDER -> RECEIVER, e.g. 'L0/H0 -> L1/H0:k' or 'embed -> logits'")
        a, _, b = (x.strip() for x in name.partition("->"))
        s, r = self.sender_named(a), self.receiver_named(b)
        if not self.valid[s, r]:
            raise UsageError(f"no edge {name!r}: {a} is not before {b} in the residual stream")
        return s, r

    def sender_named(self, name: str) -> int:
        key = _canon(name)
        if key in self.sender_index:
            return self.sender_index[key]
        raise UsageError(f"unknown sender {name!r}: use embed, a head (L0/H0, layers 0..{self.n_layers - 1}, heads "
                         f"0..{self.n_heads - 1}) or an MLP ({act_name('mlp.out', 0)})")

    def receiver_named(self, name: str) -> int:
        unit, sep, ch = name.strip().partition(":")
        key = f"{_canon(unit)}:{ch.strip().lower()}" if sep else _canon(name)
        if key in self.receiver_index:
            return self.receiver_index[key]
        raise UsageError(f"unknown receiver {name!r}: use logits, a head input (L1/H0:q, :k or :v; layers "
                         f"0..{self.n_layers - 1}, heads 0..{self.n_heads - 1}) or an MLP input ({act_name('mlp.out', 0)})")

    def edges_named(self, names: Sequence[str]) -> list[int]:
        return [self.edge_index[self.parse_edge(n)] for n in names]

    def kv_head(self, head: int) -> int:
        return head // self.group


def _canon(name: str) -> str:
    n = name.strip()
    try:
        return Unit.parse(n).id
    except UnitError:
        pass
    if n.lower() in (EMBED, LOGITS):
        return n.lower()
    return canonical(n) if is_hook(n) else n          # an MLP by its hook name, TL's spelling too


# ----------------------------------------------------------------------------- scores


@dataclass
class EdgeScores:
    """Per-edge effects (normalised noising effects, see the module doc), in graph.edges order."""
    graph: EdgeGraph
    scores: np.ndarray             # [n_edges]
    method: str                    # eap | eap-ig | exact
    clean_logit_diff: float
    corrupt_logit_diff: float
    n_items: int
    normalised: bool = True
    settings: dict | None = None

    def by_name(self) -> dict[str, float]:
        return {self.graph.edge_name(e): float(v) for e, v in zip(self.graph.edges, self.scores) if not np.isnan(v)}

    def ranked(self) -> list[int]:
        """Edge indices, largest |score| first (NaN = not scored, last)."""
        a = np.nan_to_num(np.abs(self.scores), nan=-1.0)
        return [int(i) for i in np.argsort(-a, kind="stable")]


def _head_outputs(hm, z: torch.Tensor, L: int) -> torch.Tensor:
    """[B, p, H, d] each head's write to the residual stream (z_h @ W_O[h], no bias)."""
    W = hm.W_O(L).to(z.dtype)
    return torch.einsum("bphe,hed->bphd", z, W)


def _sender_outputs(hm, cache: dict, embed: torch.Tensor) -> torch.Tensor:
    """[S, B, p, d] every sender's output (stage order) from a run's cache."""
    outs = [embed.unsqueeze(0)]
    for L in range(hm.n_layers):
        outs.append(_head_outputs(hm, cache[act_name("attn.z", L)], L).permute(2, 0, 1, 3))
        outs.append(cache[act_name("mlp.out", L)].unsqueeze(0))
    return torch.cat(outs).float()


def _sender_cache_names(n_layers: int) -> list[str]:
    return [act_name("resid_pre", 0)] + [act_name(s, L) for L in range(n_layers) for s in ("attn.z", "mlp.out")]


@torch.no_grad()
def sender_means(hm, data: Data) -> torch.Tensor:
    """[S, R, d] float32: every sender's output averaged over the clean and the corrupt prompts of
    `data`, row r = r positions before each prompt's final token (R = the longest prompt); rows no
    prompt reaches get the sender's overall mean (the module doc, "mean")."""
    nL, e0 = hm.n_layers, act_name("resid_pre", 0)
    R = data.max_len
    sums: torch.Tensor | None = None
    counts = torch.zeros(R, dtype=torch.float64)
    for b in data:
        rel = b.last.cpu()[:, None] - torch.arange(b.seq_len)[None, :]           # [B, p]
        valid = (b.mask.cpu() > 0) & (rel >= 0)
        idx = rel[valid]
        for ids in (b.clean, b.corrupt):
            run = hm.forward(ids, b.mask, cache=_sender_cache_names(nL), return_logits=False)
            out = _sender_outputs(hm, run.cache, run.cache[e0])                  # [S, B, p, d]
            del run
            vals = out[:, valid.to(out.device)].double()                          # [S, n_valid, d]
            if sums is None:
                sums = torch.zeros(out.shape[0], R, out.shape[-1], dtype=torch.float64, device=out.device)
            sums.index_add_(1, idx.to(out.device), vals)
            counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
            del out, vals
    c = counts.to(sums.device)
    m = sums / c.clamp_min(1)[None, :, None]
    m[:, c == 0] = (sums.sum(1) / c.sum().clamp_min(1))[:, None, :]
    return m.float()


def _aligned_means(means: torch.Tensor, b: Batch) -> torch.Tensor:
    """[S, B, p, d]: position t of each prompt gets its sender's mean for (its last - t)."""
    rel = (b.last[:, None] - torch.arange(b.seq_len, device=b.last.device)[None, :]).clamp(0, means.shape[1] - 1)
    return means[:, rel.to(means.device)]


def _check_means(means: torch.Tensor, graph: "EdgeGraph", data: Data) -> None:
    if means.ndim != 3 or means.shape[0] != len(graph.senders) or means.shape[1] < data.max_len:
        raise UsageError(f"sender means of shape {tuple(means.shape)} do not fit this graph and data "
                         f"({len(graph.senders)} senders, prompts up to {data.max_len} tokens): use sender_means")


def check_additive(hm, b: Batch, tol: float = 1e-3) -> None:
    """Raise unless the residual stream is the sum of head and MLP outputs (checked on one batch)."""
    names = [act_name(s, L) for L in range(hm.n_layers) for s in ("resid_pre", "attn.z", "attn.out", "mlp.out",
                                                                    "resid_post")]
    run = hm.forward(b.clean, b.mask, cache=names, return_logits=False)
    c = run.cache
    for L in range(hm.n_layers):
        heads = _head_outputs(hm, c[act_name("attn.z", L)], L).sum(2)
        bias = hm.b_O(L)
        if bias is not None:
            heads = heads + bias
        res = c[act_name("resid_pre", L)] + c[act_name("attn.out", L)] + c[act_name("mlp.out", L)]
        scale = float(c[act_name("resid_post", L)].abs().max()) + 1e-6
        err = max(float((heads - c[act_name("attn.out", L)]).abs().max()),
                  float((res - c[act_name("resid_post", L)]).abs().max()))
        if err > tol * scale:
            raise ModelSpecError(f"edge circuits need a residual stream that is the sum of head and MLP outputs; "
                                 f"{hm.spec} ({hm.family}) is not (layer {L}, error {err:.3g}), e.g. post-norms")


def prepare_data(hm, items: Sequence[PairItem], batch_size: int) -> Data:
    if batch_size < 1:
        raise UsageError("batch_size must be >= 1")
    data = prepare(hm, items, batch_size)
    for i, b in enumerate(data):
        if b.clean.shape != b.corrupt.shape:
            raise DatasetError(f"batch {i}: clean and corrupt prompts do not line up")
    check_additive(hm, data.batches[0])
    return data


def _receiver_grads_layer(hm, graph: EdgeGraph, run, L: int) -> torch.Tensor:
    """[3H+1, B, p, d]: dLD/d(input) of layer L's receivers (q heads, k heads, v heads, MLP), from a
    grad run whose backward has been done with retain_graph. Each is a local vector-Jacobian
    product: the gradient reaching that receiver only, pulled back through its norm and projection."""
    H = hm.n_heads
    c = run.cache
    x = c[act_name("resid_pre", L)]
    z = c[act_name("attn.z", L)]
    gz = z.grad if z.grad is not None else torch.zeros_like(z)
    out = []
    for ch in CHANNELS:
        t = c[act_name(f"attn.{ch}", L)]
        if t.grad is None:
            out.append(torch.zeros(H, *x.shape, dtype=torch.float32, device=x.device))
            continue
        cot = torch.zeros(H, *t.shape, dtype=t.dtype, device=t.device)      # per query head: [B, p, n, dh]
        for h in range(H):
            if ch == "q" or graph.group == 1:
                slot = h if ch == "q" else graph.kv_head(h)
                cot[h, :, :, slot] = t.grad[:, :, slot]
            else:   # a shared kv head: the gradient that reaches it through query head h's output only
                m = torch.zeros_like(gz)
                m[:, :, h] = gz[:, :, h]
                g, = torch.autograd.grad(z, t, grad_outputs=m, retain_graph=True, allow_unused=True)
                if g is not None:
                    cot[h] = g
        try:
            gx, = torch.autograd.grad(t, x, grad_outputs=cot, retain_graph=True, is_grads_batched=True)
        except RuntimeError:     # an op without a batching rule: one receiver at a time
            gx = torch.stack([torch.autograd.grad(t, x, grad_outputs=cot[h], retain_graph=True)[0] for h in range(H)])
        out.append(gx.float())
    mo, ao = c[act_name("mlp.out", L)], c[act_name("attn.out", L)]
    if mo.grad is None:
        gm = torch.zeros_like(x, dtype=torch.float32)
    else:
        g, = torch.autograd.grad(mo, ao, grad_outputs=mo.grad, retain_graph=True, allow_unused=True)
        gm = torch.zeros_like(x, dtype=torch.float32) if g is None else g.float()
    return torch.cat(out + [gm.unsqueeze(0)])


def eap_scores(hm, items: Sequence[PairItem], *, method: str = "eap", steps: int = 5, batch_size: int = 16,
               graph: EdgeGraph | None = None, means: torch.Tensor | None = None,
               baseline: float | None = None) -> EdgeScores:
    """EAP (method='eap') or EAP-IG (method='eap-ig', `steps` interpolation points) scores of every edge.
    means (sender_means of the same items and batch size): score the edges against mean ablation,
    normalised by clean - `baseline` (the LD with every edge mean-ablated; default: the corrupt LD)."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: use {', '.join(METHODS)}")
    if method == "eap-ig" and steps < 1:
        raise UsageError("--ig-steps must be >= 1")
    graph = graph or EdgeGraph.of(hm)
    data = prepare_data(hm, items, batch_size)
    if means is not None:
        _check_means(means, graph, data)
    nL, H = hm.n_layers, hm.n_heads
    R_per = 3 * H + 1
    S = len(graph.senders)
    acc = torch.zeros(S, len(graph.receivers), dtype=torch.float64)
    grad_names = ([act_name(s, L) for L in range(nL) for s in ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.z",
                                                               "attn.out", "mlp.out")]
                  + [act_name("resid_post", nL - 1)])
    embed_name = act_name("resid_pre", 0)
    clean_sum = corrupt_sum = 0.0
    n_fwd = n_bwd = 0
    # the clean point (alpha = 1) first: its run gives the clean sender outputs and LD
    alphas = [1.0] + ([] if method == "eap" else [(k + 1) / steps for k in range(steps - 1)])
    for b in data:
        with torch.no_grad():
            ld_x, xrun = run_ld(hm, b.corrupt, b, cache=_sender_cache_names(nL))
            if means is None:
                corr_out = _sender_outputs(hm, xrun.cache, xrun.cache[embed_name])      # [S, B, p, d]
                e_corr = xrun.cache[embed_name]
            else:     # the mean-ablated values stand in for the corrupt ones
                corr_out = _aligned_means(means, b).float()
                e_corr = corr_out[0].to(xrun.cache[embed_name].dtype)
            e_clean = None
            if len(alphas) > 1:    # the embeddings only (no block runs)
                e_clean = hm.forward(b.clean, b.mask, cache=[embed_name], return_logits=False,
                                     stop_at_layer=0).cache[embed_name]
        del xrun
        n_fwd += 1
        corrupt_sum += float(ld_x.double().sum())
        w = 1.0 / len(alphas)
        delta = None
        for a in alphas:
            hooks = {}
            if a != 1.0:
                def interp(v, a=a):
                    return (e_corr + a * (e_clean - e_corr)).to(v.dtype).requires_grad_(True)
                hooks[embed_name] = interp
            ld, run = run_ld(hm, b.clean, b, cache=grad_names, hooks=hooks, grad=True)
            if delta is None:      # alpha = 1: the clean run
                clean_sum += float(ld.detach().double().sum())
                det = {n: run.cache[n].detach() for n in _sender_cache_names(nL)}
                delta = corr_out - _sender_outputs(hm, det, det[embed_name])
                del det, corr_out
            ld.sum().backward(retain_graph=True)
            n_fwd += 1
            n_bwd += 1
            # streaming over receiver layers: [S_before, B, p, d] x [R_L, B, p, d] -> [S_before, R_L]
            for L in range(nL + 1):
                if L < nL:
                    g = _receiver_grads_layer(hm, graph, run, L)
                else:
                    gl = run.cache[act_name("resid_post", nL - 1)].grad
                    g = (torch.zeros_like(delta[0]) if gl is None else gl.float()).unsqueeze(0)
                r0 = L * R_per
                n_s = graph.n_senders_before(graph.receivers[r0 + g.shape[0] - 1])
                acc[:n_s, r0:r0 + g.shape[0]] += w * torch.einsum("sbpd,rbpd->sr", delta[:n_s], g).double().cpu()
                del g
            del run, ld
        del delta
    N = data.n_items
    clean, corrupt = clean_sum / N, corrupt_sum / N
    gap, normed = gap_divisor(clean, corrupt if baseline is None else baseline)
    m = acc / N / gap
    m[~graph.valid] = float("nan")
    scores = np.array([float(m[s, r]) for r, s in [(r, s) for s, r in graph.edges]])
    return EdgeScores(graph, scores, method, round(clean, 6), round(corrupt, 6), N, normed,
                      settings={"steps": len(alphas), "forwards": n_fwd, "backwards": n_bwd,
                                "batches": len(data.batches), "batch_size": batch_size,
                                "ablation": "corrupt" if means is None else "mean",
                                **({} if baseline is None else {"baseline_logit_diff": round(float(baseline), 6)})})


# ----------------------------------------------------------------------------- exact edge patching


def _rep(t: torch.Tensor, k: int) -> torch.Tensor:
    return t.repeat(k, *([1] * (t.ndim - 1)))


@torch.no_grad()
def exact_edge_scores(hm, items: Sequence[PairItem], edges: Sequence[int | str] | None = None, *,
                      batch_size: int = 16, max_batch: int = 256, graph: EdgeGraph | None = None) -> EdgeScores:
    """Exact effect of patching each edge alone (noising: clean run, that one edge's sender term
    in its receiver's input replaced by the corrupt value). Edges: indices or names (default all).

        into logits      blocks.{n-1}.resid_post + delta, through the final norm and the
                         unembedding at the last position                (no forward)
        into an MLP      attn.out + delta and mlp.out - delta: only the MLP sees it   (one forward)
        into L/H:c       resid_pre + delta with the layer's q/k/v held clean except the receiver's
                         slice, head h's z recorded (forward to layer L); then the clean run with
                         only head h's z replaced                       (two forwards)
    Many edges into one receiver share a forward (rows of a repeated batch)."""
    graph = graph or EdgeGraph.of(hm)
    if edges is None:
        idx = list(range(graph.n_edges))
    else:
        idx = [graph.edge_index[graph.parse_edge(e)] if isinstance(e, str) else int(e) for e in edges]
        for e in idx:
            if not 0 <= e < graph.n_edges:
                raise UsageError(f"edge index {e} out of range 0..{graph.n_edges - 1}")
    data = prepare_data(hm, items, batch_size)
    nL = hm.n_layers
    by_recv: dict[int, list[int]] = {}
    for e in idx:
        by_recv.setdefault(graph.edges[e][1], []).append(e)
    sums = np.zeros(graph.n_edges)
    clean_sum = corrupt_sum = 0.0
    qkv = [act_name(f"attn.{c}", L) for L in range(nL) for c in CHANNELS]
    for b in data:
        B = b.size
        ld_x, xrun = run_ld(hm, b.corrupt, b, cache=_sender_cache_names(nL))
        ld_c, crun = run_ld(hm, b.clean, b, cache=_sender_cache_names(nL) + qkv + [act_name("resid_post", nL - 1)])
        clean_sum += float(ld_c.double().sum())
        corrupt_sum += float(ld_x.double().sum())
        e0 = act_name("resid_pre", 0)
        delta = _sender_outputs(hm, xrun.cache, xrun.cache[e0]) - _sender_outputs(hm, crun.cache, crun.cache[e0])
        k = max(1, max_batch // B)
        for r, es in by_recv.items():
            rec = graph.receivers[r]
            for s0 in range(0, len(es), k):
                chunk = es[s0:s0 + k]
                kk = len(chunk)
                D = delta[[graph.edges[e][0] for e in chunk]].reshape(kk * B, *delta.shape[2:])
                ids = _rep(b.clean, kk)
                ld = _patched_ld(hm, graph, rec, D, ids, b, kk, crun.cache)
                sums[chunk] += ld.double().view(kk, B).sum(1).cpu().numpy()
        del xrun, crun, delta
    N = data.n_items
    clean, corrupt = clean_sum / N, corrupt_sum / N
    gap, normed = gap_divisor(clean, corrupt)
    scores = np.full(graph.n_edges, np.nan)
    scores[idx] = (sums[idx] / N - clean) / gap
    return EdgeScores(graph, scores, "exact", round(clean, 6), round(corrupt, 6), N, normed,
                      settings={"n_scored": len(idx)})


def _add(D):
    return lambda v: v + D.to(v.dtype)


def _patched_ld(hm, graph: EdgeGraph, rec: Receiver, D: torch.Tensor, ids, b: Batch, kk: int, clean_cache):
    nL = hm.n_layers
    if rec.part == "logits":     # only the final norm and the unembedding read it: no forward needed
        last = b.last.repeat(kk)
        rows = torch.arange(kk * b.size, device=D.device)
        x = _rep(clean_cache[act_name("resid_post", nL - 1)], kk)[rows, last] + D[rows, last].to(hm.dtype)
        logits = hm.unembed(hm.ln_final(x))
        return logits[rows, b.ans.repeat(kk)] - logits[rows, b.wrong.repeat(kk)]
    L = rec.layer
    if rec.part == "mlp":
        ld, _ = run_ld(hm, ids, b, reps=kk, hooks={act_name("attn.out", L): _add(D), act_name("mlp.out", L): _add(-D)})
        return ld
    h = rec.head
    slot = h if rec.channel == "q" else graph.kv_head(h)
    hooks = {act_name("resid_pre", L): _add(D)}
    for c in CHANNELS:
        name = act_name(f"attn.{c}", L)
        clean = _rep(clean_cache[name], kk)
        if c == rec.channel:
            def keep(v, clean=clean):
                out = clean.to(v.dtype).clone()
                out[:, :, slot] = v[:, :, slot]
                return out
            hooks[name] = keep
        else:
            hooks[name] = lambda v, clean=clean: clean.to(v.dtype)
    zname = act_name("attn.z", L)
    run1 = hm.forward(ids, b.mask.repeat(kk, 1), cache=[zname], hooks=hooks, return_logits=False,
                      stop_at_layer=L + 1)
    zh = run1.cache[zname][:, :, h]

    def splice(v):
        out = v.clone()
        out[:, :, h] = zh.to(v.dtype)
        return out

    ld, _ = run_ld(hm, ids, b, reps=kk, hooks={zname: splice})
    return ld


# ----------------------------------------------------------------------------- circuit runs


@torch.no_grad()
def circuit_logit_diff(hm, data: Data, patched: torch.Tensor, graph: EdgeGraph | None = None, *,
                       means: torch.Tensor | None = None) -> float:
    """Mean logit difference of the clean run with the edges in `patched` ([S, R] bool, or [n_edges]
    bool in graph.edges order) patched to their corrupt values (or, given `means` from
    sender_means, to their senders' means: mean ablation), all at once (a circuit run: keep the
    circuit's edges, patch the rest). Layer by layer: each head's q/k/v and each MLP gets its own
    input, the current residual stream minus (current - corrupt) of each patched sender."""
    graph = graph or EdgeGraph.of(hm)
    P = _as_matrix(graph, patched)
    if means is not None:
        _check_means(means, graph, data)
    total = 0.0
    for b in data:
        total += float(_circuit_ld_batch(hm, graph, b, P, means).double().sum())
    return total / data.n_items


def _as_matrix(graph: EdgeGraph, patched) -> torch.Tensor:
    p = torch.as_tensor(patched, dtype=torch.bool)
    if p.ndim == 1:
        if p.numel() != graph.n_edges:
            raise UsageError(f"patched mask has {p.numel()} entries, the graph {graph.n_edges} edges")
        m = torch.zeros_like(graph.valid)
        s = torch.tensor([e[0] for e in graph.edges])
        r = torch.tensor([e[1] for e in graph.edges])
        m[s, r] = p
        return m
    if tuple(p.shape) != tuple(graph.valid.shape):
        raise UsageError(f"patched mask has shape {tuple(p.shape)}, expected {tuple(graph.valid.shape)}")
    return p & graph.valid


def _circuit_ld_batch(hm, graph: EdgeGraph, b: Batch, P: torch.Tensor, means: torch.Tensor | None = None
                      ) -> torch.Tensor:
    nL, H = hm.n_layers, hm.n_heads
    B = b.size
    e0 = act_name("resid_pre", 0)
    if means is None:
        _, xrun = run_ld(hm, b.corrupt, b, cache=_sender_cache_names(nL))
        corr = _sender_outputs(hm, xrun.cache, xrun.cache[e0])            # [S, B, p, d]
        del xrun
    else:
        corr = _aligned_means(means, b).float()
    mask = b.mask
    clean_embed = hm.forward(b.clean, mask, cache=[e0], return_logits=False, stop_at_layer=0).cache[e0].float()
    cur = [clean_embed]                                                  # current sender outputs, stage order
    resid = clean_embed                                                  # current residual stream
    R_per = 3 * H + 1

    def patched_sum(r: int) -> torch.Tensor | None:
        n_s = graph.n_senders_before(graph.receivers[r])
        sel = torch.nonzero(P[:n_s, r]).flatten().tolist()
        if not sel:
            return None
        curr = torch.stack([cur[s] for s in sel])
        return (curr - corr[sel]).sum(0)

    dt = hm.dtype
    for L in range(nL):
        zn = act_name("attn.z", L)
        kn, vn = act_name("attn.k", L), act_name("attn.v", L)
        inputs: dict[tuple[int, str], torch.Tensor] = {}
        for ci, c in enumerate(CHANNELS):
            for h in range(H):
                d = patched_sum(L * R_per + ci * H + h)
                if d is not None:
                    inputs[(h, c)] = resid - d
        # stage A: the natural layer (base row) and the k / v of each patched k / v input
        kv_var = [key for key in inputs if key[1] != "q"]
        rows = [resid] + [inputs[key] for key in kv_var]
        n = len(rows)
        X = torch.cat(rows)
        runA = hm.forward(_rep(b.clean, n), mask.repeat(n, 1), cache=[zn, kn, vn], return_logits=False,
                          start_at_layer=L, resid=X, stop_at_layer=L + 1)
        z_cur = runA.cache[zn][:B].clone()
        kA = runA.cache[kn].view(n, B, *runA.cache[kn].shape[1:])
        vA = runA.cache[vn].view(n, B, *runA.cache[vn].shape[1:])
        heads = sorted({h for h, _ in inputs})
        if heads:    # stage B: one row block per head with its own q input and its own k / v
            m = len(heads)
            XB = torch.cat([inputs.get((h, "q"), resid) for h in heads])
            kB = kA[0].unsqueeze(0).repeat(m, 1, 1, 1, 1).clone()
            vB = vA[0].unsqueeze(0).repeat(m, 1, 1, 1, 1).clone()
            for j, h in enumerate(heads):
                g = graph.kv_head(h)
                if (h, "k") in inputs:
                    kB[j, :, :, g] = kA[1 + kv_var.index((h, "k")), :, :, g]
                if (h, "v") in inputs:
                    vB[j, :, :, g] = vA[1 + kv_var.index((h, "v")), :, :, g]
            kB, vB = kB.flatten(0, 1), vB.flatten(0, 1)
            runB = hm.forward(_rep(b.clean, m), mask.repeat(m, 1), cache=[zn], return_logits=False,
                              start_at_layer=L, resid=XB, stop_at_layer=L + 1,
                              hooks={kn: lambda v, t=kB: t.to(v.dtype), vn: lambda v, t=vB: t.to(v.dtype)})
            zB = runB.cache[zn].view(m, B, *runB.cache[zn].shape[1:])
            for j, h in enumerate(heads):
                z_cur[:, :, h] = zB[j, :, :, h]
        cur += list(_head_outputs(hm, z_cur.float(), L).permute(2, 0, 1, 3))
        # stage C: the block with these head outputs, its MLP reading its own input
        dm = patched_sum(L * R_per + 3 * H)
        dm = torch.zeros_like(resid) if dm is None else dm
        rpost, mo = act_name("resid_post", L), act_name("mlp.out", L)
        runC = hm.forward(b.clean, mask, cache=[rpost, mo], return_logits=False, start_at_layer=L, resid=resid,
                          stop_at_layer=L + 1, hooks={zn: lambda v: z_cur.to(v.dtype),
                                                      act_name("attn.out", L): lambda v: v - dm.to(v.dtype),
                                                      mo: lambda v: v + dm.to(v.dtype)})
        cur.append(runC.cache[mo].float() - dm)
        resid = runC.cache[rpost].float()
    d = patched_sum(len(graph.receivers) - 1)
    final_in = resid if d is None else resid - d
    final = hm.ln_final(final_in.to(dt))
    rows = torch.arange(B, device=final.device)
    logits = hm.unembed(final[rows, b.last])
    return (logits[rows, b.ans] - logits[rows, b.wrong]).float()
