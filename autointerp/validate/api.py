"""validate_explanation: causal tests of one explanation (and the unit's non-LLM baseline) on the
hooked subject model, stored as scores of their own kinds.

    from autointerp.validate import validate_explanation
    res = validate_explanation(store, hm, llm, "smollm2-135m", "L3/N42")
    res.explanation.probes.auc, res.explanation.intervention.modes["zero"].dlogit_promoted

Score kinds written per explanation (scores.kind; details_json keeps the probes and effects):
  probe_auc        AUC of the probes' max activation vs what the explanation predicts (CI: bootstrap)
  probe_precision  fired positives / probes that fired
  probe_recall     fired positives / positives
  intervention     fraction of the unit's active top-context positions where the explanation's
                   counterfactual edit moves the promoted tokens' logits the implied way
An SAE latent is tested through its SAE spliced into the model (site.py).
See probes.py and intervene.py for the definitions.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from ..errors import UsageError
from ..core.keys import content_hash
from ..core.units import Unit
from ..score.scorers import ScoreValue
from .intervene import InterventionResult, intervene
from .site import unit_site
from .probes import (Probe, ProbeScores, code_probes, filler_tokens, llm_probes, neutral_records, parse_explanation,
                     probe_scores, run_probes)

VALIDATE_VERSION = 2          # 2: a degenerate probe AUC is null with its reason
KINDS = ("probe_auc", "probe_precision", "probe_recall", "intervention")


class ValidateSettings(BaseModel):
    frac: float = 0.25            # a probe fires / a position is active at >= frac x the unit's mined max
    per_word: int = 6             # code probes: carriers per key word
    window: int = 12              # code probes: carrier window (tokens)
    n_llm: int = 4                # LLM probes asked for (positives and as many negatives)
    n_top: int = 8                # intervention: top contexts
    k_logits: int = 10            # promoted / suppressed tokens followed
    min_drop: float = 0.5         # intervention: the counterfactual edit must remove this share of the activation
    n_boot: int = 200
    seed: int = 0
    use_llm: bool = True


class ScoreRow(ScoreValue):
    id: int | None = None
    reason: str | None = None       # why value is null


class ExplanationValidation(BaseModel):
    explanation_id: int
    explainer: str
    text: str
    key_words: list[str]
    output_words: list[str] = []
    key_source: str = "quoted"
    probes: ProbeScores
    probe_list: list[Probe] = []
    llm_info: dict = {}
    intervention: InterventionResult | None = None
    scores: dict[str, ScoreRow] = {}
    cached: bool = False


class ValidationResult(BaseModel):
    model_id: str
    unit: str
    run_id: str
    unit_max: float
    mean_act: float | None
    threshold: float
    explanation: ExplanationValidation
    baseline: ExplanationValidation | None = None
    timings: dict[str, float] = {}


def _pick_explanation(store, model_id: str, unit: str, explanation_id: int | None) -> dict:
    if explanation_id is not None:
        row = store.get_explanation(id=int(explanation_id))
        if row is None:
            raise UsageError(f"no explanation #{explanation_id} in the store")
        if row["unit"] != unit or row["model_id"] != model_id:
            raise UsageError(f"explanation #{explanation_id} is of {row['model_id']} {row['unit']}, not {model_id} {unit}")
        return row
    rows = store.explanations_for(model_id, unit)
    llm_rows = [r for r in rows if r["explainer"] != "baseline"]
    if not rows:
        raise UsageError(f"{unit} of {model_id} has no explanation in the store; run `autointerp explain --unit {unit}` first")
    return (llm_rows or rows)[0]


def _exemplars(store, model_id: str, row: dict, unit: str):
    from ..mine import find_run, load_exemplars

    run_id = row.get("run_id")
    if run_id is None:
        run = find_run(store, model_id, unit=unit)
        if run is None:
            raise UsageError(f"no finished mining run of {model_id} covers {unit}; run `autointerp explain` or mine first")
        run_id = run.id
    return load_exemplars(store, run_id, unit)


def _unit_max(ex) -> float:
    from ..core.format import unit_max_of

    return unit_max_of(ex)


def _llm_name(llm) -> str | None:
    return None if llm is None else (getattr(llm, "name", None) or type(llm).__name__)


def _rows(store, keys: dict[str, str]) -> dict[str, dict] | None:
    rows = {k: store.get_score(key) for k, key in keys.items()}
    return rows if all(r is not None for r in rows.values()) else None


def _validate_one(store, hm, llm, u: Unit, ex, row: dict, unit_max: float, s: ValidateSettings, *,
                  base_cache: dict, fillers, neutral) -> ExplanationValidation:
    from ..llm import load_prompt

    thr = s.frac * unit_max
    parsed = parse_explanation(row["text"])
    keys_in, keys_out = parsed["input"], parsed["output"]
    template = load_prompt("probes_chat") if (llm is not None and s.use_llm) else None
    ident = content_hash(VALIDATE_VERSION, row["key"], ex.run_id, s.model_dump(), _llm_name(llm) if template else None,
                         template.hash if template else None, [f for f, _ in fillers])
    keys = {k: f"{ident}:{k}" for k in KINDS}
    stored = _rows(store, keys)
    if stored is not None:
        d = stored["probe_auc"]["details"] or {}
        inter = stored["intervention"]["details"]
        return ExplanationValidation(
            explanation_id=row["id"], explainer=row["explainer"], text=row["text"], key_words=keys_in,
            output_words=keys_out, key_source=parsed["source"], probes=ProbeScores(**d["scores"]),
            probe_list=[Probe(**p) for p in d.get("probes", [])], llm_info=d.get("llm", {}),
            intervention=InterventionResult(**inter) if inter else None,
            scores={k: ScoreRow(kind=k, value=r["value"], ci_low=r["ci_low"], ci_high=r["ci_high"], n=r["n"], id=r["id"],
                                reason=r.get("reason"))
                    for k, r in stored.items()},
            cached=True)

    # probes
    probes = code_probes(ex, hm.tokenizer, keys_in, thr, per_word=s.per_word, window=s.window, fillers=fillers)
    info: dict[str, Any] = {}
    if template is not None:
        lp, info = llm_probes(llm, row["text"], keys_in, [f for _, f in fillers], n=s.n_llm, seed=s.seed)
        probes += lp
    run_probes(hm, u, probes, thr, first_pos=ex.first_pos)
    sc = probe_scores(probes, thr, n_boot=s.n_boot, seed=s.seed)

    # intervention
    inter, base = intervene(hm, u, ex.top[: s.n_top], unit_max=unit_max, mean_act=ex.stats.mean_act, frac=s.frac,
                            key_words=keys_in, named=keys_out, filler_id=fillers[0][0] if fillers else None,
                            first_pos=ex.first_pos, k=s.k_logits, min_drop=s.min_drop, base=base_cache.get("base"))
    base_cache["base"] = base

    scorer = _llm_name(llm) if template is not None else "code"
    th = template.hash if template is not None else None
    common = dict(explanation_id=row["id"], scorer=scorer, template_hash=th)
    probe_details = {"scores": sc.model_dump(), "probes": [p.model_dump() for p in probes], "llm": info,
                     "key_words": keys_in, "key_source": parsed["source"], "threshold_frac": s.frac,
                     "settings": s.model_dump()}
    ids = {
        "probe_auc": store.put_score(key=keys["probe_auc"], kind="probe_auc", value=sc.auc,
                                     ci_low=sc.auc_ci[0] if sc.auc_ci else None, ci_high=sc.auc_ci[1] if sc.auc_ci else None,
                                     n=sc.n, details=probe_details, reason=sc.auc_reason, **common),
        "probe_precision": store.put_score(key=keys["probe_precision"], kind="probe_precision", value=sc.precision,
                                           n=sc.n_fired, details={"n_fired": sc.n_fired, "n": sc.n},
                                           reason=sc.precision_reason, **common),
        "probe_recall": store.put_score(key=keys["probe_recall"], kind="probe_recall", value=sc.recall, n=sc.n_pos,
                                        details={"n_pos": sc.n_pos, "n": sc.n}, reason=sc.recall_reason, **common),
        "intervention": store.put_score(key=keys["intervention"], kind="intervention", value=inter.value,
                                        n=inter.n_positions, details=inter.model_dump(), **common),
    }
    vals = {"probe_auc": (sc.auc, sc.auc_ci, sc.n, sc.auc_reason),
            "probe_precision": (sc.precision, None, sc.n_fired, sc.precision_reason),
            "probe_recall": (sc.recall, None, sc.n_pos, sc.recall_reason),
            "intervention": (inter.value, None, inter.n_positions, None)}
    scores = {k: ScoreRow(kind=k, value=v, ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, n=n, id=ids[k],
                          reason=why) for k, (v, ci, n, why) in vals.items()}
    return ExplanationValidation(explanation_id=row["id"], explainer=row["explainer"], text=row["text"],
                                 key_words=keys_in, output_words=keys_out, key_source=parsed["source"], probes=sc,
                                 probe_list=probes, llm_info=info, intervention=inter, scores=scores)


def validate_explanation(store, hm, llm, model_id: str, unit: str | Unit, explanation_id: int | None = None, *,
                         settings: ValidateSettings | None = None, baseline: bool = True, sae=None) -> ValidationResult:
    """Probe and intervention tests of one explanation of `unit` (default: its newest LLM
    explanation) and of the unit's newest baseline explanation. `llm` may be None (code-built
    probes only). Results are stored as scores (kinds probe_auc, probe_precision, probe_recall,
    intervention) and reused when the same test was already run.

    An SAE latent (L6/F12@name) is validated through its SAE: `sae` (a models.sae.SAE; attached
    to hm for the call when it is not already), or the SAE of that name already attached."""
    u = Unit.parse(unit) if isinstance(unit, str) else unit
    if sae is not None and u.record.needs_sae:
        u = u.with_sae(sae.name)
        if hm.saes.get(sae.hook) is not sae:
            prev = hm.saes.get(sae.hook)
            hm.attach_sae(sae)
            try:
                return validate_explanation(store, hm, llm, model_id, u, explanation_id, settings=settings,
                                            baseline=baseline)
            finally:                        # hm is left as it was given
                hm.detach_sae(sae)
                if prev is not None:
                    hm.attach_sae(prev)
    t0 = time.perf_counter()
    s = settings or ValidateSettings()
    u = hm.check_unit(u)
    if not u.record.intervene:
        raise UsageError(f"{u}: causal validation covers MLP neurons (L<layer>/N<index>) and SAE latents "
                         "(L<layer>/F<latent>@<sae>), not heads")
    unit_site(hm, u)                        # a latent whose SAE is not attached fails here, before any work
    row = _pick_explanation(store, model_id, str(u), explanation_id)
    ex = _exemplars(store, model_id, row, str(u))
    unit_max = _unit_max(ex)
    if unit_max <= 0:
        raise UsageError(f"{u} never fired in run {ex.run_id} (max activation {unit_max}); nothing to validate")
    thr = s.frac * unit_max
    neutral = neutral_records(ex, thr, s.window)
    all_keys = parse_explanation(row["text"])["input"]
    b_row = None
    if baseline and row["explainer"] != "baseline":
        bs = [r for r in store.explanations_for(model_id, str(u), explainer="baseline") if r.get("run_id") in (None, ex.run_id)]
        b_row = bs[0] if bs else None
        if b_row is not None:
            all_keys = all_keys + parse_explanation(b_row["text"])["input"]
    # one filler list for both explanations, free of either's key words, so the pairs are comparable
    fillers = filler_tokens(neutral, hm.tokenizer, all_keys)
    cache: dict = {}
    main = _validate_one(store, hm, llm, u, ex, row, unit_max, s, base_cache=cache, fillers=fillers, neutral=neutral)
    bval = None
    if b_row is not None:
        bval = _validate_one(store, hm, llm, u, ex, b_row, unit_max, s, base_cache=cache, fillers=fillers, neutral=neutral)
    return ValidationResult(model_id=model_id, unit=str(u), run_id=ex.run_id, unit_max=unit_max,
                            mean_act=ex.stats.mean_act, threshold=thr, explanation=main, baseline=bval,
                            timings={"total_s": round(time.perf_counter() - t0, 3)})
