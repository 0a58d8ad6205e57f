"""explain_unit / show_unit: the neuron pipeline for one unit (mine if needed -> split -> explain
best-of-k -> baseline -> simulate and score -> store), and everything the store knows about a unit.

    from autointerp.explain import explain_unit, show_unit
    res = explain_unit(store, "L3/N42", model_spec="smollm2-135m", llm="embedded:smollm2-135m")
    print(res.explanation.text, res.explanation.scores["simulation"].value)

Every stored row is keyed by a content hash of what determines it (records, templates, models,
settings), so an identical re-run is a cache hit that calls no LLM.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from pydantic import BaseModel, Field

from ..errors import LLMError, UsageError
from ..store.base import content_hash
from ..units import Unit
from ..score.splits import SplitSizes, Splits, records_hash, split_records
from .baseline import baseline_explanation
from .explainer import build_explain_prompt, choose_style, sample_explanations

# bump when a change in this pipeline should invalidate stored explanations/scores
PIPELINE_VERSION = 1
SIM_KINDS = ("simulation", "simulation_top", "simulation_random")


class ExplainSettings(BaseModel):
    k: int = 3                            # explanations sampled; the best on calibration is kept
    seed: int = 0
    temperature: float = 0.8              # sampling temperature for k > 1 (k == 1: greedy)
    max_tokens: int = 40                  # explanation length cap
    window: int | None = 24               # tokens of each train record shown around its peak
    style: str = "auto"                   # auto | completion | chat
    simulator: str = "auto"               # auto | logprobs | json
    scorers: tuple[str, ...] = ("simulation", "detection", "fuzzing")
    sizes: SplitSizes = Field(default_factory=SplitSizes)
    n_boot: int = 1000
    active_frac: float = 0.25             # detection/fuzzing: active means >= frac * unit max
    n_spare: int = 4                      # extra quantile records for detection/fuzzing


class ScoreOut(BaseModel):
    kind: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    scorer: str | None = None
    details: Any = None


class ExplanationOut(BaseModel):
    id: int
    key: str
    explainer: str
    method: str
    text: str
    cached: bool = False
    candidates: list[dict] = []           # best-of-k: each candidate and its calibration score
    scores: dict[str, ScoreOut] = {}


class RecordOut(BaseModel):
    ctx_idx: int
    kind: str
    tokens: list[str]
    acts: list[float]
    simulated: list[float] | None = None          # the LLM explanation's simulation
    simulated_baseline: list[float] | None = None


class ExplainResult(BaseModel):
    model_id: str
    unit: str
    run_id: str | None
    max_act: float
    stats: dict = {}
    promoted: list = []
    suppressed: list = []
    explanation: ExplanationOut
    baseline: ExplanationOut
    top_records: list[RecordOut] = []
    test_records: list[RecordOut] = []
    split_sizes: dict[str, int] = {}
    timings: dict[str, float] = {}
    mined: bool = False


# ---- helpers ------------------------------------------------------------------------------------
def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _stats_dict(stats: Any) -> dict:
    if stats is None:
        return {}
    if hasattr(stats, "model_dump"):
        return stats.model_dump()
    return dict(stats)


def _pairs(xs: Sequence) -> list:
    out = []
    for p in xs or []:
        if isinstance(p, (list, tuple)):
            out.append([p[0], float(p[1])] if len(p) > 1 else [p[0], None])
        else:
            out.append([_get(p, "token", str(p)), _get(p, "weight")])
    return out


def unit_max_of(ex) -> float:
    """The unit's max activation over the mined corpus (its stats), else over its records."""
    m = _get(ex.stats, "max_act") or _get(ex.stats, "max")
    if m is None or m <= 0:
        recs = list(ex.top or []) + list(ex.quantiles or []) + list(ex.random or [])
        m = max((float(r.max_act) for r in recs), default=0.0)
    return float(m)


def _llm_name(llm) -> str:
    return getattr(llm, "name", None) or type(llm).__name__


