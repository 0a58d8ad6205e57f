"""The store in Neuronpedia's upload format (`autointerp export --format neuronpedia`).

Neuronpedia's upload tooling (the `neuronpedia` package on PyPI, 1.2.x: `Source.upload_batch`,
which posts `FeatureRequest.upload_batch`'s payload to /api/feature/upload-batch) takes, per
source, batches of at most MAX_FEATURES_PER_BATCH features:

    {"modelId": M, "source": "<layer>-<source set>", "features": [
        {"index": i, "density": 0..1 | null,
         "activations": [{"tokens": [...], "values": [...], "quantileMax", "quantileMin", "quantileFraction"}],
         "explanations": [{"text", "methodName", "modelName"}],
         "topLogits": [{"token", "value"}] | null, "bottomLogits": [...] | null}]}

What maps to what: a unit's layer and index are the source's layer and the feature index; its
source set is `autointerp-neurons`, `autointerp-heads` or the SAE's name (letters, digits and
hyphens only, as Neuronpedia names sources); density is the mining run's fraction of active
tokens; the logits are the unit's promoted / suppressed tokens; every stored record is an
activation, grouped as the viewer groups them: records of one quantile bin (or the top records)
share quantileMin / quantileMax (the least and largest max activation among them), and
quantileFraction is the bin's share of the reservoir sample (1 / number of bins; null for top and
random records). Explanations keep their text, method (methodName "autointerp-<explainer>-<method>")
and explainer model (modelName).

Neuronpedia's upload payload has no field for scores, so the scores go to a side file, one JSON
line per score with the (modelId, source, index, explanation text) that finds its explanation.
"""

from __future__ import annotations

import re
from typing import Iterator

from ..core.units import Unit

MAX_FEATURES_PER_BATCH = 128      # neuronpedia.requests.feature_request.MAX_FEATURES_PER_BATCH
SOURCE_SETS = {"neuron": "autointerp-neurons", "head": "autointerp-heads"}


def np_name(text: str) -> str:
    """A Neuronpedia id: letters, digits and hyphens."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]+", "-", text)).strip("-") or "x"


def source_of(u: Unit) -> str:
    return f"{u.layer}-{np_name(u.sae if u.record.needs_sae else SOURCE_SETS[u.kind])}"


def _feature(v: dict) -> tuple[dict, list[dict]]:
    """(the feature payload, its score rows) of one unit view (Store.unit_view)."""
    st = v.get("stats") or {}
    n_bins = len({r["bin"] for r in v["records"] if r["kind"] == "quantile"})
    groups = v.get("groups") or {}
    acts = []
    for r in v["records"]:
        key = f"quantile/{r['bin']}" if r["kind"] == "quantile" else r["kind"]
        g = groups.get(key) if r["kind"] in ("quantile", "top") else None
        acts.append({"tokens": list(r["tokens"]), "values": [round(float(a), 4) for a in r["acts"]],
                     "quantileMax": round(g["hi"], 4) if g else None, "quantileMin": round(g["lo"], 4) if g else None,
                     "quantileFraction": round(1 / n_bins, 6) if r["kind"] == "quantile" and n_bins else None})
    expls, scores = [], []
    for e in v["explanations"] + v["baselines"]:
        expls.append({"text": e["text"], "methodName": f"autointerp-{e['explainer']}-{e['method']}",
                      "modelName": e["explainer"]})
        for s in e["scores"]:
            scores.append({"explanationText": e["text"], "kind": s["kind"], "value": s["value"], "ciLow": s["ci_low"],
                           "ciHigh": s["ci_high"], "n": s["n"], "control": s.get("control"), "margin": s.get("margin"),
                           "scorer": s["scorer"], "reason": s.get("reason")})
    logits = lambda xs: [{"token": str(t), "value": float(w)} for t, w in xs] or None  # noqa: E731
    feat = {"index": v["index"], "density": st.get("frac_active"), "activations": acts, "explanations": expls,
            "topLogits": logits(v["promoted"]), "bottomLogits": logits(v["suppressed"])}
    return feat, scores


def neuronpedia_export(store, model: str | None = None, np_model: str | None = None,
                       max_records: int = 10_000) -> Iterator[tuple[str, dict, list[dict]]]:
    """(source, upload-batch payload, score rows) per batch of at most MAX_FEATURES_PER_BATCH
    explained units, for each model (or `model`) of the store; np_model renames the model."""
    rows = store.query("select distinct model_id, unit, layer from explanations where unit is not null "
                       + ("and model_id = ? " if model else "") + "order by model_id, layer, unit", [model] if model else [])
    by_source: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        u = Unit.parse(r["unit"])
        if u.record.needs_sae and not u.sae:
            continue                                   # an SAE latent without its SAE cannot be placed
        by_source.setdefault((r["model_id"], source_of(u)), []).append(r["unit"])
    for (mid, source), units in by_source.items():
        units.sort(key=lambda x: Unit.parse(x).index)
        mname = np_name(np_model or mid)
        for i in range(0, len(units), MAX_FEATURES_PER_BATCH):
            feats, scores = [], []
            for unit in units[i:i + MAX_FEATURES_PER_BATCH]:
                v = store.unit_view(mid, unit, max_top=max_records, per_bin=max_records)
                f, sc = _feature(v)
                feats.append(f)
                scores += [{"modelId": mname, "source": source, "index": f["index"], "unit": unit, **s} for s in sc]
            yield source, {"modelId": mname, "source": source, "features": feats}, scores
