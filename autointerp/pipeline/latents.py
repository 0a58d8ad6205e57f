"""Explain and score a list of transcoder/SAE latents (the most influential nodes of an attribution
graph): one mining pass over every needed layer's transcoder, then the usual explain -> score ->
store for each unit (the exact baseline always; the LLM's explanation when an LLM is given)."""

from __future__ import annotations

from ..core.units import Unit
from ..errors import UsageError
from .neuron import ExplainSettings, explain_exemplars


def _headline(e) -> dict:
    """The explanation's text and its first score's value, control and margin (the exact score first)."""
    sc = e.scores.get("exact") or next(iter(e.scores.values()), None)
    out = {"explanation": e.text, "explainer": e.explainer}
    if sc is not None:
        out.update(score=sc.value, control=sc.control, margin=sc.margin, score_kind=sc.kind,
                   **({"score_reason": sc.reason} if sc.reason else {}))
    return out


def explain_latents(store, hm, saes: list, units: list[str], *, corpus: str, n_tokens: int, context_len: int = 64,
                    llm=None, settings: ExplainSettings | None = None, progress: bool = False) -> dict[str, dict]:
    """{unit: explanation, explainer, score, control, margin (or reason)} for each latent unit
    (L<l>/F<i>@name), mined first (one pass, all `saes`) when the store has no such run."""
    from ..mine import load_exemplars, mine

    if not units:
        return {}
    before = dict(hm.saes)
    try:
        rid = mine(hm, store, corpus, n_tokens=n_tokens, context_len=context_len, units="latents", saes=saes,
                   progress=progress)
    finally:                              # leave the model's attached SAEs as they were
        for s in saes:
            if before.get(s.hook) is not s:
                hm.detach_sae(s)
                if s.hook in before:
                    hm.attach_sae(before[s.hook])
    s = settings or ExplainSettings(explainer="llm" if llm is not None else "baseline")
    out = {}
    for u in units:
        unit = str(Unit.parse(u))
        try:
            res = explain_exemplars(store, load_exemplars(store, rid, unit), llm, model_id=hm.spec, settings=s)
        except UsageError as e:           # e.g. a latent too rare in the mined text: null with the reason
            out[unit] = {"explanation": None, "reason": str(e)}
            continue
        out[unit] = {"run_id": rid, **_headline(res.explanation or res.baseline),
                     "baseline": _headline(res.baseline)}
    return out
