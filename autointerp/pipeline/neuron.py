"""The neuron pipeline: records -> split -> explain (best of k on calibration) + baseline ->
score (LLM simulation, exact simulation, detection, fuzzing, each with its null control) -> store.

    from autointerp.pipeline import explain_unit, show_unit
    res = explain_unit(store, "L3/N42", model_spec="smollm2-135m", llm="embedded:smollm2-135m")
    print(res.explanation.text, res.explanation.scores["simulation"].value)

Stages never call each other: explain/ writes explanations, score/ scores them, store/ keeps them;
this module composes them. A unit's explanations and scores are committed in one transaction,
so a failed run leaves nothing half-done. Every stored row is keyed by a content hash of what
determines it, so an identical re-run is a cache hit that calls no LLM.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from ..core.format import unit_max_of
from ..core.keys import content_hash
from ..core.subjects import Subject
from ..core.units import Unit
from ..errors import LLMError, UsageError
from ..explain.api import baseline_explanation, choose_style, pairs, write_candidates
from ..score.controls import control_explanation
from ..score.metrics import pearson, pooled_correlation
from ..score.registry import SCORERS, check_scorers, default_scorers
from ..score.scorers import ScoreRecord
from ..score.splits import SplitSizes, Splits, records_hash, split_records

# bump when a change in this pipeline should invalidate stored explanations/scores
PIPELINE_VERSION = 2


class ExplainSettings(BaseModel):
    k: int = 3                            # explanations sampled; the best on calibration is kept
    seed: int = 0
    temperature: float = 0.8              # sampling temperature for k > 1 (k == 1: greedy)
    max_tokens: int = 40                  # explanation length cap (tokens)
    max_chars: int = 300                  # an explanation longer than this is rejected
    window: int | None = 24               # tokens of each train record shown around its peak
    style: str = "auto"                   # auto | completion | chat
    simulator: str = "auto"               # auto | logprobs | json
    scorers: tuple[str, ...] = Field(default_factory=default_scorers)   # names in score/registry.py
    explainer: str = "llm"                # llm | baseline (baseline: no LLM at all, exact scores only)
    sizes: SplitSizes = Field(default_factory=SplitSizes)
    n_boot: int = 1000
    active_frac: float = 0.25             # detection/fuzzing: active means >= frac * unit max
    n_spare: int = 4                      # extra quantile records for detection/fuzzing
    control: bool = True                  # score a mismatched explanation on the same records

    def check(self) -> "ExplainSettings":
        check_scorers(self.scorers)
        if self.k < 1:
            raise UsageError("--k must be at least 1")
        if self.explainer not in ("llm", "baseline"):
            raise UsageError(f"--explainer: {self.explainer!r}: use llm or baseline")
        if not 0 < self.active_frac <= 1:
            raise UsageError("active_frac must be in (0, 1]")
        return self



class ExplanationOut(BaseModel):
    id: int
    key: str
    explainer: str
    method: str
    text: str
    cached: bool = False
    candidates: list[dict] = []           # best-of-k: each candidate and its calibration score
    rejected: list[dict] = []             # LLM replies that were not explanations, with the reason
    scores: dict[str, ScoreRecord] = {}


class RecordOut(BaseModel):
    ctx_idx: int
    kind: str
    tokens: list[str]
    acts: list[float]
    simulated: list[float] | None = None          # the LLM explanation's simulation
    simulated_baseline: list[float] | None = None
    exact_baseline: list[float] | None = None     # the baseline's exact (rule) simulation


class ExplainResult(BaseModel):
    model_id: str
    unit: str
    run_id: str | None
    max_act: float
    stats: dict = {}
    promoted: list = []
    suppressed: list = []
    explanation: ExplanationOut | None
    baseline: ExplanationOut
    control: str | None = None            # the control explanation every score is compared with
    calibration: dict | None = None       # the simulator LLM's stored calibration (or None: uncalibrated)
    top_records: list[RecordOut] = []
    test_records: list[RecordOut] = []
    split_sizes: dict[str, int] = {}
    timings: dict[str, float] = {}
    mined: bool = False


def _llm_name(llm) -> str:
    return getattr(llm, "name", None) or type(llm).__name__


def _stats_dict(stats: Any) -> dict:
    if stats is None:
        return {}
    return stats.model_dump() if hasattr(stats, "model_dump") else dict(stats)


# ---- scorers for one run --------------------------------------------------------------------------
class Scoring:
    """The scorers of one run, built once (their simulations are memoised across explanations)."""

    def __init__(self, sim_llm, s: ExplainSettings, unit_kind: str | None = None):
        self.s = s
        # the simulation scorer also picks the best of k explanations on the calibration split
        self.sim = SCORERS["simulation"].build(sim_llm, s) if ("simulation" in s.scorers or s.k > 1) else None
        self.scorers = []                 # (spec, scorer) in registry order
        for name, spec in SCORERS.items():
            if name in s.scorers and spec.applies_to(unit_kind):
                sc = self.sim if name == "simulation" else spec.build(sim_llm, s)
                if sc is not None:
                    self.scorers.append((spec, sc))

    def all(self) -> list:
        return [sc for _, sc in self.scorers]

    def score(self, store, expl_key: str, text: str, splits: Splits, unit_max: float, control: str | None,
              rule=None) -> tuple[dict[str, ScoreRecord], list[dict]]:
        """Scores of one explanation: (by kind, rows to store). Stored scores are reused."""
        out: dict[str, ScoreRecord] = {}
        rows: list[dict] = []
        rec_key = (records_hash(splits.test_top), records_hash(splits.test_random),
                   records_hash(splits.spare[: self.s.n_spare])) + (("active>0",) if splits.sparse else ())
        for spec, sc in self.scorers:
            key = content_hash(PIPELINE_VERSION, sc.identity(), expl_key, control if self.s.control else None, rec_key)
            got = {k: store.get_score(f"{key}:{k}") for k in sc.kinds} if store is not None else {}
            if got and all(v is not None for v in got.values()):
                out.update({k: _from_row(v) for k, v in got.items()})
                continue
            kw = {"rule": rule} if spec.rule else {}
            recs = sc.score(text, splits, unit_max, control=control if self.s.control else None, **kw)
            for r in recs:
                out[r.kind] = r
                rows.append({"key": f"{key}:{r.kind}", **r.model_dump()})
        return out, rows


def _from_row(row: dict) -> ScoreRecord:
    return ScoreRecord(**{k: row.get(k) for k in ScoreRecord.model_fields if k in row})


def _fidelity(llm_sc: ScoreRecord | None, exact_sc: ScoreRecord | None) -> float | None:
    """Pearson r of the LLM's simulation of the baseline text against its exact simulation:
    how faithfully the LLM simulator reads a text whose literal meaning is known."""
    if llm_sc is None or exact_sc is None or not isinstance(llm_sc.details, dict) or not isinstance(exact_sc.details, dict):
        return None
    a = [v for r in llm_sc.details.get("records", []) for v in r["simulated"]]
    b = [v for r in exact_sc.details.get("simulated", []) for v in r]
    return pearson(a, b) if a and len(a) == len(b) else None


# ---- the pipeline on exemplars already mined -----------------------------------------------------
def explain_exemplars(store, ex, llm, *, subject: Subject | None = None, model_id: str | None = None,
                      settings: ExplainSettings | None = None, simulator_llm=None) -> ExplainResult:
    """Explain and score one subject from its exemplars (a UnitExemplars: top records, quantiles,
    random records). subject: what they are the exemplars of (core/subjects.py; default: the unit
    ex.unit of model_id or ex.model_id); a model diff's side is one too. `llm` writes the
    explanations; `simulator_llm` (default: the same) simulates and judges. With
    settings.explainer == 'baseline' no LLM is used: the baseline and its exact score only."""
    from ..llm import load_prompt

    s = (settings or ExplainSettings()).check()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    model_id = model_id or ex.model_id
    subject = subject or Subject.of_unit(model_id, ex.unit)
    unit = subject.id
    columns = subject.columns(ex.run_id)               # whose explanation a stored row is
    unit_max = unit_max_of(ex)
    promoted, suppressed = pairs(ex.promoted), pairs(ex.suppressed)
    splits = split_records(unit, ex.top, ex.random, ex.quantiles, s.sizes)
    if not splits.train:
        raise UsageError(f"{unit} has no top records in run {ex.run_id}; mine more text")
    if not splits.test:
        raise UsageError(f"{unit}: run {ex.run_id} has too few records for a test split ({len(ex.top)} top, "
                         f"{len(ex.random)} random from other contexts); mine more text (e.g. --n-tokens 16384)")
    use_llm = s.explainer == "llm" and llm is not None
    sim_llm = (simulator_llm or llm) if use_llm else None
    # without an LLM: the scorers that need none (the rule's exact simulation always: it scores the baseline)
    no_llm = tuple(n for n, sp in SCORERS.items() if not sp.needs_llm and (n in s.scorers or sp.rule))
    scoring = Scoring(sim_llm, s if use_llm else s.model_copy(update={"scorers": no_llm, "k": 1}), subject.kind)
    train_hash = records_hash(splits.train)

    # -- the baseline (no LLM)
    b_text = baseline_explanation(splits.train, unit_max, promoted)
    b_key = content_hash(PIPELINE_VERSION, "baseline", model_id, unit, ex.run_id, train_hash, promoted[:3])
    b_cached = store.get_explanation(b_key) is not None
    b_row = dict(key=b_key, **columns, explainer="baseline",
                 method="baseline", text=b_text, records_hash=train_hash, settings={"n_tokens": 5, "n_promoted": 3})

    # -- the LLM explanation, best of k on calibration
    e_row, e_key, cached, rejected, e_text = None, None, False, [], None
    if use_llm:
        style = choose_style(llm, s.style)
        template = load_prompt(f"explain_{style}")
        method = f"{style}-bestof{s.k}" if s.k > 1 else style
        calib_hash = records_hash(splits.calibration)
        simr = scoring.sim.simulator if scoring.sim else None
        e_key = content_hash(PIPELINE_VERSION, "explain", model_id, unit, ex.run_id, _llm_name(llm), method,
                             template.hash, train_hash, calib_hash, s.k, s.seed, s.temperature, s.max_tokens, s.window,
                             s.max_chars, (simr.scorer, simr.method, simr.template.hash) if simr and s.k > 1 else None)
        e_row = store.get_explanation(e_key)
        cached = e_row is not None
        if e_row is None:
            t0 = time.perf_counter()
            cands, rejected = write_candidates(llm, template, splits.train, unit_max, unit=unit, promoted=promoted,
                                               k=s.k, seed=s.seed, temperature=s.temperature, max_tokens=s.max_tokens,
                                               window=s.window, max_chars=s.max_chars)
            if not cands:
                why = "; ".join(sorted({r["reason"] for r in rejected})) or "no reply"
                raise LLMError(f"{_llm_name(llm)} wrote no usable explanation for {unit} ({why}); nothing was stored")
            timings["explain_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            scored = [{"text": c, "calibration": None} for c in cands]
            best = 0
            if len(cands) > 1 and scoring.sim is not None and splits.calibration:
                true = [list(map(float, r.acts)) for r in splits.calibration]
                for c in scored:
                    c["calibration"] = pooled_correlation(true, scoring.sim.simulate(c["text"], splits.calibration).expected)
                best = max(range(len(scored)), key=lambda i: (scored[i]["calibration"], -i))
            timings["calibrate_s"] = time.perf_counter() - t0
            e_row = dict(key=e_key, **columns, explainer=_llm_name(llm), method=method, text=cands[best],
                         template=template.name, template_hash=template.hash, records_hash=train_hash,
                         settings={"k": s.k, "seed": s.seed, "temperature": s.temperature if s.k > 1 else 0.0,
                                   "max_tokens": s.max_tokens, "window": s.window, "style": style,
                                   "calibration_records_hash": calib_hash, "candidates": scored, "best": best,
                                   "rejected": rejected})
        e_text = e_row["text"]

    # -- scores of both, on the test split, each against the same control
    t0 = time.perf_counter()
    control = control_explanation(unit, s.seed, exclude=tuple(t for t in (e_text, b_text) if t)) if s.control else None
    e_scores, e_rows = scoring.score(store, e_key, e_text, splits, unit_max, control) if use_llm else ({}, [])
    b_scores, b_rows = scoring.score(store, b_key, b_text, splits, unit_max, control)
    fid = _fidelity(b_scores.get("simulation"), b_scores.get("simulation_exact"))
    if fid is not None and "simulation" in b_scores:
        b_scores["simulation"].details = {**(b_scores["simulation"].details or {}), "fidelity_to_exact": fid}
        for r in b_rows:
            if r["kind"] == "simulation":
                r["details"] = b_scores["simulation"].details
    timings["score_s"] = time.perf_counter() - t0

    # -- store: both explanations and all their new scores, or nothing
    with store.tx():
        b_id = store.put_explanation(**b_row)
        store.put_scores(b_id, b_rows)
        e_id = None
        if use_llm:
            e_id = e_row["id"] if cached else store.put_explanation(**e_row)
            store.put_scores(e_id, e_rows)
    timings["total_s"] = time.perf_counter() - t_start

    sim_e = _sim_by_ctx(e_scores.get("simulation"))
    sim_b = _sim_by_ctx(b_scores.get("simulation"))
    exb = b_scores.get("simulation_exact")
    ex_b = exb.details.get("simulated") if exb is not None and isinstance(exb.details, dict) else None
    kinds = ["top"] * len(splits.test_top) + ["random"] * len(splits.test_random)
    test_records = [RecordOut(ctx_idx=r.ctx_idx, kind=k, tokens=list(r.tokens), acts=list(map(float, r.acts)),
                              simulated=sim_e.get(r.ctx_idx), simulated_baseline=sim_b.get(r.ctx_idx),
                              exact_baseline=ex_b[i] if ex_b else None)
                    for i, (r, k) in enumerate(zip(splits.test, kinds))]
    top_records = [RecordOut(ctx_idx=r.ctx_idx, kind=r.kind, tokens=list(r.tokens), acts=list(map(float, r.acts)))
                   for r in sorted(ex.top, key=lambda r: -float(r.max_act))[:5]]
    calib = None
    if sim_llm is not None:
        got = store.calibrations(_llm_name(sim_llm))
        calib = {"id": got[0]["id"], "created_at": got[0]["created_at"], **(got[0]["results"].get("summary") or {})} \
            if got else None
    return ExplainResult(
        model_id=model_id, unit=unit, run_id=ex.run_id, max_act=unit_max, stats=_stats_dict(ex.stats),
        promoted=promoted, suppressed=suppressed, control=control, calibration=calib,
        explanation=None if not use_llm else ExplanationOut(
            id=e_id, key=e_key, explainer=e_row["explainer"], method=e_row["method"], text=e_text, cached=cached,
            candidates=(e_row.get("settings") or {}).get("candidates", []),
            rejected=(e_row.get("settings") or {}).get("rejected", []), scores=_strip_details(e_scores)),
        baseline=ExplanationOut(id=b_id, key=b_key, explainer="baseline", method="baseline", text=b_text, cached=b_cached,
                                scores=_strip_details(b_scores)),
        top_records=top_records, test_records=test_records,
        split_sizes={"train": len(splits.train), "calibration_top": len(splits.calib_top),
                     "calibration_random": len(splits.calib_random), "test_top": len(splits.test_top),
                     "test_random": len(splits.test_random), "spare": len(splits.spare)},
        timings={k: round(v, 3) for k, v in timings.items()})


def _sim_by_ctx(score: ScoreRecord | None) -> dict[int, list[float]]:
    if score is None or not isinstance(score.details, dict):
        return {}
    return {r["ctx_idx"]: r["simulated"] for r in score.details.get("records", [])}


def _strip_details(scores: dict[str, ScoreRecord]) -> dict[str, ScoreRecord]:
    """Scores without the bulky per-record details (those are in test_records)."""
    out = {}
    for k, v in scores.items():
        d = v.details
        if isinstance(d, dict):
            d = {kk: vv for kk, vv in d.items() if kk not in ("records", "items", "simulated")}
            if "records" in (v.details or {}):
                d["per_record"] = [r["r"] for r in v.details["records"]]
            if isinstance(d.get("control"), dict):
                d["control"] = {kk: vv for kk, vv in d["control"].items() if kk in ("text", "n_bad", "auroc")}
        out[k] = v.model_copy(update={"details": d})
    return out


# ---- the top-level API --------------------------------------------------------------------------
DEFAULT_MINE_TOKENS = 16384   # what `explain` mines when nothing is stored (one layer, ~30-60 s on CPU)


def find_or_mine(store, model_id: str, unit: Unit, *, run_id=None, corpus=None, n_tokens=None, device="auto",
                 dtype="float32", hm=None, mine_kw: dict | None = None) -> tuple[str, bool, Any]:
    """A done mining run of this model covering the unit, else a new one (just the unit's layer and
    kind, a small slice of the corpus). Returns (run_id, mined_now, hooked model or None)."""
    from .. import mine as M

    if run_id is not None:
        run = M.get_run(store, run_id)
        if run is None:
            raise UsageError(f"no mining run {run_id!r} in {store.path}")
        return run.id, False, hm
    found = M.find_run(store, model_id, corpus=corpus, unit=unit)
    if found is not None:
        return found.id, False, hm
    if hm is None:
        from ..models.hooked import HookedModel

        hm = HookedModel.load(model_id, device=device, dtype=dtype)
    kw = {"n_tokens": n_tokens or DEFAULT_MINE_TOKENS, "layers": [unit.layer], "units": unit.record.plural,
          **(mine_kw or {})}
    if corpus is not None:
        kw["corpus"] = corpus
    return M.mine(hm, store, **kw), True, hm


def explain_unit(store, unit: str | Unit, *, model_spec: str | None = None, llm=None, llm_base_url: str | None = None,
                 run_id: str | None = None, k: int | None = None, settings: ExplainSettings | None = None,
                 corpus: str | None = None, n_tokens: int | None = None, device: str = "auto", dtype: str = "float32",
                 hm=None, simulator_llm=None, mine_kw: dict | None = None, config=None,
                 sae_specs: Sequence[str] | None = None, sae_name: str | None = None) -> ExplainResult:
    """Explain and score one unit, mining its layer first when the store has no run for it.

    model_spec: the subject model (default: config's, smollm2-135m); llm: an LLM object or a spec
    ('embedded:smollm2-135m', 'openai:MODEL'); k overrides settings.k. config: the resolved
    config.Settings (the CLI's; None: the library defaults) for the LLM's defaults (spec, base
    URL, budget, timeouts). Returns an ExplainResult (also stored: explanations incl. the
    baseline, scores, LLM calls). sae_specs (the CLI's --sae, maybe empty; sae_name its
    --sae-name): an SAE latent is bound to one of these SAEs, or to the SAE its @name registered
    in the store, checked against its size and layer, and its layer mined with it; None: the unit
    is taken as given (an SAE latent already bound, mined with `mine_kw`)."""
    from ..config import Settings
    from ..mine import load_exemplars

    cfg = config if config is not None else Settings.defaults()
    model_id = model_spec or cfg.model
    u = unit if isinstance(unit, Unit) else Unit.parse(unit)
    if sae_specs is not None and (sae_specs or u.record.needs_sae):
        from .saes import bind_saes

        u, saes = bind_saes(u, sae_specs, store, sae_name)
        mine_kw = {"saes": [x for x in saes if x.name == u.sae], "units": "latents"}
    s = (settings or ExplainSettings()).model_copy()
    if k is not None:
        s.k = k
    s.check()
    rid, mined, hm = find_or_mine(store, model_id, u, run_id=run_id, corpus=corpus, n_tokens=n_tokens,
                                  device=device, dtype=dtype, hm=hm, mine_kw=mine_kw)
    ex = load_exemplars(store, rid, str(u))
    if s.explainer == "llm" and (llm is None or isinstance(llm, str)):
        llm = make_llm(llm or cfg.llm, store=store, base_url=llm_base_url or cfg.llm_base_url, hm=hm, settings=cfg)
    res = explain_exemplars(store, ex, llm if s.explainer == "llm" else None, model_id=model_id, settings=s,
                            simulator_llm=simulator_llm)
    res.mined = mined
    return res


def make_llm(spec: str, *, store=None, base_url: str | None = None, hm=None, **kw):
    """An LLM from a spec; an embedded LLM of the subject model shares the subject's weights
    (one copy in memory for both roles). The one place this sharing is decided."""
    from ..llm import get_llm

    if hm is not None and spec == f"embedded:{getattr(hm, 'spec', None)}":
        kw.update(model=hm.model, tokenizer=hm.tokenizer)
    return get_llm(spec, store=store, base_url=base_url, **kw)


def show_unit(store, model_id: str, unit: str | Unit) -> dict:
    """All the store knows about a unit: explanations (LLM and baseline) with every score
    (simulation details included), unit statistics, promoted/suppressed tokens, its records with
    tokens and activations. Raises UsageError when the store knows nothing of it."""
    import json

    u = str(unit if isinstance(unit, Unit) else Unit.parse(unit))
    info = store.unit_view(model_id, u)
    if info is None:
        raise UsageError(f"the store {store.path} knows nothing about {u} of {model_id}; run `autointerp explain --unit {u}`")
    for e in info["explanations"] + info["baselines"]:
        txt = e.pop("settings_json", None)
        try:
            e["settings"] = json.loads(txt) if txt else None
        except ValueError:
            e["settings"] = txt
        for sc in e["scores"]:
            full = store.get_score_by_id(sc["id"])
            sc["details"] = full["details"] if full else None
            for c in ("control", "margin", "margin_low", "margin_high", "reason"):
                sc.setdefault(c, full.get(c) if full else None)
    return info
