"""Tests of a circuit hypothesis on the hooked model: faithfulness, completeness, backup heads,
and where each head attends from the final token. (Moved here from investigate/: this is
patching science; investigate/ only composes it.) Definitions (after Wang et al. 2022, IOI):

Mean ablation. A head is ablated by replacing its output (blocks.L.attn.z, its slice) with its
mean over the dataset's corrupt prompts (the "ABC" distribution: the task's form without its
answer-specific information). Prompts of one dataset can differ in length, so the mean is taken
per position counted back from the final token (the position the metric reads), over the
prompts long enough to have it. MLP layers are never ablated (as in the IOI paper: the
circuit is a set of heads; MLPs count as part of the model the heads run in).

F(S) = the mean clean logit difference (answer - wrong) with every head outside S mean-ablated.
    M = all heads (the full model, nothing ablated), C = the circuit, {} = no head kept.

    faithfulness  = (F(C) - F({})) / (F(M) - F({}))   the share of the model's logit difference
                    (above the all-ablated baseline) that the circuit alone recovers; 1 = all of it
    ratio         = F(C) / F(M)                       Wang et al.'s form (no baseline subtracted)
    completeness  F(M \\ C) normalised the same way: what the model still does with the circuit
                    ablated (near 0 when the circuit is complete); and, for each K in {each
                    circuit head, the whole circuit}, the incompleteness |F(C \\ K) - F(M \\ K)|
                    / |F(M)| (a complete circuit loses as much as the model when K is removed)

Backup. Mean-ablate the top head h*, re-measure every other head's direct logit attribution
(DLA: its output's direct contribution to logit(answer) - logit(wrong) through the final norm
with its scale frozen, see patching/dla.py) on the clean prompts. A head whose DLA rises by more
than `min_rise` x |DLA(h*)| is a backup head (it takes over part of h*'s job when h* is gone).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..core.hooks import act_name
from ..core.stats import normalised
from ..core.units import HEAD, Unit
from ..tasks.items import PairItem
from .core import FINAL, Batch, Data, logit_diff_from_final, prepare
from .dla import logit_direction

Head = tuple[int, int]


def parse_heads(units: Iterable[str]) -> list[Head]:
    out = []
    for u in units:
        x = Unit.parse(u)
        if x.record is HEAD:
            out.append((x.layer, x.index))
    return out


def head_name(h: Head) -> str:
    return Unit.head(*h).id


# ----------------------------------------------------------------------------- mean activations


@torch.no_grad()
def end_aligned_means(hm, data: Data, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """{layer: [R, n_heads, d_head]} mean attn.z over the corrupt prompts, row r = r positions
    before the final token (R = the longest prompt)."""
    names = [act_name("attn.z", L) for L in layers]
    R = data.max_len
    sums: dict[int, torch.Tensor] = {}
    counts = torch.zeros(R, dtype=torch.float64)
    for b in data:
        run = hm.forward(b.corrupt, b.mask, cache=names, return_logits=False)
        p = b.seq_len
        rel = b.last.cpu()[:, None] - torch.arange(p)[None, :]          # [B, p]
        valid = (b.mask.cpu() > 0) & (rel >= 0)
        idx = rel[valid]
        counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
        for L, n in zip(layers, names):
            z = run.cache[n].detach().double().cpu()[valid]                  # [n_valid, H, dh]
            if L not in sums:
                sums[L] = torch.zeros(R, *z.shape[1:], dtype=torch.float64)
            sums[L].index_add_(0, idx, z)
    out = {}
    for L in layers:
        m = sums[L] / counts.clamp_min(1)[:, None, None]
        # positions no prompt reaches get the overall mean
        overall = sums[L].sum(0) / counts.sum().clamp_min(1)
        m[counts == 0] = overall
        out[L] = m.float()
    return out


def _aligned(mean: torch.Tensor, b: Batch) -> torch.Tensor:
    """[B, p, H, dh]: each prompt's position p gets the mean for (its last - p)."""
    rel = (b.last.cpu()[:, None] - torch.arange(b.seq_len)[None, :]).clamp(0, mean.shape[0] - 1)
    return mean[rel]


# ----------------------------------------------------------------------------- F(S)