def _score_out(row: dict) -> ScoreOut:
    return ScoreOut(kind=row["kind"], value=row["value"], ci_low=row["ci_low"], ci_high=row["ci_high"], n=row["n"],
                    scorer=row["scorer"], details=row.get("details"))


# ---- scoring one explanation --------------------------------------------------------------------
def score_explanation(store, expl_id: int, expl_key: str, text: str, splits: Splits, unit_max: float, *,
                      simulator=None, judges: dict | None = None, s: ExplainSettings) -> dict[str, ScoreOut]:
    """Simulation (pooled correlation, top-only, random-only, bootstrap CI, per-record), detection
    and fuzzing scores of one explanation on the test split; each stored under a content key and
    reused when present."""
    from ..score.classify import classification_score, detection_items, fuzzing_items
    from ..score.metrics import simulation_scores

    out: dict[str, ScoreOut] = {}
    test = splits.test
    if "simulation" in s.scorers and simulator is not None and test:
        key = content_hash(PIPELINE_VERSION, "simulation", expl_key, simulator.scorer, simulator.method,
                           simulator.template.hash, records_hash(splits.test_top), records_hash(splits.test_random),
                           s.n_boot, s.seed)
        rows = {k: store.get_score(f"{key}:{k}") for k in SIM_KINDS}
        if any(r is None for r in rows.values()):
            sim = simulator.simulate(text, test)
            true = [list(map(float, r.acts)) for r in test]
            kinds = ["top"] * len(splits.test_top) + ["random"] * len(splits.test_random)
            sc = simulation_scores(true, sim.expected, kinds, n_boot=s.n_boot, seed=s.seed)
            details = {
                "definition": "Pearson r of simulated vs true activations, all test tokens pooled",
                "method": sim.method, "n_bad": sim.n_bad, "n_tokens": sum(len(t) for t in true),
                "records": [{"ctx_idx": r.ctx_idx, "kind": r.kind, "bin": getattr(r, "bin", 0), "split": k,
                             "tokens": list(r.tokens), "true": t,
                             "simulated": [round(v, 4) for v in e], "r": pr}
                            for r, k, t, e, pr in zip(test, kinds, true, sim.expected, sc["per_record"])],
            }
            n_top, n_rand = len(splits.test_top), len(splits.test_random)
            common = dict(explanation_id=expl_id, scorer=sim.scorer, template_hash=sim.template_hash)
            store.put_score(key=f"{key}:simulation", kind="simulation", value=sc["all"], ci_low=sc["ci"][0],
                            ci_high=sc["ci"][1], n=len(test), details=details, **common)
            store.put_score(key=f"{key}:simulation_top", kind="simulation_top", value=sc["top"], n=n_top, **common)
            store.put_score(key=f"{key}:simulation_random", kind="simulation_random", value=sc["random"], n=n_rand, **common)
            rows = {k: store.get_score(f"{key}:{k}") for k in SIM_KINDS}
        out.update({k: _score_out(r) for k, r in rows.items()})
    pool = test + list(splits.spare[: s.n_spare])
    for task, make in (("detection", detection_items), ("fuzzing", fuzzing_items)):
        judge = (judges or {}).get(task)
        if task not in s.scorers or judge is None or not pool:
            continue
        items = make(pool, unit_max, frac=s.active_frac) if task == "detection" else make(pool, unit_max, frac=s.active_frac, seed=s.seed)
        if not items:
            continue
        key = content_hash(PIPELINE_VERSION, task, expl_key, judge.scorer, judge.template.hash,
                           [(it.ctx_idx, it.label, it.text) for it in items], s.n_boot, s.seed)
        row = store.get_score(key)
        if row is None:
            p, bad = judge.p_yes(text, [it.text for it in items])
            sc = classification_score(items, p, n_boot=s.n_boot, seed=s.seed)
            details = {"auroc": sc["auroc"], "n_pos": sc["n_pos"], "n_bad": bad, "threshold_frac": s.active_frac,
                       "items": [{"ctx_idx": it.ctx_idx, "label": it.label, "p_yes": round(pi, 4), "marked": it.marked}
                                 for it, pi in zip(items, p)]}
            store.put_score(key=key, explanation_id=expl_id, kind=task, value=sc["value"], ci_low=sc["ci"][0],
                            ci_high=sc["ci"][1], n=sc["n"], scorer=judge.scorer, template_hash=judge.template.hash,
                            details=details)
            row = store.get_score(key)
        out[task] = _score_out(row)
    return out


