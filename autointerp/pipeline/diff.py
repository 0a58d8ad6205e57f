"""`autointerp diff A B`: what changed between two models. The diff pipeline: it loads the models,
runs the compare/ stage (black box, tasks, components), stores the diff, and explains the top
differing contexts of one side with the explain pipeline (exactly as a unit is explained from its
top records; the per-token Δ is the "activation"; the side is the explanation's subject).

    from autointerp.pipeline import diff_models, DiffSettings
    res = diff_models(store, "smollm2-135m", "runs/b", DiffSettings(n_tokens=4096))
    res.components["weight_head"][:3], res.explanation["text"]

Sides. Δ = B - A. "b_better" contexts are those with the largest Δ, "a_better" the most negative;
side='auto' explains and patches the side whose top contexts differ more (by their mean rank score:
peak or total Δ, DiffSettings.rank; a tie by their mean total Δ).
Patching goes from the better model of that side into the worse one.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from pydantic import BaseModel, Field

from ..compare import (METRICS, RANKS, SIDES, BlackBoxResult, activation_diff, blackbox_diff, check_same_architecture,
                       check_tasks, compare_task, dla_diff, is_repeat_context, patch_diff, weight_diff)
from ..core.keys import content_hash
from ..corpus import DEFAULT_CORPUS, open_source
from ..errors import UsageError

DIFF_VERSION = 1
LEVELS = ("auto", "blackbox", "components")
EXPLAIN = ("none", "baseline", "llm")


class DiffSettings(BaseModel):
    corpus: str | None = None            # default: the offline corpus
    n_tokens: int = 4096                 # black-box tokens (of A's tokenizer)
    context_len: int = 64
    batch_size: int = 8
    metric: str = "clip"                 # clip | logp | p: the per-token value records carry (blackbox.py)
    rank: str = "max"                    # max | sum: contexts ranked by their peak or total Δ (compare/blackbox.py)
    top_k: int = 24                      # top contexts kept per side
    n_random: int = 24                   # random contexts (the explanation's held-out negatives)
    seed: int = 0
    level: str = "auto"                  # auto: components when the architectures match
    tasks: list[str] = Field(default_factory=list)
    task_items: int = 32
    act_tokens: int = 2048               # tokens for the activation diff
    n_contexts: int = 8                  # top contexts used for DLA and patching
    n_pos: int = 3                       # peak tokens per context for DLA and patching
    patch_top: int = 0                   # patch only the N components of largest |DLA difference| (0: all)
    side: str = "auto"                   # auto | b_better | a_better
    explain: str = "baseline"            # none | baseline (no LLM) | llm
    k: int = 1                           # LLM explanations sampled (best on calibration)

    def check(self) -> "DiffSettings":
        if self.metric not in METRICS:
            raise UsageError(f"--metric {self.metric!r}: use {', '.join(METRICS)}")
        if self.rank not in RANKS:
            raise UsageError(f"--rank {self.rank!r}: use {', '.join(RANKS)}")
        if self.level not in LEVELS:
            raise UsageError(f"--level {self.level!r}: use {', '.join(LEVELS)}")
        if self.explain not in EXPLAIN:
            raise UsageError(f"--explain {self.explain!r}: use {', '.join(EXPLAIN)}")
        if self.side not in ("auto", *SIDES):
            raise UsageError(f"--side {self.side!r}: use auto, b_better or a_better")
        for name, v, lo in (("--tokens", self.n_tokens, self.context_len), ("--context-len", self.context_len, 4),
                            ("--batch-size", self.batch_size, 1), ("--top-k", self.top_k, 1),
                            ("--task-items", self.task_items, 1), ("--act-tokens", self.act_tokens, self.context_len),
                            ("--contexts", self.n_contexts, 1), ("--k", self.k, 1), ("--patch-top", self.patch_top, 0)):
            if v < lo:
                raise UsageError(f"{name} must be at least {lo}, got {v}")
        self.tasks = check_tasks(self.tasks)
        return self


class DiffResult(BaseModel):
    id: str
    model_a: str
    model_b: str
    mode: str
    level: str
    side: str
    summary: dict[str, Any]
    blackbox: BlackBoxResult
    components: dict[str, list[dict]] = Field(default_factory=dict)
    patching: dict | None = None
    tasks: list[dict] = Field(default_factory=list)
    explanation: dict | None = None
    notes: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)

    def to_json(self, n_records: int = 10) -> dict:
        """The JSON document of `autointerp diff --json` (top records only, no per-token side values)."""
        d = self.model_dump(exclude={"blackbox"})
        bb = self.blackbox
        d["blackbox"] = {"mode": bb.mode, "metric": bb.metric, "rank": bb.rank, "n_contexts": bb.n_contexts,
                         "n_units": bb.n_units, "n_tokens_a": bb.n_tokens_a, "summary": bb.summary, "seconds": bb.seconds,
                         "top": {s: [_rec_json(r, sc) for r, sc in zip(bb.top[s][:n_records], _scores(bb, s))]
                                 for s in SIDES}}
        return d


def _scores(bb: BlackBoxResult, side: str) -> list[float]:
    """The rank score of each top record of a side (its peak when the result predates rank)."""
    return bb.scores.get(side) or [r.max_act for r in bb.top[side]]


def _rec_json(r, score: float) -> dict:
    return {"ctx_idx": r.ctx_idx, "score": round(score, 4), "max_act": round(r.max_act, 4), "tokens": r.tokens,
            "acts": [round(a, 4) for a in r.acts], "repeated_text": is_repeat_context(r) if r.input_ids else None}


def diff_id(spec_a: str, spec_b: str, s: DiffSettings) -> str:
    keep = s.model_dump(exclude={"explain", "k"})
    keep["corpus"] = s.corpus or DEFAULT_CORPUS
    return content_hash("diff", DIFF_VERSION, spec_a, spec_b, keep)[:24]


def _load(spec: str, device: str, dtype: str):
    from ..models.hooked import HookedModel

    return HookedModel.load(spec, device=device, dtype=dtype)


def _choose_side(bb: BlackBoxResult, side: str) -> str:
    if side != "auto":
        return side
    n = {s: max(1, len(bb.top[s])) for s in SIDES}
    mean = {s: round(sum(_scores(bb, s)) / n[s], 3) for s in SIDES}
    # a tie (clip saturates at 5 when both sides have tokens one model gets and the other finds
    # hopeless) goes to the side whose top contexts differ on more tokens: their mean total Δ
    total = {s: sum(sum(r.acts) for r in bb.top[s]) / n[s] for s in SIDES}
    return max(SIDES, key=lambda s: (mean[s], total[s], s == "b_better"))


def diff_models(store, spec_a: str | None = None, spec_b: str | None = None, settings: DiffSettings | None = None, *,
                hm_a=None, hm_b=None, device: str = "auto", dtype: str = "float32", llm=None,
                llm_base_url: str | None = None, progress: Callable | None = None) -> DiffResult:
    """Diff two models (module doc); stored in the diff tables of `store`. hm_a / hm_b: models
    already loaded (their .spec names them)."""
    s = (settings or DiffSettings()).model_copy(deep=True).check()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    source = open_source(s.corpus or DEFAULT_CORPUS)     # a bad corpus spec fails before any model loads
    from ..models.loader import resolve_spec

    for spec, hm in ((spec_a, hm_a), (spec_b, hm_b)):    # and so does a model spec that names nothing
        if hm is None:
            resolve_spec(spec)
    hm_a = hm_a if hm_a is not None else _load(spec_a, device, dtype)
    hm_b = hm_b if hm_b is not None else _load(spec_b, device, dtype)
    timings["load_s"] = time.perf_counter() - t0
    notes: list[str] = []
    level = s.level
    if level == "components":
        check_same_architecture(hm_a, hm_b)              # one clear line when they differ
    elif level == "auto":
        try:
            check_same_architecture(hm_a, hm_b)
            level = "components"
        except UsageError as e:
            level = "blackbox"
            notes.append(f"components skipped: {e}")

    t = time.perf_counter()
    bb = blackbox_diff(hm_a, hm_b, source, n_tokens=s.n_tokens, context_len=s.context_len, batch_size=s.batch_size,
                       metric=s.metric, top_k=s.top_k, n_random=s.n_random, seed=s.seed, rank=s.rank, progress=progress)
    timings["blackbox_s"] = time.perf_counter() - t
    side = _choose_side(bb, s.side)
    tops = bb.top[side]

    tasks = []
    t = time.perf_counter()
    for task in s.tasks:
        tasks.append(compare_task(hm_a, hm_b, task, n=s.task_items, seed=s.seed).model_dump())
    if s.tasks:
        timings["tasks_s"] = time.perf_counter() - t

    comps: dict[str, list[dict]] = {}
    patching = None
    if level == "components":
        t = time.perf_counter()
        comps.update(weight_diff(hm_a, hm_b))
        timings["weights_s"] = time.perf_counter() - t
        t = time.perf_counter()
        act = activation_diff(hm_a, hm_b, open_source(s.corpus or DEFAULT_CORPUS), n_tokens=s.act_tokens,
                              context_len=s.context_len, batch_size=s.batch_size, progress=progress)
        act.pop("_summary", None)
        comps.update(act)
        timings["activations_s"] = time.perf_counter() - t
        if bb.mode == "token" and tops:
            t = time.perf_counter()
            comps["dla"] = dla_diff(hm_a, hm_b, tops[:s.n_contexts], n_pos=s.n_pos)
            timings["dla_s"] = time.perf_counter() - t
            t = time.perf_counter()
            better, worse = (hm_b, hm_a) if side == "b_better" else (hm_a, hm_b)
            only = [r["component"] for r in comps["dla"][:s.patch_top]] if s.patch_top else None
            comps["patching"], patching = patch_diff(better, worse, tops[:s.n_contexts], n_pos=s.n_pos, only=only,
                                                     progress=progress)
            patching.update({"from": better.spec, "into": worse.spec})
            timings["patching_s"] = time.perf_counter() - t

    summary = _summary(bb, side, comps, tasks)
    did = diff_id(hm_a.spec, hm_b.spec, s)
    store.put_diff(did, model_a=hm_a.spec, model_b=hm_b.spec, mode=bb.mode, level=level,
                   corpus=s.corpus or DEFAULT_CORPUS, n_tokens=bb.n_tokens_a,
                   settings={**s.model_dump(), "side_chosen": side, "patching": patching, "notes": notes},
                   summary=summary, contexts=_context_rows(bb), components=_component_rows(comps), tasks=tasks)

    explanation = None
    if s.explain != "none":
        t = time.perf_counter()
        explanation = explain_side(store, did, bb, side, hm_a.spec, hm_b.spec, explain=s.explain, llm=llm,
                                   llm_base_url=llm_base_url, k=s.k, seed=s.seed)
        timings["explain_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return DiffResult(id=did, model_a=hm_a.spec, model_b=hm_b.spec, mode=bb.mode, level=level, side=side,
                      summary=summary, blackbox=bb, components=comps, patching=patching, tasks=tasks,
                      explanation=explanation, notes=notes, timings={k: round(v, 3) for k, v in timings.items()})


def _summary(bb: BlackBoxResult, side: str, comps: dict, tasks: list[dict]) -> dict:
    out: dict[str, Any] = {**bb.summary, "mode": bb.mode, "metric": bb.metric, "rank": bb.rank,
                           "n_contexts": bb.n_contexts, "n_units": bb.n_units, "side": side}
    if bb.mode == "token":
        for sd in SIDES:
            top10 = bb.top[sd][:10]
            out[f"repeat_frac_top10_{sd}"] = round(sum(is_repeat_context(r) for r in top10) / max(1, len(top10)), 3)
    out["top_components"] = {a: [r["component"] for r in rows[:5]] for a, rows in comps.items()}
    if tasks:
        out["tasks"] = {t["task"]: {k: t[k] for k in ("logit_diff_a", "logit_diff_b", "accuracy_a", "accuracy_b")}
                        for t in tasks}
    return out


def _context_rows(bb: BlackBoxResult) -> list[dict]:
    rows = []
    for side in SIDES:
        for rank, r in enumerate(bb.top[side]):
            rows.append({"side": side, "rank": rank, "ctx_idx": r.ctx_idx, "score": r.max_act, "tokens": r.tokens,
                         "values": bb.values[side][r.ctx_idx], "input_ids": r.input_ids})
    for rank, r in enumerate(bb.random):
        rows.append({"side": "random", "rank": rank, "ctx_idx": r.ctx_idx, "score": r.max_act, "tokens": r.tokens,
                     "values": bb.values["random"][r.ctx_idx], "input_ids": r.input_ids})
    return rows


def _component_rows(comps: dict[str, list[dict]]) -> list[dict]:
    return [{"analysis": a, **r} for a, rows in comps.items() for r in rows]


def explain_side(store, did: str, bb: BlackBoxResult, side: str, model_a: str, model_b: str, *,
                 explain: str = "baseline", llm=None, llm_base_url: str | None = None, k: int = 1,
                 seed: int = 0) -> dict:
    """Explain one side's top contexts with the explain pipeline and score the explanation on
    held-out contexts (top and random) with the same scorers, exact and control scores included.
    Stored in explanations / scores, their subject the diff's side."""
    from ..core.subjects import DIFF_PREFIX, Subject
    from ..mine.records import UnitExemplars, UnitStats
    from .neuron import ExplainSettings, explain_exemplars, make_llm

    top, rand = bb.side_records(side)
    subject = Subject.of_diff(did, side)
    # (run_id and unit: parts of the stored rows' content keys, as they were before schema v5)
    ex = UnitExemplars(model_id=f"{model_a} vs {model_b}", run_id=DIFF_PREFIX + did, unit=subject.id,
                       stats=UnitStats(max_act=max((r.max_act for r in top), default=0.0)), top=top, quantiles=[],
                       random=rand)
    es = ExplainSettings(k=k, seed=seed, explainer="llm" if explain == "llm" else "baseline")
    if explain == "llm" and (llm is None or isinstance(llm, str)):
        from ..config import Settings

        cfg = Settings.defaults()                   # the library's; the CLI passes the LLM it resolved
        llm = make_llm(llm or cfg.llm, store=store, base_url=llm_base_url or cfg.llm_base_url)
    res = explain_exemplars(store, ex, llm if explain == "llm" else None, subject=subject,
                            model_id=ex.model_id, settings=es)
    who = model_b if side == "b_better" else model_a
    other = model_a if side == "b_better" else model_b
    out = {"side": side, "better": who, "worse": other, "framing": f"where {who} predicts the text better than {other}",
           "baseline": {"text": res.baseline.text, "scores": {k: v.model_dump(exclude={"details"})
                                                              for k, v in res.baseline.scores.items()}},
           "control": res.control, "split_sizes": res.split_sizes}
    if res.explanation is not None:
        out["llm"] = {"text": res.explanation.text, "explainer": res.explanation.explainer,
                      "scores": {k: v.model_dump(exclude={"details"}) for k, v in res.explanation.scores.items()}}
    return out
