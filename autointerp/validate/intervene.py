"""Interventions on a unit in its own top contexts, and whether their effect has the direction
an explanation implies. A unit is an MLP neuron or an SAE latent (site.py: a latent is edited on
its SAE's latents point, the SAE spliced in as reconstruction + error, so the edit changes only
that latent's contribution).

On the unit's top mined contexts (token ids from the store, exactly what mining ran), at the
*active positions* (activation >= frac x unit max; the peak always included):

  zero   the unit set to 0                         (ablate("zero"))
  mean   the unit set to its mined mean activation  (ablate("mean", reference=mean))
  patch  the unit alone set to the value it takes in the *counterfactual* context: the same
         context with the explanation's key words swapped for an unrelated filler token
         (patch_value from that run). Everything else sees the clean input, so the effect is
         the unit's causal share of the edit. No key word in a context -> no edit there.

Measured at the active positions, each intervened run against the clean one:
  kl                 KL(clean || intervened) of the next-token distribution (nats), mean
  dlogit_promoted    mean change of the logits of the k tokens the unit most promotes by direct
                     logit attribution (W_out[n] * ln_final scale @ W_U; mine.logits; a latent's
                     W_dec[i] in place of W_out[n])
  dlogit_suppressed  the same for the k most suppressed tokens
  dlogit_named       the same for the output words the explanation names ("often before X")
  direction          fraction of positions where the unit's value changed and dlogit_promoted
                     has the sign of (new value - old value): the direction the unit's output
                     weights imply (removing a positive activation should lower the promoted
                     tokens). For patch, the explanation also implies that removing its key
                     words removes the activation: a position counts only if the edit moved the
                     unit towards 0 by at least min_drop (0.5) of its clean value.

The 'intervention' score of an explanation is the patch's direction fraction: the share of active
top-context positions where the explanation's counterfactual edit removes (most of) the unit's
activation and, through the unit alone, lowers the promoted tokens. An explanation whose key words
do not occur in, or do not drive, the top contexts scores near 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from ..models.hooked import ablate, patch_value
from .probes import norm_word, word_ids
from .site import unit_logit_effect, unit_site


class ModeEffect(BaseModel):
    mode: str
    n: int
    kl: float | None
    dlogit_promoted: float | None
    dlogit_suppressed: float | None
    dlogit_named: float | None = None
    dvalue: float | None = None        # mean (new - old) unit value at the positions
    direction: float | None = None     # fraction of positions with the implied sign


class InterventionResult(BaseModel):
    n_records: int
    n_positions: int
    promoted: list[str]
    suppressed: list[str]
    named: list[str] = []
    modes: dict[str, ModeEffect] = {}
    key_words: list[str] = []
    n_edited: int = 0                  # contexts the counterfactual changed (a key word occurred)
    act_drop: float | None = None      # mean (clean - counterfactual) / clean unit value at the peaks
    named_direction_ok: bool | None = None
    records: list[dict] = []

    @property
    def value(self) -> float | None:
        m = self.modes.get("patch")
        return None if m is None else (m.direction or 0.0)


def _key_positions(ids: Sequence[int], first_pos: int, key_seqs: list[list[int]], key_norms: set[str], decode) -> list[int]:
    """Positions in `ids` (text part) holding a key word: its exact token sequence, or a single
    token whose stripped lower-cased text equals a key word."""
    hit = set()
    for seq in key_seqs:
        n = len(seq)
        for i in range(first_pos, len(ids) - n + 1):
            if list(ids[i:i + n]) == seq:
                hit.update(range(i, i + n))
    for i in range(first_pos, len(ids)):
        if i not in hit and norm_word(decode(ids[i])) in key_norms:
            hit.add(i)
    return sorted(hit)


def _logits_at(hm, ids, mask, hooks=None) -> torch.Tensor:
    """[n_selected, vocab] logits at the positions where mask is True (row-major order); the
    unembedding runs on those positions only (it dominates the cost for large vocabularies)."""
    run = hm.forward(ids, None, cache=["ln_final.out"], hooks=hooks, return_logits=False)
    return hm.unembed(run["ln_final.out"][mask]).float()


@torch.no_grad()
def intervene(hm, unit, records: Sequence, *, unit_max: float, mean_act: float | None, frac: float = 0.25,
              key_words: Sequence[str] = (), named: Sequence[str] = (), filler_id: int | None = None,
              first_pos: int = 1, k: int = 10, batch_size: int = 16, min_drop: float = 0.5, base: dict | None = None) -> tuple[InterventionResult, dict]:
    """Run zero/mean ablation and the counterfactual patch on `records` (top records with
    input_ids). Returns (result, base) where base caches the explanation-independent part (clean
    run, zero/mean effects) for the next explanation of the same unit."""
    hook, n = unit_site(hm, unit)          # an SAE latent: its latents point, where an edit splices the SAE in
    recs = [r for r in records if r.input_ids]
    eff = unit_logit_effect(hm, unit)
    prom = eff.topk(k).indices
    supp = eff.topk(k, largest=False).indices
    dec = lambda i: hm.tokenizer.decode([int(i)])
    named_ids = sorted({s[0] for w in named if (s := word_ids(hm.tokenizer, w))})
    named_t = torch.tensor(named_ids, dtype=torch.long, device=hm.device) if named_ids else None

    key_seqs = [s for w in key_words if (s := word_ids(hm.tokenizer, w))]
    key_norms = {norm_word(w) for w in key_words}
    thr = frac * unit_max

    if base is None:
        base = {"batches": []}
        for a in range(0, len(recs), batch_size):
            chunk = recs[a:a + batch_size]
            L = min(len(r.input_ids) for r in chunk)
            ids = torch.tensor([r.input_ids[:L] for r in chunk], device=hm.device)
            run = hm.forward(ids, None, cache=[hook, "ln_final.out"], return_logits=False)
            act = run[hook][..., n].float()
            mask = act >= thr
            mask[:, :first_pos] = False
            peak = act[:, first_pos:].argmax(dim=1) + first_pos
            mask[torch.arange(len(chunk)), peak] = True
            row_of = torch.cumsum(mask.reshape(-1).long(), 0).reshape(mask.shape) - 1   # row of a selected position
            b = {"ids": ids, "logits": hm.unembed(run["ln_final.out"][mask]).float(), "act": act, "mask": mask,
                 "peak": peak, "peak_row": row_of[torch.arange(len(chunk)), peak], "ctx": [r.ctx_idx for r in chunk]}
            modes = {"zero": ablate("zero", positions=mask, neurons=[n])}
            if mean_act is not None:
                modes["mean"] = ablate("mean", reference=torch.tensor(float(mean_act)), positions=mask, neurons=[n])
            b["effects"] = {}
            for m, fn in modes.items():
                lg = _logits_at(hm, ids, mask, {hook: fn})
                new = torch.zeros_like(act) if m == "zero" else torch.full_like(act, float(mean_act))
                b["effects"][m] = (lg, new)
            base["batches"].append(b)

    acc: dict[str, dict[str, list]] = {}
    rows: list[dict] = []
    n_edited, drops = 0, []
    for b in base["batches"]:
        ids, clean, act, mask = b["ids"], b["logits"], b["act"], b["mask"]
        effects = dict(b["effects"])
        # the counterfactual: key-word positions swapped for the filler, unit value patched in
        cf_ids = ids.clone()
        edited = []
        for i in range(ids.shape[0]):
            pos = _key_positions(ids[i].tolist(), first_pos, key_seqs, key_norms, dec) if filler_id is not None else []
            for p in pos:
                cf_ids[i, p] = filler_id
            edited.append(pos)
        if any(edited):
            cf = hm.forward(cf_ids, None, cache=[hook], return_logits=False, stop_at_layer=unit.layer + 1)[hook]
            lg = _logits_at(hm, ids, mask, {hook: patch_value(cf, positions=mask, neurons=[n])})
            new = cf[..., n].float()
        else:
            lg, new = clean, act.clone()
        effects["patch"] = (lg, new)
        for i in range(ids.shape[0]):
            n_edited += bool(edited[i])
            pk = int(b["peak"][i])
            if act[i, pk] > 0:
                drops.append(float((act[i, pk] - effects["patch"][1][i, pk]) / act[i, pk]))
        lp_clean = F.log_softmax(clean, dim=-1)
        for m, (lg, new) in effects.items():
            lp = F.log_softmax(lg, dim=-1)
            kl = (lp_clean.exp() * (lp_clean - lp)).sum(-1)                    # [n_selected]
            d = lg - clean
            dp, ds = d[..., prom].mean(-1), d[..., supp].mean(-1)
            dn = d[..., named_t].mean(-1) if named_t is not None else None
            dv, av = (new - act)[mask], act[mask]
            a = acc.setdefault(m, {"kl": [], "dp": [], "ds": [], "dn": [], "dv": [], "ok": []})
            a["kl"] += kl.tolist()
            a["dp"] += dp.tolist()
            a["ds"] += ds.tolist()
            a["dv"] += dv.tolist()
            if dn is not None:
                a["dn"] += dn.tolist()
            same = torch.sign(dp) == torch.sign(dv)
            if m == "patch":   # the edit must remove at least `min_drop` of the activation
                moved = dv * torch.sign(av) <= -min_drop * av.abs()
            else:
                moved = dv.abs() > 1e-6 * max(1.0, unit_max)
            a["ok"] += (moved & same).tolist()
        for i in range(ids.shape[0]):
            pk, pr = int(b["peak"][i]), int(b["peak_row"][i])
            rows.append({"ctx_idx": b["ctx"][i], "peak_pos": pk, "act": round(float(act[i, pk]), 4),
                         "n_active": int(mask[i].sum()), "edited_pos": edited[i],
                         "cf_act": round(float(effects["patch"][1][i, pk]), 4),
                         **{f"dlogit_promoted_{m}": round(float((lg[pr] - clean[pr])[prom].mean()), 5)
                            for m, (lg, _) in effects.items()}})

    def mean(xs):
        return round(float(sum(xs) / len(xs)), 6) if xs else None

    modes = {m: ModeEffect(mode=m, n=len(a["kl"]), kl=mean(a["kl"]), dlogit_promoted=mean(a["dp"]),
                           dlogit_suppressed=mean(a["ds"]), dlogit_named=mean(a["dn"]), dvalue=mean(a["dv"]),
                           direction=mean([float(x) for x in a["ok"]])) for m, a in acc.items()}
    z = modes.get("zero")
    named_ok = None
    if z is not None and z.dlogit_named is not None and z.dvalue:
        named_ok = bool((z.dlogit_named > 0) == (z.dvalue > 0))
    res = InterventionResult(
        n_records=len(recs), n_positions=z.n if z else 0, promoted=[dec(i) for i in prom.tolist()],
        suppressed=[dec(i) for i in supp.tolist()], named=[dec(i) for i in named_ids], modes=modes,
        key_words=list(key_words), n_edited=n_edited, act_drop=mean(drops), named_direction_ok=named_ok, records=rows)
    return res, base