class Ablator:
    """Evaluates F(kept heads) on the clean prompts, many head sets per forward pass."""

    def __init__(self, hm, items: Sequence[PairItem], *, batch_size: int = 32, max_batch: int = 256):
        self.hm = hm
        self.data = prepare(hm, items, batch_size)
        self.max_batch = max_batch
        self.layers = list(range(hm.n_layers))
        self.means = end_aligned_means(hm, self.data, self.layers)
        self.forwards = 0

    @torch.no_grad()
    def F(self, kept_sets: Sequence[set[Head] | None]) -> list[float]:
        """Mean clean logit difference for each kept set (None = nothing ablated)."""
        hm, H = self.hm, self.hm.n_heads
        sums = torch.zeros(len(kept_sets), dtype=torch.float64)
        for b in self.data:
            B = b.size
            aligned = {L: _aligned(m, b).to(hm.device) for L, m in self.means.items()}
            k = max(1, self.max_batch // B)
            for s in range(0, len(kept_sets), k):
                chunk = kept_sets[s:s + k]
                kk = len(chunk)
                hooks = {}
                for L in self.layers:
                    abl = torch.zeros(kk, 1, 1, H, 1, dtype=torch.bool, device=hm.device)
                    for j, kept in enumerate(chunk):
                        if kept is None:
                            continue
                        for h in range(H):
                            if (L, h) not in kept:
                                abl[j, 0, 0, h, 0] = True
                    if abl.any():
                        hooks[act_name("attn.z", L)] = _ablate_fn(abl, aligned[L], kk, B)
                run = hm.forward(b.clean.repeat(kk, 1), b.mask.repeat(kk, 1), cache=[FINAL], hooks=hooks,
                                 return_logits=False)
                ld = logit_diff_from_final(hm, run.cache[FINAL], b, kk)
                sums[s:s + kk] += ld.double().view(kk, B).sum(1).cpu()
                self.forwards += 1
        return (sums / self.data.n_items).tolist()


def _ablate_fn(abl: torch.Tensor, mean: torch.Tensor, k: int, B: int):
    def fn(v: torch.Tensor) -> torch.Tensor:
        vv = v.view(k, B, *v.shape[1:])
        return torch.where(abl, mean.unsqueeze(0).to(v.dtype), vv).reshape(v.shape)

    return fn


def evaluate_circuit(hm, items: Sequence[PairItem], circuit: Sequence[str], *, batch_size: int = 32,
                     max_batch: int = 256) -> dict:
    """Faithfulness and completeness of the head set `circuit` (unit ids; neurons/MLPs ignored)."""
    abl = Ablator(hm, items, batch_size=batch_size, max_batch=max_batch)
    C = set(parse_heads(circuit))
    allh = {(L, h) for L in range(hm.n_layers) for h in range(hm.n_heads)}
    Ks = [(head_name(h), {h}) for h in sorted(C)] + ([("circuit", set(C))] if len(C) > 1 else [])
    sets: list[set[Head] | None] = [None, set(), set(C), allh - C]
    for _, K in Ks:
        sets += [C - K, allh - K]
    vals = abl.F(sets)
    FM, F0, FC, FMC = vals[:4]
    per_k = []
    for i, (name, _) in enumerate(Ks):
        fck, fmk = vals[4 + 2 * i], vals[5 + 2 * i]
        per_k.append({"removed": name, "F_circuit_minus": round(fck, 4), "F_model_minus": round(fmk, 4),
                      "incompleteness": round(abs(fck - fmk) / abs(FM), 4) if abs(FM) > 1e-9 else None})
    faith = normalised(FC, F0, FM)
    compl = normalised(FMC, F0, FM)
    inc = [k["incompleteness"] for k in per_k if k["incompleteness"] is not None]
    return {
        "F_model": round(FM, 4), "F_empty": round(F0, 4), "F_circuit": round(FC, 4), "F_model_minus_circuit": round(FMC, 4),
        "faithfulness": None if faith is None else round(faith, 4),
        "ratio": round(FC / FM, 4) if abs(FM) > 1e-9 else None,
        "model_minus_circuit": None if compl is None else round(compl, 4),
        "max_incompleteness": round(max(inc), 4) if inc else None,
        "incompleteness": per_k, "n_heads": len(C), "n_items": abl.data.n_items, "forwards": abl.forwards,
        "ablation": "mean over the corrupt prompts, end-aligned; MLPs kept",
    }


# ----------------------------------------------------------------------------- backup heads


@torch.no_grad()
def head_dla(hm, data: Data, hooks_for=None) -> torch.Tensor:
    """[n_layers, n_heads] mean direct logit attribution of every head on the clean prompts,
    with optional hooks (hooks_for(batch) -> {name: fn})."""
    last_resid = act_name("resid_post", hm.n_layers - 1)
    zs = [act_name("attn.z", L) for L in range(hm.n_layers)]
    total = torch.zeros(hm.n_layers, hm.n_heads, dtype=torch.float64)
    ld_sum = 0.0
    for b in data:
        hooks = hooks_for(b) if hooks_for else {}
        run = hm.forward(b.clean, b.mask, cache=[last_resid, FINAL, *zs], hooks=hooks, return_logits=False)
        ld_sum += float(logit_diff_from_final(hm, run.cache[FINAL], b).double().sum())
        g = logit_direction(hm, b, run.cache[last_resid], run.cache[FINAL])
        rows = torch.arange(b.size, device=g.device)
        for L in range(hm.n_layers):
            a = run.cache[zs[L]][rows, b.last].float()
            total[L] += torch.einsum("bhe,hed,bd->h", a, hm.W_O(L).float(), g).double().cpu()
    return total / data.n_items, ld_sum / data.n_items


def backup_heads(hm, items: Sequence[PairItem], top_head: str, *, batch_size: int = 32, min_rise: float = 0.1,
                 n_show: int = 8) -> dict:
    """Ablate `top_head` (mean over the corrupt prompts) and re-measure every head's DLA."""
    data = prepare(hm, items, batch_size)
    h = Unit.parse(top_head)
    means = end_aligned_means(hm, data, [h.layer])
    before, ld0 = head_dla(hm, data)

    def hooks_for(b: Batch):
        m = _aligned(means[h.layer], b).to(hm.device)
        mask = torch.zeros(1, 1, hm.n_heads, 1, dtype=torch.bool, device=hm.device)
        mask[0, 0, h.index, 0] = True

        def fn(v):
            return torch.where(mask, m.to(v.dtype), v)

        return {act_name("attn.z", h.layer): fn}

    after, ld1 = head_dla(hm, data, hooks_for)
    top_dla = float(before[h.layer, h.index])
    rise = after - before
    rows = []
    for L in range(hm.n_layers):
        for i in range(hm.n_heads):
            if (L, i) == (h.layer, h.index):
                continue
            rows.append({"head": Unit.head(L, i).id, "dla_before": round(float(before[L, i]), 4),
                         "dla_after": round(float(after[L, i]), 4), "rise": round(float(rise[L, i]), 4)})
    rows.sort(key=lambda r: -abs(r["rise"]))
    thr = min_rise * abs(top_dla)
    backups = [r["head"] for r in rows if r["rise"] > thr and thr > 0]
    comp = sum(r["rise"] for r in rows if r["rise"] > thr) if thr > 0 else 0.0
    return {"ablated": top_head, "ablated_dla": round(top_dla, 4), "logit_diff_before": round(ld0, 4),
            "logit_diff_after": round(ld1, 4), "threshold": round(thr, 4), "backup_heads": backups,
            "compensation": round(comp, 4), "rows": rows[:max(n_show, len(backups))], "n_items": data.n_items}


# ----------------------------------------------------------------------------- attention evidence


@torch.no_grad()
def final_attention(hm, items: Sequence[PairItem], heads: Sequence[str], *, batch_size: int = 32) -> dict[str, dict]:
    """Where each head attends from the final token of the clean prompts, as mean attention to:
    answer (earlier occurrences of the answer token), wrong (of the wrong token), edited (the
    positions where clean and corrupt tokens differ), first (position 0), and the top token."""
    hs = [Unit.parse(u) for u in heads]
    if not hs:
        return {}
    data = prepare(hm, items, batch_size)
    layers = sorted({u.layer for u in hs})
    names = [act_name("attn.pattern", L) for L in layers]
    acc = {str(u): {"answer": 0.0, "wrong": 0.0, "edited": 0.0, "first": 0.0} for u in hs}
    top_tok: dict[str, dict[str, float]] = {str(u): {} for u in hs}
    for b in data:
        run = hm.forward(b.clean, b.mask, cache=names, return_logits=False)
        rows = torch.arange(b.size, device=b.clean.device)
        ids = b.clean
        ans_m = (ids == b.ans[:, None]) & (b.mask > 0)
        wr_m = (ids == b.wrong[:, None]) & (b.mask > 0)
        ed_m = (b.clean != b.corrupt) & (b.mask > 0)
        for u in hs:
            pat = run.cache[act_name("attn.pattern", u.layer)][rows, u.index, b.last].float()   # [B, k]
            a = acc[str(u)]
            a["answer"] += float((pat * ans_m).sum())
            a["wrong"] += float((pat * wr_m).sum())
            a["edited"] += float((pat * ed_m).sum())
            a["first"] += float(pat[:, 0].sum())
            for r in range(b.size):
                j = int(pat[r].argmax())
                t = hm.tokenizer.decode([int(ids[r, j])])
                top_tok[str(u)][t] = top_tok[str(u)].get(t, 0.0) + 1
    N = data.n_items
    out = {}
    for u, a in acc.items():
        tt = sorted(top_tok[u].items(), key=lambda x: -x[1])[:3]
        out[u] = {k: round(v / N, 3) for k, v in a.items()}
        out[u]["top_tokens"] = [[t, round(c / N, 3)] for t, c in tt]
    return out
