"""The records of a mining run as small typed objects, read back from the store without any
tokenizer or model: contexts carry their decoded tokens (contexts.tokens_json).

    run = find_run(store, "smollm2-135m", unit="L3/N42")
    ex = load_exemplars(store, run.id, "L3/N42")
    ex.top[0].tokens, ex.top[0].acts, ex.stats.max_act, ex.promoted[:3]

Every record's `tokens`, `acts` and `attn` are aligned: they cover the text positions of the
context (from `first_pos` on; position 0 is the BOS when the tokenizer has one). `input_ids` is
everything the model saw, so `hm.forward(torch.tensor([r.input_ids]))` reproduces the record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ..errors import UnitError, UsageError
from ..core.keys import unpack_f16
from ..core.units import Unit, parse_units

RecordKind = Literal["top", "quantile", "random", "top_attn", "probe"]


class ActivationRecord(BaseModel):
    ctx_idx: int
    kind: str                      # top | quantile | random | top_attn
    bin: int = 0                   # rank (top, top_attn), quantile bin (0 = lowest), 0 (random)
    tokens: list[str]
    acts: list[float]              # one per token: the neuron's (or SAE latent's) activation, or for heads the norm of the
                                   # head's output (top, random) / its max attention to a non-first key (top_attn)
    max_act: float
    attn: list[float] | None = None        # heads: attention row of the peak query position over `tokens`
    input_ids: list[int] = []              # the full context the model saw (BOS included)


class UnitStats(BaseModel):
    max_act: float | None = None
    mean_act: float | None = None
    std_act: float | None = None
    frac_active: float | None = None
    hist: dict | None = None       # {"edges": [21], "counts": [20], "sample_tokens": n} (reservoir sample)


class UnitExemplars(BaseModel):
    model_id: str
    run_id: str
    unit: str
    first_pos: int = 0
    stats: UnitStats
    top: list[ActivationRecord]                 # by max activation (heads: by output norm), rank order
    quantiles: list[ActivationRecord]           # by bin (ascending), then max_act
    random: list[ActivationRecord]
    top_attn: list[ActivationRecord] = []       # heads only
    promoted: list[tuple[str, float]] = []      # neurons only: direct logit effect, most promoted first
    suppressed: list[tuple[str, float]] = []


class MiningRun(BaseModel):
    id: str
    model_id: str
    corpus: str
    corpus_id: str
    context_len: int
    layers: list[int]
    units: str
    n_contexts: int
    n_tokens: int
    status: str
    settings: dict
    stats: dict | None = None
    created_at: str
    updated_at: str

    def covers(self, unit: str | Unit) -> bool:
        u = Unit.parse(unit) if isinstance(unit, str) else unit
        if u.record.needs_sae:               # an SAE latent: mined when the run mined that SAE (by name)
            return any(s.get("name") == u.sae and s.get("layer") == u.layer and 0 <= u.index < s.get("d_sae", 0)
                       for s in self.settings.get("saes", []))
        return u.layer in self.layers and u.kind in self.kinds()

    def kinds(self) -> set[str]:
        """The names of the unit kinds the run mined at its layers (not its SAEs' latents). A kind
        not registered in this process is left out (the run mined it; nothing here can ask)."""
        names: set[str] = set()
        for part in self.units.split(","):
            try:
                names |= {k.name for k in parse_units(part)}
            except UnitError:
                pass
        return names


def _run(row: dict) -> MiningRun:
    s = row["settings"]
    return MiningRun(id=row["id"], model_id=row["model_id"], corpus=row.get("corpus_name") or s.get("corpus", ""),
                     corpus_id=row["corpus_id"], context_len=int(s.get("context_len") or row.get("context_len") or 0),
                     layers=list(s.get("layers", [])), units=s.get("units", "neurons"), n_contexts=int(row["n_done"]),
                     n_tokens=int(row["n_done"]) * int(s.get("context_len") or 0), status=row["status"], settings=s,
                     stats=row.get("stats"), created_at=row["created_at"], updated_at=row["updated_at"])


run_from_row = _run  # the public name for other packages (batch/plan.py still imports _run)


def find_run(store, model_id: str, corpus: str | None = None, context_len: int | None = None,
             unit: str | Unit | None = None) -> MiningRun | None:
    """The latest finished mining run of a model (optionally: on this corpus name/id, with this
    context length, covering this unit), or None."""
    for row in store.find_mining_runs(model_id, corpus=corpus, context_len=context_len, status="done"):
        run = _run(row)
        if unit is None or run.covers(unit):
            return run
    return None


def get_run(store, run_id: str) -> MiningRun | None:
    row = store.get_mining_run(run_id)
    if row is None:
        return None
    corpus = store.get_corpus(row["corpus_id"])
    row["corpus_name"] = corpus["name"] if corpus else None
    return _run(row)


def _record(r: dict, first_pos: int) -> ActivationRecord:
    import json

    from ..core.keys import unpack_i32

    acts = unpack_f16(r["acts"]).tolist()
    tokens = json.loads(r["tokens_json"]) if r.get("tokens_json") else [""] * len(acts)
    ids = unpack_i32(r["token_ids"]).tolist() if r.get("token_ids") is not None else []
    attn = unpack_f16(r["extra"]).tolist() if r.get("extra") else None
    return ActivationRecord(ctx_idx=r["ctx_idx"], kind=r["kind"], bin=r["bin"], tokens=tokens, acts=acts,
                            max_act=r["max_act"], attn=attn, input_ids=ids)


def load_exemplars(store, run_id: str, unit: str | Unit) -> UnitExemplars:
    """All that a mining run stored for one unit. Needs no tokenizer and no model."""
    u = Unit.parse(unit) if isinstance(unit, str) else unit
    run = get_run(store, run_id)
    if run is None:
        raise UsageError(f"no mining run {run_id!r} in the store (run `autointerp mine` first)")
    if not run.covers(u):
        raise UnitError(f"{u} was not mined by run {run_id} (layers {run.layers}, units {run.units})")
    if run.status != "done":
        raise UsageError(f"mining run {run_id} is not finished ({run.n_contexts} contexts so far): rerun `autointerp mine`")
    fp = int(run.settings.get("first_pos", 0))
    by_kind: dict[str, list[ActivationRecord]] = {}
    for r in store.get_records(run_id, str(u)):
        by_kind.setdefault(r["kind"], []).append(_record(r, fp))
    st = store.get_unit_stats(run_id, str(u)) or {}
    logits = store.get_unit_logits(run.model_id, str(u)) if u.record.logits else None
    quant = sorted(by_kind.get("quantile", []), key=lambda r: (r.bin, r.max_act))
    return UnitExemplars(
        model_id=run.model_id, run_id=run_id, unit=str(u), first_pos=fp,
        stats=UnitStats(**{k: st.get(k) for k in ("max_act", "mean_act", "std_act", "frac_active", "hist")}),
        top=sorted(by_kind.get("top", []), key=lambda r: r.bin), quantiles=quant,
        random=sorted(by_kind.get("random", []), key=lambda r: r.ctx_idx),
        top_attn=sorted(by_kind.get("top_attn", []), key=lambda r: r.bin),
        promoted=[tuple(x) for x in (logits or {}).get("promoted", [])],
        suppressed=[tuple(x) for x in (logits or {}).get("suppressed", [])])
