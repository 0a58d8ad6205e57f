"""Shared pieces of patching: the tokenised dataset, the metric, components and their masks.

Metric. The logit difference LD = logit(answer) - logit(wrong) at each prompt's last token,
averaged over the dataset. Effects are normalised by the clean-vs-corrupt gap:

    denoising (run the corrupt prompt, patch in clean activations):
        effect = (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt)   0 = nothing recovered, 1 = clean run
    noising   (run the clean prompt, patch in corrupt activations):
        effect = (LD_patched - LD_clean)   / (LD_clean - LD_corrupt)   0 = no change, -1 = corrupt run

i.e. on both directions the normalised metric has 0 = corrupt run and 1 = clean run, and an
effect is the change it makes against the unpatched run (so |effect| ranks components either way).
If the gap is ~0 (|clean - corrupt| < 1e-6: core/stats.py, the one zero-gap rule) effects are reported
unnormalised (raw logit-diff change).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from pydantic import BaseModel, Field

from ..core.hooks import act_name, parse_hook
from ..core.stats import gap_divisor
from ..core.units import Unit
from ..errors import DatasetError, UsageError
from ..tasks.items import PairItem
from ..tasks.validate import single_token_in_context

WHATS = ("resid", "heads", "heads_pos", "mlp", "attn", "neurons")
DIRECTIONS = ("denoising", "noising")
FINAL = act_name("ln_final.out")


class PatchResult(BaseModel):
    what: str
    method: str                       # activation | attribution | path | dla
    direction: str | None = None
    clean_logit_diff: float
    corrupt_logit_diff: float
    normalised: bool = True
    n_items: int
    results: list[dict]               # {"component", "layer", "position", "effect"}, sorted by |effect|
    settings: dict = Field(default_factory=dict)
    run_id: int | None = None
    reused: bool = False

    def effects(self) -> dict[tuple[str, int | None], float]:
        return {(r["component"], r.get("position")): r["effect"] for r in self.results}

    def to_json(self) -> dict:
        return {"clean_logit_diff": self.clean_logit_diff, "corrupt_logit_diff": self.corrupt_logit_diff,
                "what": self.what, "method": self.method, "direction": self.direction, "n_items": self.n_items,
                "normalised": self.normalised, "run_id": self.run_id, "settings": self.settings,
                "results": self.results}


@dataclass
class Batch:
    clean: torch.Tensor        # [B, p] token ids
    corrupt: torch.Tensor      # [B, p]
    mask: torch.Tensor         # [B, p]
    last: torch.Tensor         # [B] index of the last real token
    ans: torch.Tensor          # [B]
    wrong: torch.Tensor        # [B]

    @property
    def size(self) -> int:
        return self.clean.shape[0]

    @property
    def seq_len(self) -> int:
        return self.clean.shape[1]


@dataclass
class Data:
    batches: list[Batch]
    n_items: int
    max_len: int
    str_tokens: list[str] = field(default_factory=list)   # tokens of the first clean prompt (plot labels)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)


def prepare(hm, items: Sequence[PairItem], batch_size: int = 32) -> Data:
    """Tokenise the items (right-padded batches); check clean/corrupt line up and answers are single tokens."""
    if not items:
        raise DatasetError("the dataset is empty")
    batches = []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        ci, cm = hm.tokenize([it.clean for it in chunk])
        xi, xm = hm.tokenize([it.corrupt for it in chunk])
        if ci.shape != xi.shape or not torch.equal(cm, xm):
            bad = next((s + i for i in range(len(chunk)) if int(cm[i].sum()) != int(xm[i].sum())), s)
            raise DatasetError(f"item {bad}: clean and corrupt have different token counts on {hm.spec}; "
                               "re-validate the dataset on this model (autointerp pairs --import FILE)")
        ans, wrong = [], []
        for i, it in enumerate(chunk):
            a = single_token_in_context(hm, it.clean, it.answer)
            w = single_token_in_context(hm, it.clean, it.wrong)
            if a is None or w is None:
                raise DatasetError(f"item {s + i}: {'answer' if a is None else 'wrong answer'} is not a single token "
                                   f"on {hm.spec}; re-validate the dataset on this model")
            ans.append(a)
            wrong.append(w)
        dev = ci.device
        batches.append(Batch(ci, xi, cm, cm.sum(1) - 1, torch.tensor(ans, device=dev), torch.tensor(wrong, device=dev)))
    first = batches[0]
    n0 = int(first.mask[0].sum())
    return Data(batches, len(items), max(b.seq_len for b in batches), hm.to_str_tokens(first.clean[0, :n0]))


def logit_diff_from_final(hm, final: torch.Tensor, b: Batch, reps: int = 1) -> torch.Tensor:
    """[reps*B] logit differences from ln_final.out [reps*B, p, d] of a batch repeated `reps` times."""
    rows = torch.arange(final.shape[0], device=final.device)
    last = b.last.repeat(reps)
    x = final[rows, last]
    logits = hm.unembed(x)
    return logits[rows, b.ans.repeat(reps)] - logits[rows, b.wrong.repeat(reps)]


def run_ld(hm, ids: torch.Tensor, b: Batch, *, reps: int = 1, hooks=None, cache=(), grad: bool = False,
           stop_at_layer=None):
    """(LD per row, the run) of ids [reps*B, p] with hooks."""
    mask = b.mask.repeat(reps, 1)
    run = hm.forward(ids, mask, cache=[FINAL, *cache], hooks=hooks or {}, return_logits=False, grad=grad)
    return logit_diff_from_final(hm, run.cache[FINAL], b, reps), run


# ----------------------------------------------------------------------------- components


@dataclass(frozen=True)
class Component:
    name: str                 # "L9/H9", "L3/N42", "blocks.3.resid_pre", "blocks.3.mlp.out"
    hook: str                 # the hook point patched
    layer: int
    position: int | None = None   # None: all positions
    head: int | None = None
    neuron: int | None = None


def components_for(hm, what: str, max_len: int, *, layer: int | None = None, per_position: bool | None = None,
                   layers: Sequence[int] | None = None) -> list[Component]:
    if what not in WHATS:
        raise UsageError(f"unknown --what {what!r}: use {', '.join(WHATS)}")
    if per_position is None:
        per_position = what in ("resid", "heads_pos")
    Ls = list(layers) if layers is not None else list(range(hm.n_layers))
    positions: list[int | None] = list(range(max_len)) if per_position else [None]
    out: list[Component] = []
    if what == "resid":
        out = [Component(act_name("resid_pre", L), act_name("resid_pre", L), L, p) for L in Ls for p in positions]
    elif what in ("heads", "heads_pos"):
        out = [Component(Unit.head(L, h).id, act_name("attn.z", L), L, p, head=h)
               for L in Ls for h in range(hm.n_heads) for p in positions]
    elif what in ("mlp", "attn"):
        pt = "mlp.out" if what == "mlp" else "attn.out"
        out = [Component(act_name(pt, L), act_name(pt, L), L, p) for L in Ls for p in positions]
    elif what == "neurons":
        if layer is None:
            raise UsageError("--what neurons needs --layer L")
        if not 0 <= layer < hm.n_layers:
            raise UsageError(f"--layer {layer} out of range (model has layers 0..{hm.n_layers - 1})")
        out = [Component(Unit.neuron(layer, n).id, act_name("mlp.post", layer), layer, p, neuron=n)
               for n in range(hm.d_mlp) for p in positions]
    return out


def component_named(name: str) -> Component:
    """The all-positions component a result row names: a unit id (L9/H9, L3/N42) or a layer-wide
    hook name (blocks.3.mlp.out, blocks.3.resid_pre)."""
    if Unit.is_id(name):
        u = Unit.parse(name)
        return Component(name, u.hook, u.layer, None, **{u.record.axis: u.index})
    L, site = parse_hook(name)        # TransformerLens' spelling names the same component
    if L is None:
        raise UsageError(f"component {name!r}: use a unit id (L9/H9) or a per-layer hook name (blocks.3.mlp.out)")
    hook = act_name(site, L)
    return Component(hook, hook, L, None)


def components_named(names: Sequence[str]) -> list[Component]:
    return [component_named(n) for n in names]


def selection_mask(comps: Sequence[Component | None], value_shape: Sequence[int], device) -> torch.Tensor:
    """Bool mask [k, 1, p, ...] over a hook value's non-batch shape; row j selects component j
    (rows of None or of another hook select nothing). value_shape = (p, ...) without the batch."""
    p = value_shape[0]
    nd = len(value_shape)
    if nd == 3:      # heads layout [p, H, dh] -> mask [k, 1, p, H, 1]
        m = torch.zeros(len(comps), 1, p, value_shape[1], 1, dtype=torch.bool, device=device)
    elif any(c is not None and c.neuron is not None for c in comps):
        m = torch.zeros(len(comps), 1, p, value_shape[1], dtype=torch.bool, device=device)
    else:            # [p, d] -> [k, 1, p, 1]
        m = torch.zeros(len(comps), 1, p, 1, dtype=torch.bool, device=device)
    for j, c in enumerate(comps):
        if c is None:
            continue
        pos = slice(None) if c.position is None else c.position
        if c.position is not None and c.position >= p:
            continue
        if nd == 3:
            m[j, 0, pos, c.head if c.head is not None else slice(None), 0] = True
        elif m.shape[-1] > 1:
            m[j, 0, pos, c.neuron if c.neuron is not None else slice(None)] = True
        else:
            m[j, 0, pos, 0] = True
    return m


def by_hook(comps: Sequence[Component]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for j, c in enumerate(comps):
        out.setdefault(c.hook, []).append(j)
    return out


def normalise(value: float, base: float, clean: float, corrupt: float) -> tuple[float, bool]:
    gap, normed = gap_divisor(clean, corrupt)      # the zero-gap rule: core/stats.py
    return (value - base) / gap, normed


def mean_effects(sums, clean_sum: float, corrupt_sum: float, n: int, denoise: bool) -> tuple[float, float, list[float], bool]:
    """Per-component summed logit differences -> (mean clean, mean corrupt, normalised effects,
    whether they are normalised). Denoising measures from the corrupt run, noising from the clean."""
    clean, corrupt = clean_sum / n, corrupt_sum / n
    base = corrupt if denoise else clean
    effects, normed = [], True
    for v in (sums / n).tolist():
        e, normed = normalise(v, base, clean, corrupt)
        effects.append(e)
    return clean, corrupt, effects, normed


def sort_results(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (-abs(r["effect"]), r["component"], -1 if r.get("position") is None else r["position"]))
