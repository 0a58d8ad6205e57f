"""Scorer calibration on planted units: how well does each scorer, with this LLM, tell a unit's
true explanation from wrong ones?

Planted units (mine.planted) are mined from the real corpus like any unit; each has its true
explanation and decoys (near misses and other units' explanations). Every scorer scores all of
them on the unit's test split, exactly as `explain` scores an explanation.

**Discrimination** of a scorer = AUROC of its scores of true explanations (positives) against
its scores of decoys (negatives), pooled over units (Mann-Whitney U, ties half), with a 95%
percentile bootstrap interval that resamples whole units (score.metrics.bootstrap_auroc). 0.5 is
a scorer that cannot tell right from wrong; 1.0 ranks every true explanation above every decoy.
A score that is null (constant judge, unparseable) is left out and counted.

**Recovery** of the explainer: the LLM's own explanation of each planted unit, scored by the same
scorers, next to the true explanation's score, and its rank among true + decoys.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from pydantic import BaseModel, Field

from ..core.keys import content_hash
from ..errors import UsageError
from ..score.metrics import bootstrap_auroc
from ..score.registry import SCORERS, check_scorers, default_scorers
from ..score.splits import SplitSizes, split_records

CALIBRATION_VERSION = 1


class CalibrateSettings(BaseModel):
    n_tokens: int = 16384
    context_len: int = 64
    corpus: str | None = None
    scorers: tuple[str, ...] = Field(default_factory=default_scorers)   # names in score/registry.py
    simulator: str = "auto"
    explain: bool = True                 # also let the LLM explain each planted unit (recovery)
    sizes: SplitSizes = Field(default_factory=lambda: SplitSizes(n_train=6, n_calib=0, n_test=3))
    n_boot: int = 1000
    seed: int = 0
    n_spare: int = 0
    n_other: int = 0                     # other planted units' true explanations added as decoys per unit
                                         # (they are pooled across units in the AUROC anyway)

    def check(self) -> "CalibrateSettings":
        check_scorers(self.scorers)
        if self.n_tokens < self.context_len * 8:
            raise UsageError(f"--tokens must be at least {self.context_len * 8} (eight contexts)")
        return self


def planted_contexts(tokenizer, corpus: str | None, n_tokens: int, context_len: int = 64) -> list[tuple[int, list[str]]]:
    """(ctx_idx, decoded text tokens) of the first n_tokens // context_len contexts of a corpus,
    as the miner cuts them (the BOS position left out)."""
    from ..corpus.contexts import iter_contexts, layout_for
    from ..corpus.sources import DEFAULT_CORPUS, open_source
    from ..mine.logits import TokenDecoder

    layout = layout_for(tokenizer, context_len)
    dec = TokenDecoder(tokenizer)
    out = []
    src = open_source(corpus or DEFAULT_CORPUS)
    for i, ids in enumerate(iter_contexts(tokenizer, src, context_len, limit=max(1, n_tokens // context_len),
                                          layout=layout)):
        out.append((i, dec(ids[layout.first_pos:])))
    return out


def calibrate(store, llm, *, tokenizer, model_id: str, units_file: str | None = None,
              settings: CalibrateSettings | None = None, progress=None) -> dict:
    """Calibrate the scorers (with `llm` as simulator, judge and explainer; llm None: the exact
    scorer only) on planted units. Returns the report (also stored as a calibration row)."""
    from ..explain.api import choose_style, write_candidates
    from ..llm import load_prompt
    from ..mine.planted import describe, fire_counts, load_planted, mine_planted

    s = (settings or CalibrateSettings()).check()
    units = load_planted(units_file)            # a malformed file fails here, before any work
    t0 = time.perf_counter()
    contexts = planted_contexts(tokenizer, s.corpus, s.n_tokens, s.context_len)
    fires = fire_counts(units, contexts)
    exemplars = mine_planted(units, contexts)
    t_mine = time.perf_counter() - t0

    scorers: dict[str, Any] = {}          # the scorers that need no LLM first, then the LLM's (registry order)
    for spec in sorted(SCORERS.values(), key=lambda sp: sp.needs_llm):
        if spec.name in s.scorers and (sc := spec.build(llm, s)) is not None:
            scorers[spec.name] = sc

    template = load_prompt(f"explain_{choose_style(llm, 'auto')}") if s.explain and llm is not None else None
    per_unit = []
    timings = {name: 0.0 for name in scorers}
    timings["explain"] = 0.0
    skipped = []
    for i, u in enumerate(units):
        if progress:
            progress(i, len(units), u.name)
        ex = exemplars[u.name]
        if fires[u.name] < s.sizes.n_train + s.sizes.n_test:
            skipped.append({"name": u.name, "reason": f"fires in only {fires[u.name]} of {len(contexts)} contexts"})
            continue
        splits = split_records(u.name, ex.top, ex.random, ex.quantiles, s.sizes)
        if not splits.test_top or not splits.test_random:
            skipped.append({"name": u.name, "reason": "too few records for a test split"})
            continue
        unit_max = float(ex.stats.max_act or 1.0)
        cands = [{"role": "true", "text": u.explanation, "rule": u.rule}]
        cands += [{"role": "decoy", "text": d.text, "rule": d.rule} for d in u.decoys]
        # other units' true explanations are decoys too
        others = [o for o in units if o.name != u.name]
        others = sorted(others, key=lambda o: content_hash("other", s.seed, u.name, o.name))[: s.n_other]
        cands += [{"role": "decoy", "text": o.explanation, "rule": o.rule} for o in others]
        if s.explain and llm is not None:
            te = time.perf_counter()
            got, rejected = write_candidates(llm, template, splits.train, unit_max, unit=u.name, k=1, seed=s.seed)
            timings["explain"] += time.perf_counter() - te
            cands.append({"role": "llm", "text": got[0] if got else None, "rule": None,
                          "rejected": rejected[:2]})
        for c in cands:
            c["scores"] = {}
            if not c["text"]:
                continue
            for name, sc in scorers.items():
                ts = time.perf_counter()
                kw = {"rule": c["rule"]} if SCORERS[name].rule else {}
                recs = sc.score(c["text"], splits, unit_max, **kw)
                timings[name] += time.perf_counter() - ts
                r = SCORERS[name].headline(recs)
                c["scores"][name] = None if r is None else {"value": r.value, "reason": r.reason}
        per_unit.append({"name": u.name, "fires_in": fires[u.name], "n_test": len(splits.test),
                         "candidates": [{"role": c["role"], "text": c["text"], "has_rule": c["rule"] is not None,
                                         "scores": c["scores"], **({"rejected": c["rejected"]} if c.get("rejected") else {})}
                                        for c in cands]})

    results: dict[str, Any] = {"scorers": {}, "units": per_unit, "skipped": skipped,
                               "definition": "AUROC of true-explanation scores vs decoy scores, pooled over planted "
                                             "units; 95% bootstrap interval over units"}
    summary: dict[str, Any] = {"n_units": len(per_unit)}
    for name in scorers:
        labels, vals, groups, n_null = [], [], [], 0
        wins = 0
        for pu in per_unit:
            tv = None
            dv = []
            for c in pu["candidates"]:
                if c["role"] == "llm":
                    continue
                sc = c["scores"].get(name)
                if sc is None:
                    continue
                if sc["value"] is None:
                    n_null += 1
                    continue
                labels.append(c["role"] == "true")
                vals.append(sc["value"])
                groups.append(pu["name"])
                if c["role"] == "true":
                    tv = sc["value"]
                else:
                    dv.append(sc["value"])
            # a decoy whose score is null (its rule fires nowhere on the test records) predicts nothing
            if tv is not None and all(tv > d for d in dv) and (dv or tv > 0):
                wins += 1
        a, lo, hi = bootstrap_auroc(labels, vals, groups, n_boot=s.n_boot, seed=s.seed)
        why = None
        if a is None:
            why = ("no true or no decoy score" if all(labels) or not any(labels)
                   else "every score is the same (no information)")
        rec = {"auroc": a, "low": lo, "high": hi, "reason": why, "n_true": sum(labels), "n_decoy": len(labels) - sum(labels),
               "n_null": n_null, "units_true_beats_all": wins, "seconds": round(timings[name], 2)}
        if s.explain and SCORERS[name].needs_llm:
            rec["recovery"] = _recovery(per_unit, name)
        results["scorers"][name] = rec
        summary[f"{name}_auroc"] = a
        summary[f"{name}_auroc_low"] = lo
        summary[f"{name}_auroc_high"] = hi
    results["summary"] = summary
    results["timings"] = {"mine_s": round(t_mine, 2), **{f"{k}_s": round(v, 2) for k, v in timings.items()},
                          "total_s": round(time.perf_counter() - t0, 2)}
    results["planted"] = planted = [describe(u) for u in units]
    llm_name = getattr(llm, "name", None) or "exact"
    templates = {}
    for name, sc in scorers.items():
        tpl = getattr(getattr(sc, "simulator", None), "template", None) or getattr(getattr(sc, "judge", None), "template", None)
        if tpl is not None:
            templates[name] = getattr(tpl, "hash", None)
    key = content_hash("calibration", CALIBRATION_VERSION, llm_name, model_id, s.model_dump(mode="json"),
                       planted, templates)
    cid = store.put_calibration(key=key, llm=llm_name, model_id=model_id, corpus=s.corpus or "default",
                                templates=templates, settings=s.model_dump(mode="json"), results=results)
    return {"id": cid, "llm": llm_name, "model_id": model_id, "n_contexts": len(contexts), **results}


def _recovery(per_unit: Sequence[dict], name: str) -> dict:
    """The LLM's own explanations: their mean score next to the true ones', and how often they
    rank above every decoy."""
    llm_v, true_v, beats = [], [], 0
    n = 0
    for pu in per_unit:
        c = {x["role"]: x for x in pu["candidates"] if x["role"] in ("true", "llm")}
        if "llm" not in c or not c["llm"]["text"]:
            continue
        lv = (c["llm"]["scores"].get(name) or {}).get("value")
        tv = (c["true"]["scores"].get(name) or {}).get("value")
        if lv is None or tv is None:
            continue
        n += 1
        llm_v.append(lv)
        true_v.append(tv)
        decoys = [(x["scores"].get(name) or {}).get("value") for x in pu["candidates"] if x["role"] == "decoy"]
        if all(d is None or lv > d for d in decoys):
            beats += 1
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"n": n, "llm_mean": mean(llm_v), "true_mean": mean(true_v), "llm_beats_all_decoys": beats}
