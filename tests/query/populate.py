"""A small, realistic store written directly through Store/sqlite-utils (no model, no LLM):
a model, a corpus with decoded contexts, a mining run, records with float16 activations,
LLM and baseline explanations, simulation scores with intervals and per-record simulated
activations, head scores, an IOI-like dataset with two patch runs, and LLM calls.

build_store(path, part=i, n_parts=n) writes only unit shard i of n (plus the rows every worker
writes), so merging the n shards must give the store that build_store(path) writes at once."""

from __future__ import annotations

import json

from autointerp.store import Store, content_hash, pack_f16, pack_i32

MODEL = "tiny-llama"
INFO = dict(family="llama", n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, d_head=16, d_mlp=16, vocab_size=40)
T0 = "2025-01-01T00:00:00+00:00"
CORPUS = "corpus-1"
RUN = "run-1"
DATASET = "ioi-small"

SENTENCES = [
    "On Monday the cat sat on the mat .",
    "Paris is the capital of France and big .",
    "when Mary and John went to the store",
    "then John gave a drink to Mary .",
    "On Friday the dog ran to the park .",
    "the red house is small , the tree big",
]

# unit -> (LLM explanation, simulation score, ci half-width, baseline text, baseline score)
UNITS = {
    "L0/N3": ("days of the week, especially Monday and Friday", 0.62, 0.08, "Monday Friday On", 0.30),
    "L0/N7": ("the word 'the' before a noun", 0.15, 0.10, "the", 0.12),
    "L1/N2": ("capital cities such as Paris", 0.48, 0.09, "Paris capital", 0.25),
    "L1/N5": ("names of people like Mary and John", 0.33, 0.07, "Mary John", 0.20),
    "L2/N1": ("sentence-final punctuation", -0.05, 0.11, ". ,", 0.02),
    "L1/H0": ("attends to the previous token", 0.41, 0.06, "previous token", 0.10),
    "L2/H1": ("induction head: attends to the token after an earlier copy of the current token", 0.70, 0.05,
              "repeated names", 0.35),
}
HEAD_SCORES = {"L1/H0": {"previous_token": 0.81, "induction": 0.05}, "L2/H1": {"induction": 0.77, "previous_token": 0.10}}
# patch effects (fraction of the logit difference restored) for the heads run and the neurons run
HEAD_EFFECTS = {"L1/H0": 0.12, "L2/H1": 0.55, "L2/H3": -0.31, "L0/H2": 0.01}
NEURON_EFFECTS = {"L1/N5": 0.40, "L0/N3": 0.02, "L2/N1": -0.22}


def unit_names() -> list[str]:
    return list(UNITS)


def _acts(unit: str, ctx: int, n: int) -> list[float]:
    """Deterministic activations: a peak on one token that depends on the unit and context."""
    h = int(content_hash(unit, ctx), 16)
    peak = h % n
    return [round(3.0 * (1.0 if i == peak else 0.1 * ((h >> i) % 5)) / (1 + ctx % 3), 3) for i in range(n)]


def build_store(path, part: int | None = None, n_parts: int = 1) -> Store:
    s = Store(path)
    units = [u for i, u in enumerate(UNITS) if part is None or i % n_parts == part]
    db = s.db
    with s.tx():
        db["models"].insert({"id": MODEL, **INFO, "created_at": T0}, ignore=True)
        db["corpora"].insert(dict(id=CORPUS, name="test-sentences", model_id=MODEL, context_len=8,
                                  n_contexts=len(SENTENCES), settings_json="{}", created_at=T0), ignore=True)
        for i, text in enumerate(SENTENCES):
            toks = text.split()[:8]
            toks = [(" " + t if j else t) for j, t in enumerate(toks)]
            db["contexts"].insert(dict(corpus_id=CORPUS, idx=i, token_ids=pack_i32(range(len(toks))),
                                       tokens_json=json.dumps(toks)), ignore=True)
        db["mining_runs"].insert(dict(id=RUN, model_id=MODEL, corpus_id=CORPUS, settings_json='{"k": 3}',
                                      n_done=len(SENTENCES), status="done", created_at=T0, updated_at=T0), ignore=True)
        db["datasets"].insert(dict(name=DATASET, task="ioi", source="builtin", model_id=MODEL, n_items=2,
                                   stats_json='{"accepted": 2}', created_at=T0), ignore=True)
        for i, (clean, corrupt) in enumerate([("when Mary and John went to the store , John gave a drink to",
                                               "when Mary and John went to the store , Mary gave a drink to"),
                                              ("then John and Mary went to the park , Mary gave a drink to",
                                               "then John and Mary went to the park , John gave a drink to")]):
            db["pairs"].insert(dict(dataset=DATASET, idx=i, clean=clean, corrupt=corrupt, answer=" Mary" if i == 0 else " John",
                                    wrong=" John" if i == 0 else " Mary", clean_logit_diff=1.5, corrupt_logit_diff=-1.2,
                                    meta_json=None), ignore=True)
        # a patch run every worker writes (same key), and one only shard 0 (or the full store) writes
        heads_key = content_hash("heads", DATASET)
        db["patch_runs"].insert(dict(key=heads_key, dataset=DATASET, model_id=MODEL, what="heads", method="activation",
                                     direction="denoising", clean_logit_diff=1.5, corrupt_logit_diff=-1.2,
                                     settings_json="{}", created_at=T0), ignore=True)
        run_id = db.execute("select id from patch_runs where key = ?", [heads_key]).fetchone()[0]
        for unit, eff in HEAD_EFFECTS.items():
            db.execute("insert into patch_results(run_id, component, layer, position, effect) select ?, ?, ?, -1, ? "
                       "where not exists (select 1 from patch_results where run_id = ? and component = ? and position = -1)",
                       [run_id, unit, int(unit[1]), eff, run_id, unit])
        if part in (None, 0):
            nkey = content_hash("neurons", DATASET)
            db["patch_runs"].insert(dict(key=nkey, dataset=DATASET, model_id=MODEL, what="neurons", method="attribution",
                                         direction="denoising", settings_json="{}", created_at=T0), ignore=True)
            nid = db.execute("select id from patch_runs where key = ?", [nkey]).fetchone()[0]
            for unit, eff in NEURON_EFFECTS.items():
                for pos in (-1, 7):
                    db["patch_results"].insert(dict(run_id=nid, component=unit, layer=int(unit[1]), position=pos,
                                                    effect=eff if pos == -1 else eff / 2))
        for unit in units:
            _write_unit(s, unit, list(UNITS).index(unit))
    return s