# ---- the pipeline on exemplars already mined -----------------------------------------------------
def explain_exemplars(store, ex, llm, *, model_id: str | None = None, settings: ExplainSettings | None = None,
                      simulator_llm=None) -> ExplainResult:
    """Explain and score one unit from its mined exemplars (a UnitExemplars). `llm` writes the
    explanations; `simulator_llm` (default: the same) simulates and judges."""
    from ..llm import load_prompt
    from ..score.classify import YesNoJudge
    from ..score.simulate import get_simulator

    s = settings or ExplainSettings()
    if s.k < 1:
        raise UsageError("k must be at least 1")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    model_id = model_id or ex.model_id
    unit = str(Unit.parse(ex.unit) if isinstance(ex.unit, str) else ex.unit)
    layer = Unit.parse(unit).layer
    unit_max = unit_max_of(ex)
    promoted, suppressed = _pairs(ex.promoted), _pairs(ex.suppressed)
    splits = split_records(unit, ex.top, ex.random, ex.quantiles, s.sizes)
    if not splits.train:
        raise UsageError(f"{unit} has no top records in run {ex.run_id}; mine more text")
    if not splits.test:
        raise UsageError(f"{unit}: run {ex.run_id} has too few records for a test split ({len(ex.top)} top, "
                         f"{len(ex.random)} random from other contexts); mine more text (e.g. --n-tokens 16384)")

    sim_llm = simulator_llm or llm
    simulator = get_simulator(sim_llm, s.simulator) if "simulation" in s.scorers or s.k > 1 else None
    judges = {t: YesNoJudge(sim_llm, t) for t in ("detection", "fuzzing") if t in s.scorers}
    train_hash = records_hash(splits.train)

    # -- the baseline (no LLM)
    b_text = baseline_explanation(splits.train, unit_max, promoted)
    b_key = content_hash(PIPELINE_VERSION, "baseline", model_id, unit, ex.run_id, train_hash, promoted[:3])
    b_cached = store.get_explanation(b_key) is not None
    b_id = store.put_explanation(key=b_key, model_id=model_id, unit=unit, layer=layer, run_id=ex.run_id,
                                 explainer="baseline", method="baseline", text=b_text, records_hash=train_hash,
                                 settings={"n_tokens": 5, "n_promoted": 3})

    # -- the LLM explanation, best of k on calibration
    style = choose_style(llm, s.style)
    template = load_prompt(f"explain_{style}")
    method = f"{style}-bestof{s.k}" if s.k > 1 else style
    calib_hash = records_hash(splits.calibration)
    e_key = content_hash(PIPELINE_VERSION, "explain", model_id, unit, ex.run_id, _llm_name(llm), method, template.hash,
                         train_hash, calib_hash, s.k, s.seed, s.temperature, s.max_tokens, s.window,
                         (simulator.scorer, simulator.method, simulator.template.hash) if simulator and s.k > 1 else None)
    row = store.get_explanation(e_key)
    cached = row is not None
    if row is None:
        t0 = time.perf_counter()
        prompt = build_explain_prompt(template, splits.train, unit_max, window_size=s.window, promoted=promoted, unit=unit)
        temp = s.temperature if s.k > 1 else 0.0
        cands = sample_explanations(llm, template, prompt, k=s.k, seed=s.seed, temperature=temp, max_tokens=s.max_tokens)
        if not cands:  # one greedy retry before giving up
            cands = sample_explanations(llm, template, prompt, k=1, seed=s.seed, temperature=0.0, max_tokens=s.max_tokens)
        if not cands:
            raise LLMError(f"{_llm_name(llm)} wrote no explanation for {unit} (empty replies)")
        timings["explain_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        scored = [{"text": c, "calibration": None} for c in cands]
        best = 0
        if len(cands) > 1 and simulator is not None and splits.calibration:
            from ..score.metrics import pooled_correlation

            true = [list(map(float, r.acts)) for r in splits.calibration]
            for c in scored:
                c["calibration"] = pooled_correlation(true, simulator.simulate(c["text"], splits.calibration).expected)
            best = max(range(len(scored)), key=lambda i: (scored[i]["calibration"], -i))
        timings["calibrate_s"] = time.perf_counter() - t0
        store.put_explanation(key=e_key, model_id=model_id, unit=unit, layer=layer, run_id=ex.run_id,
                              explainer=_llm_name(llm), method=method, text=cands[best], template=template.name,
                              template_hash=template.hash, records_hash=train_hash,
                              settings={"k": s.k, "seed": s.seed, "temperature": temp, "max_tokens": s.max_tokens,
                                        "window": s.window, "style": style, "calibration_records_hash": calib_hash,
                                        "candidates": scored, "best": best})
        row = store.get_explanation(e_key)

    # -- scores of both, on the test split
    t0 = time.perf_counter()
    e_scores = score_explanation(store, row["id"], e_key, row["text"], splits, unit_max, simulator=simulator, judges=judges, s=s)
    b_scores = score_explanation(store, b_id, b_key, b_text, splits, unit_max, simulator=simulator, judges=judges, s=s)
    timings["score_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    sim_e = _sim_by_ctx(e_scores.get("simulation"))
    sim_b = _sim_by_ctx(b_scores.get("simulation"))
    kinds = ["top"] * len(splits.test_top) + ["random"] * len(splits.test_random)
    test_records = [RecordOut(ctx_idx=r.ctx_idx, kind=k, tokens=list(r.tokens), acts=list(map(float, r.acts)),
                              simulated=sim_e.get(r.ctx_idx), simulated_baseline=sim_b.get(r.ctx_idx))
                    for r, k in zip(splits.test, kinds)]
    top_records = [RecordOut(ctx_idx=r.ctx_idx, kind=r.kind, tokens=list(r.tokens), acts=list(map(float, r.acts)))
                   for r in sorted(ex.top, key=lambda r: -float(r.max_act))[:5]]
    return ExplainResult(
        model_id=model_id, unit=unit, run_id=ex.run_id, max_act=unit_max, stats=_stats_dict(ex.stats),
        promoted=promoted, suppressed=suppressed,
        explanation=ExplanationOut(id=row["id"], key=e_key, explainer=row["explainer"], method=row["method"], text=row["text"],
                                   cached=cached, candidates=(row.get("settings") or {}).get("candidates", []),
                                   scores=_strip_details(e_scores)),
        baseline=ExplanationOut(id=b_id, key=b_key, explainer="baseline", method="baseline", text=b_text, cached=b_cached,
                                scores=_strip_details(b_scores)),
        top_records=top_records, test_records=test_records,
        split_sizes={"train": len(splits.train), "calibration_top": len(splits.calib_top),
                     "calibration_random": len(splits.calib_random), "test_top": len(splits.test_top),
                     "test_random": len(splits.test_random), "spare": len(splits.spare)},
        timings={k: round(v, 3) for k, v in timings.items()})


def _sim_by_ctx(score: ScoreOut | None) -> dict[int, list[float]]:
    if score is None or not score.details:
        return {}
    return {r["ctx_idx"]: r["simulated"] for r in score.details.get("records", [])}


def _strip_details(scores: dict[str, ScoreOut]) -> dict[str, ScoreOut]:
    """Scores without the bulky per-record details (those are in test_records)."""
    out = {}
    for k, v in scores.items():
        d = v.details
        if isinstance(d, dict) and "records" in d:
            d = {kk: vv for kk, vv in d.items() if kk != "records"} | {"per_record": [r["r"] for r in d["records"]]}
        elif isinstance(d, dict) and "items" in d:
            d = {kk: vv for kk, vv in d.items() if kk != "items"}
        out[k] = v.model_copy(update={"details": d})
    return out


# ---- the top-level API --------------------------------------------------------------------------
DEFAULT_MINE_TOKENS = 16384   # what `explain` mines when nothing is stored (one layer, ~30-60 s on CPU)


def _find_or_mine(store, model_id: str, unit: Unit, *, run_id, corpus, n_tokens, device, dtype, hm,
                  mine_kw: dict | None = None) -> tuple[str, bool, Any]:
    """A done mining run of this model covering the unit, else a new one (just the unit's layer,
    a small slice of the corpus). Returns (run_id, mined_now, hooked model or None)."""
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
    kw = {"n_tokens": n_tokens or DEFAULT_MINE_TOKENS, "layers": [unit.layer], **(mine_kw or {})}
    if corpus is not None:
        kw["corpus"] = corpus
    return M.mine(hm, store, **kw), True, hm


def explain_unit(store, unit: str | Unit, *, model_spec: str | None = None, llm=None, llm_base_url: str | None = None,
                 run_id: str | None = None, k: int | None = None, settings: ExplainSettings | None = None,
                 corpus: str | None = None, n_tokens: int | None = None, device: str = "auto", dtype: str = "float32",
                 hm=None, simulator_llm=None, mine_kw: dict | None = None) -> ExplainResult:
    """Explain and score one unit, mining its layer first when the store has no run for it.

    model_spec: the subject model (default: settings, smollm2-135m); llm: an LLM object or a spec
    ('embedded:smollm2-135m', 'openai:MODEL'); k overrides settings.k. Returns an ExplainResult
    (also stored: explanations incl. the baseline, scores, LLM calls)."""
    from ..config import Settings

    cfg = Settings.load(model=model_spec)
    model_id = cfg.model
    u = unit if isinstance(unit, Unit) else Unit.parse(unit)
    s = (settings or ExplainSettings()).model_copy()
    if k is not None:
        s.k = k
    rid, mined, hm = _find_or_mine(store, model_id, u, run_id=run_id, corpus=corpus, n_tokens=n_tokens,
                                   device=device, dtype=dtype, hm=hm, mine_kw=mine_kw)
    from ..mine import load_exemplars

    ex = load_exemplars(store, rid, str(u))
    if llm is None or isinstance(llm, str):
        from ..llm import get_llm

        spec = llm or cfg.llm
        kw = {}
        if hm is not None and spec == f"embedded:{getattr(hm, 'spec', None)}":
            kw = {"model": hm.model, "tokenizer": hm.tokenizer}  # one copy of the weights for both roles
        llm = get_llm(spec, store=store, base_url=llm_base_url or cfg.llm_base_url, **kw)
    res = explain_exemplars(store, ex, llm, model_id=model_id, settings=s, simulator_llm=simulator_llm)
    res.mined = mined
    return res


def show_unit(store, model_id: str, unit: str | Unit) -> dict:
    """All the store knows about a unit: explanations (LLM and baseline) with every score
    (simulation details included), unit statistics, promoted/suppressed tokens, its records with
    tokens and activations. Raises UsageError when the store knows nothing of it."""
    u = str(unit if isinstance(unit, Unit) else Unit.parse(unit))
    info = store.unit_view(model_id, u)
    if info is None:
        raise UsageError(f"the store {store.path} knows nothing about {u} of {model_id}; run `autointerp explain --unit {u}`")
    for e in info["explanations"] + info["baselines"]:
        e["settings"] = _json_or(e.pop("settings_json", None))
        for sc in e["scores"]:
            full = store.get_score_by_id(sc["id"]) if hasattr(store, "get_score_by_id") else None
            sc["details"] = full["details"] if full else None
    return info


def _json_or(text):
    import json

    try:
        return json.loads(text) if text else None
    except ValueError:
        return text
