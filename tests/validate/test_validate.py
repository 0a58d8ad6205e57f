"""Causal validation: probes and interventions on a tiny mined model, real forward passes.

The key test: for neurons whose top tokens come from mining, an explanation quoting those tokens
gets a clearly higher probe AUC than one quoting tokens the neuron ignores."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from autointerp.llm.base import LLM, Result
from autointerp.validate import KINDS, ValidateSettings, parse_explanation, validate_explanation
from autointerp.validate.probes import Probe, probe_scores, swap_words

from .conftest import peak_token_purity

MODEL = "tiny-gpt2"


# ---- helpers -----------------------------------------------------------------------------------
_CLEAR: dict = {}


def _clear_units(store, rid, n=4):
    """The layer-2 neurons whose top records most often peak on one token (from mining)."""
    from autointerp.mine import load_exemplars

    if rid in _CLEAR:
        return _CLEAR[rid][:n]

    cands = []
    for i in range(96):
        ex = load_exemplars(store, rid, f"L2/N{i}")
        purity, tok = peak_token_purity(ex)
        if tok.isalpha():
            cands.append((purity, ex.stats.max_act, f"L2/N{i}", tok, ex))
    cands.sort(key=lambda c: (-c[0], -c[1]))
    _CLEAR[rid] = cands
    return cands[:n]


def _quiet_words(ex, exclude, n=3):
    """Words the neuron is least active on anywhere in its records."""
    mx = defaultdict(float)
    for r in ex.top + ex.random + ex.quantiles:
        for t, a in zip(r.tokens, r.acts):
            mx[t.strip()] = max(mx[t.strip()], a)
    ex_l = {e.lower() for e in exclude}
    return [w for w, _ in sorted(mx.items(), key=lambda kv: (kv[1], kv[0])) if w.isalpha() and w.lower() not in ex_l][:n]


def _put(store, unit, rid, text, explainer="test"):
    return store.put_explanation(key=f"{explainer}:{unit}:{text}", model_id=MODEL, unit=unit, layer=2, run_id=rid,
                                 explainer=explainer, method="test", text=text)


class JsonLLM(LLM):
    """A deterministic fake LLM: replies with the JSON it was given (or garbage)."""

    backend, model, name = "fake", "fake-probes", "fake:fake-probes"

    def __init__(self, reply, **kw):
        super().__init__(**kw)
        self.reply = reply
        self.calls = 0

    def _chat(self, messages, *, temperature, max_tokens, n, seed, stop):
        self.calls += 1
        return Result([self.reply(messages) if callable(self.reply) else self.reply], 10, 10)


# ---- pure parts ----------------------------------------------------------------------------------
def test_parse_explanation_baseline_and_content_words():
    p = parse_explanation('the tokens "cat", "dog" and "mouse", often before "food" or "ate"')
    assert p["input"] == ["cat", "dog", "mouse"] and p["output"] == ["food", "ate"] and p["source"] == "quoted"
    p = parse_explanation("mentions of the capital cities of European countries.")
    assert p["source"] == "content" and "capital" in p["input"] and "the" not in p["input"]
    assert parse_explanation("the word “Paris” followed by 'is'")["input"] == ["Paris"]


def test_probe_scores_definitions():
    ps = [Probe(text=str(i), label=lab, source="code", max_act=a, fires=a >= 0.5)
          for i, (lab, a) in enumerate([(True, 0.9), (True, 0.6), (True, 0.1), (False, 0.7), (False, 0.0), (False, 0.2)])]
    sc = probe_scores(ps, 0.5, n_boot=50)
    assert sc.precision == pytest.approx(2 / 3) and sc.recall == pytest.approx(2 / 3)
    assert sc.auc == pytest.approx(6 / 9)     # positives beat negatives in 6 of 9 pairs
    assert sc.auc_ci[0] <= sc.auc <= sc.auc_ci[1]
    assert swap_words("The Cat sat; cats ran", ["cat"], "tree") == "The tree sat; cats ran"


# ---- the key test: right vs unrelated explanation on real forward passes ----------------------------
def test_probe_auc_right_explanation_beats_unrelated(mined):
    store, hm, rid = mined
    right, wrong = [], []
    for purity, _, unit, tok, ex in _clear_units(store, rid):
        good = _put(store, unit, rid, f'the token "{tok}"')
        bad = _put(store, unit, rid, "the tokens " + ", ".join(f'"{w}"' for w in _quiet_words(ex, [tok])))
        r = validate_explanation(store, hm, None, MODEL, unit, good, baseline=False)
        w = validate_explanation(store, hm, None, MODEL, unit, bad, baseline=False)
        assert r.explanation.probes.n >= 8 and all(p.source == "code" for p in r.explanation.probe_list)
        # an explanation whose probes fire on nothing (typically an unrelated one) has a null AUC
        # with its reason (no information), which for this comparison is chance
        for res, out in ((r, right), (w, wrong)):
            p = res.explanation.probes
            assert p.auc is not None or p.auc_reason
            out.append(0.5 if p.auc is None else p.auc)
    right, wrong = np.array(right), np.array(wrong)
    assert right.mean() >= 0.75, (right, wrong)
    assert right.mean() - wrong.mean() >= 0.25, (right, wrong)
    assert (right > wrong).sum() >= len(right) - 1, (right, wrong)


# ---- interventions ---------------------------------------------------------------------------------
def test_zero_ablation_moves_promoted_logits_with_the_neuron_sign(mined):
    store, hm, rid = mined
    _, _, unit, tok, ex = _clear_units(store, rid, 1)[0]
    eid = _put(store, unit, rid, f'the token "{tok}"', explainer="test-int")
    res = validate_explanation(store, hm, None, MODEL, unit, eid, baseline=False)
    it = res.explanation.intervention
    z, m = it.modes["zero"], it.modes["mean"]
    assert it.n_records > 0 and z.n >= it.n_records
    assert z.dvalue < 0                         # the neuron is positive where active: zeroing lowers it
    assert z.dlogit_promoted < 0 < z.dlogit_suppressed
    assert z.direction >= 0.8 and z.kl > 0
    assert m.dlogit_promoted < 0 and abs(m.dvalue) <= abs(z.dvalue) + 1e-6
    # the explanation's key word occurs in the top contexts: the counterfactual edit is made there
    assert it.n_edited >= 1 and it.act_drop > 0
    assert it.modes["patch"].n == z.n


def test_scores_stored_with_kinds_and_reused(mined):
    store, hm, rid = mined
    _, _, unit, tok, ex = _clear_units(store, rid, 1)[0]
    from autointerp.explain.baseline import baseline_explanation

    b_text = baseline_explanation(ex.top, ex.stats.max_act, ex.promoted)
    bid = _put(store, unit, rid, b_text, explainer="baseline")
    eid = _put(store, unit, rid, f'the token "{tok}" at the end of a phrase', explainer="test-store")
    res = validate_explanation(store, hm, None, MODEL, unit)       # newest non-baseline explanation by default
    assert res.explanation.explanation_id == eid and res.baseline.explanation_id == bid
    assert not res.explanation.cached
    for e in (eid, bid):
        rows = {r["kind"]: r for r in store.scores_for(e)}
        assert set(KINDS) <= set(rows)
        d = rows["probe_auc"]["details"]
        assert d["probes"] and {"text", "label", "max_act", "fires"} <= set(d["probes"][0])
        assert rows["probe_auc"]["value"] == pytest.approx(d["scores"]["auc"])
        assert rows["intervention"]["details"]["modes"]["zero"]["n"] > 0
    again = validate_explanation(store, hm, None, MODEL, unit)
    assert again.explanation.cached and again.baseline.cached
    assert again.explanation.probes.auc == res.explanation.probes.auc
    assert again.explanation.intervention.modes["zero"] == res.explanation.intervention.modes["zero"]


# ---- LLM-written probes (fake deterministic LLM, real forward passes) ---------------------------------
def test_llm_probes_get_swapped_negatives(mined):
    store, hm, rid = mined
    _, _, unit, tok, ex = _clear_units(store, rid, 1)[0]
    eid = _put(store, unit, rid, f'the word "{tok}"', explainer="test-llm")
    plain = " ".join(w for w in ["john", "went", "to", "the", "store", "mary", "ran"] if w != tok)
    reply = json.dumps({"positive": [f"the cat {tok} to the park", f"mary {tok} the dog", plain],
                        "negative": ["the cat ran to the park", f"a {tok} here"]})
    llm = JsonLLM(reply, store=store)
    res = validate_explanation(store, hm, llm, MODEL, unit, eid, baseline=False)
    llm_p = [p for p in res.explanation.probe_list if p.source == "llm"]
    assert llm.calls == 1
    pos = [p for p in llm_p if p.label]
    neg = [p for p in llm_p if not p.label]
    assert len(pos) == 3
    swapped = [p for p in neg if p.pair is not None]
    assert len(swapped) == 2 and all(tok not in p.text.split() for p in swapped)
    assert all(llm_p[p.pair].label and llm_p[p.pair].pair == llm_p.index(p) for p in swapped)
    assert not any(p.text == f"a {tok} here" for p in neg)   # a 'negative' holding the key word is dropped
    assert "llm" in res.explanation.probes.by_source and "code" in res.explanation.probes.by_source
    assert all(p.max_act is not None for p in llm_p)


def test_llm_failure_leaves_code_probes(mined):
    store, hm, rid = mined
    _, _, unit, tok, ex = _clear_units(store, rid, 1)[0]
    eid = _put(store, unit, rid, f'the word "{tok}" again', explainer="test-bad-llm")
    llm = JsonLLM("I am not JSON at all", store=store)
    res = validate_explanation(store, hm, llm, MODEL, unit, eid, baseline=False)
    assert "error" in res.explanation.llm_info
    assert res.explanation.probes.n > 0 and res.explanation.probes.auc is not None
    assert {p.source for p in res.explanation.probe_list} == {"code"}


# ---- CLI ----------------------------------------------------------------------------------------------
def test_cli_validate_json_and_text(mined, monkeypatch, capsys):
    store, hm, rid = mined
    from autointerp.cli import main
    from autointerp.models.hooked import HookedModel

    _, _, unit, tok, ex = _clear_units(store, rid, 1)[0]
    eid = _put(store, unit, rid, f'the token "{tok}" (cli)', explainer="test-cli")
    monkeypatch.setattr(HookedModel, "load", classmethod(lambda cls, *a, **k: hm))
    main(["validate", "--unit", unit, "--explanation", str(eid), "--model", MODEL, "--no-llm", "--store",
          str(store.path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["unit"] == unit and out["explanation"]["explanation_id"] == eid
    assert set(out["explanation"]["scores"]) == set(KINDS)
    main(["validate", "--unit", unit, "--explanation", str(eid), "--model", MODEL, "--no-llm", "--store", str(store.path)])
    text = capsys.readouterr().out
    assert "probe AUC" in text and "intervention" in text and "cached" in text