def _write_unit(s: Store, unit: str, k: int) -> None:
    db = s.db
    text, score, hw, base_text, base_score = UNITS[unit]
    layer = int(unit[1:unit.index("/")])
    is_head = "/H" in unit
    rec_ids = []
    maxes = []
    for rank, ctx in enumerate(range(len(SENTENCES))):
        acts = _acts(unit, ctx, 8)
        kind, bin_ = ("top_attn" if is_head else "top", rank) if rank < 3 else ("quantile", rank - 3)
        extra = None
        if is_head:
            attn = [0.0] * 8
            q = max(range(8), key=lambda i: acts[i])
            attn[max(q - 1, 0)] = 0.7
            attn[0] += 0.3
            extra = pack_f16(attn)
        r = db["records"].insert(dict(run_id=RUN, unit=unit, kind=kind, bin=bin_, ctx_idx=ctx, max_act=max(acts),
                                      acts=pack_f16(acts), extra=extra))
        rec_ids.append((r.last_pk, kind, bin_, ctx, acts))
        maxes.append(max(acts))
    db["unit_stats"].insert(dict(run_id=RUN, unit=unit, layer=layer, max_act=max(maxes), mean_act=0.2, std_act=0.4,
                                 frac_active=0.05, hist_json="[]"))
    if not is_head:
        db["unit_logits"].insert(dict(model_id=MODEL, unit=unit,
                                      promoted_json=json.dumps([[" Monday", 0.9], [" Friday", 0.7]] if k % 2 == 0 else [[" Paris", 0.8]]),
                                      suppressed_json=json.dumps([[" the", -0.5]])))
    for detector, v in HEAD_SCORES.get(unit, {}).items():
        db["head_scores"].insert(dict(model_id=MODEL, unit=unit, detector=detector, score=v, created_at=T0))
    for explainer, method, etext, sc in (("llm-small", "completion-bestof3", text, score),
                                         ("baseline", "baseline", base_text, base_score)):
        e = db["explanations"].insert(dict(key=content_hash("expl", unit, explainer), model_id=MODEL, unit=unit, layer=layer,
                                           run_id=RUN, explainer=explainer, method=method, text=etext,
                                           template="explain-v1" if explainer != "baseline" else None,
                                           settings_json="{}", created_at=T0))
        details = {"records": [{"record_id": rid, "kind": kind, "bin": b, "ctx_idx": ctx,
                                "true": acts, "simulated": [round(a * 0.5 + 0.3 * (i % 2), 3) for i, a in enumerate(acts)]}
                               for rid, kind, b, ctx, acts in rec_ids]}
        db["scores"].insert(dict(key=content_hash("score", unit, explainer, "simulation"), explanation_id=e.last_pk,
                                 kind="simulation", value=sc, ci_low=round(sc - hw, 3), ci_high=round(sc + hw, 3), n=len(rec_ids),
                                 scorer="llm-small", details_json=json.dumps(details), created_at=T0,
                                 control=0.1, margin=round(sc - 0.1, 3), margin_low=round(sc - 0.1 - hw, 3),
                                 margin_high=round(sc - 0.1 + hw, 3)))
        db["scores"].insert(dict(key=content_hash("score", unit, explainer, "detection"), explanation_id=e.last_pk,
                                 kind="detection", value=round(0.5 + sc / 2, 3), n=10, scorer="llm-small", created_at=T0))
        if explainer != "baseline":
            for call_kind, pt, ct in (("complete", 400 + k, 30), ("logprobs", 900 + k, 0)):
                db["llm_calls"].insert(dict(backend="embedded", model="llm-small", kind=call_kind, template="explain-v1",
                                            prompt_tokens=pt, completion_tokens=ct, latency_s=0.5, cost_usd=0.001 * (pt + ct) / 100,
                                            cache_hit=0, created_at=f"2025-01-01T00:{k:02d}:00+00:00|{unit}"))
