"""Issue 22's extension points: a scorer (tests/dummy_scorer.py) and a unit kind
(tests/dummy_unit_kind.py), each added in one module, run through the real explain pipeline
(a real forward pass of a tiny random Llama, a real SQLite store); the batch side is in
tests/batch/test_batch_registries.py. Also: backends and SAE architectures are registries."""

from __future__ import annotations

import random

import pytest
import torch

from autointerp.core.units import UNIT_KINDS, Unit
from autointerp.errors import UnitError


pytestmark = pytest.mark.usefixtures("dummy_extensions")   # registered for this module only


def test_the_unit_kind_is_known_everywhere_ids_are_read(tiny_llama):
    u = Unit.parse("l1/r7")
    assert (u.kind, u.id, u.hook) == ("resid", "L1/R7", "blocks.1.resid_post")
    assert u.record is UNIT_KINDS["resid"] and not u.record.needs_sae
    assert [x.id for x in Unit.find_all("see L1/R7 and L0/N2.")] == ["L1/R7", "L0/N2"]
    assert Unit.is_id("L1/R7") and not Unit.is_id("L1/Q7")
    hm = tiny_llama
    assert hm.check_unit("L1/R63").id == "L1/R63"                 # d_model = 64
    with pytest.raises(UnitError, match=r"out of range \(layer has resids 0..63\)"):
        hm.check_unit("L1/R64")
    with pytest.raises(UnitError, match="bad unit id"):
        Unit.parse("L1/Q7")


def _exemplars(hm, unit: Unit, n_ctx: int = 48):
    """A unit's exemplars from a real forward pass: its top contexts by peak activation and
    random others (what mining stores, built here for a kind the miner does not mine)."""
    from autointerp.mine.records import ActivationRecord, UnitExemplars, UnitStats
    from tinykit import WORDS

    rng = random.Random(0)
    words = [w for w in WORDS if w not in ".,"]
    texts = [" ".join(rng.choice(words) for _ in range(10)) for _ in range(n_ctx)]
    ids, mask = hm.tokenize(texts)
    _, cache = hm.run_with_cache(ids, [unit.hook], attention_mask=mask)
    acts = cache[unit.hook][..., unit.index].float()                      # [ctx, pos]
    recs = []
    for c in range(n_ctx):
        n = int(mask[c].sum())
        a = [float(x) for x in acts[c, 1:n]]                               # BOS left out, as mining does
        recs.append(ActivationRecord(ctx_idx=c, kind="top", tokens=hm.to_str_tokens(ids[c, 1:n]), acts=a,
                                     max_act=max(a), input_ids=ids[c, :n].tolist()))
    recs.sort(key=lambda r: -r.max_act)
    top = [r.model_copy(update={"bin": i}) for i, r in enumerate(recs[:14])]
    rand = [r.model_copy(update={"kind": "random"}) for r in recs[24:36]]
    flat = acts[:, 1:].flatten()
    return UnitExemplars(model_id="tiny-llama", run_id="forward-pass", unit=unit.id, first_pos=1,
                         stats=UnitStats(max_act=float(flat.max()), mean_act=float(flat.mean()),
                                         std_act=float(flat.std()), frac_active=float((flat > 0).float().mean())),
                         top=top, quantiles=[], random=rand).model_copy(update={"run_id": None})  # no mining run stored


def test_explain_runs_the_dummy_scorer_on_the_dummy_unit_kind(tiny_llama, tmp_path):
    from autointerp.pipeline import ExplainSettings, explain_exemplars
    from autointerp.score.splits import SplitSizes
    from autointerp.store import Store

    ex = _exemplars(tiny_llama, Unit.parse("L1/R7"))
    s = ExplainSettings(explainer="baseline", scorers=("exact", "peak_token"), n_boot=50,
                        sizes=SplitSizes(n_train=6, n_calib=1, n_test=4))
    with Store(tmp_path / "r.db") as st:
        st.put_model("tiny-llama", tiny_llama.info())
        res = explain_exemplars(st, ex, None, settings=s)
        rows = st.query("select s.kind, s.value, s.n from scores s join explanations e on e.id = s.explanation_id "
                        "where e.unit = 'L1/R7'")
    pk = res.baseline.scores["peak_token"]
    peaks = pk.details["peaks"]
    words = set(res.baseline.text.lower().replace(",", " ").replace('"', " ").split())
    assert pk.n == len(peaks) >= 1 and pk.value == pytest.approx(sum(p in words for p in peaks) / len(peaks))
    assert "simulation_exact" in res.baseline.scores
    assert {r["kind"] for r in rows} >= {"peak_token", "simulation_exact"}


def test_the_viewer_shows_the_dummy_score_with_its_registry_label(tiny_llama, tmp_path):
    """The unit page of a real viewer (HTTP on 127.0.0.1) over a store the real pipeline wrote:
    the dummy scorer's score is listed under the label it registered (not a hand-written list),
    after the built-in exact score (registry order), with its value and n."""
    import re
    import threading
    import urllib.request

    from autointerp.pipeline import ExplainSettings, explain_exemplars
    from autointerp.score.splits import SplitSizes
    from autointerp.serve import make_server
    from autointerp.store import Store

    ex = _exemplars(tiny_llama, Unit.parse("L0/N5"))
    s = ExplainSettings(explainer="baseline", scorers=("peak_token", "exact"), n_boot=50,
                        sizes=SplitSizes(n_train=6, n_calib=1, n_test=4))
    with Store(tmp_path / "v.db") as st:
        st.put_model("tiny-llama", tiny_llama.info())
        res = explain_exemplars(st, ex, None, settings=s)
    pk = res.baseline.scores["peak_token"]
    srv = make_server(tmp_path / "v.db", "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        host, port = srv.server_address[:2]
        with urllib.request.urlopen(f"http://{host}:{port}/unit/tiny-llama/L0/N5", timeout=30) as r:
            assert r.status == 200
            body = r.read().decode()
    finally:
        srv.shutdown()
        srv.server_close()
    rows = re.findall(r"<td class='score-label[^']*' data-kind='([^']+)' title='[^']*'>([^<]+)</td>"
                      r"<td class='num'>(.*?)</td>.*?<td class='num'>([^<]*)</td><td>", body)
    by_kind = {k: (label, value, n) for k, label, value, n in rows}
    assert by_kind["peak_token"][0] == "peak-token hits"               # dummy_scorer.SPEC's label
    assert by_kind["simulation_exact"][0] == "exact sim. r"
    assert [k for k, *_ in rows].index("simulation_exact") < [k for k, *_ in rows].index("peak_token")
    label, value, n = by_kind["peak_token"]
    if pk.value is None:
        assert "null" in value
    else:
        assert value.startswith(f"{pk.value:+.3f}")
    assert n == str(pk.n)


def test_a_scorer_applies_only_to_its_unit_kinds():
    from autointerp.pipeline.neuron import ExplainSettings, Scoring

    s = ExplainSettings(explainer="baseline", scorers=("exact", "peak_token"))
    names = lambda kind: [type(sc).__name__ for sc in Scoring(None, s, kind).all()]  # noqa: E731
    assert names("resid") == ["ExactScorer", "PeakTokenScorer"]
    assert names("head") == ["ExactScorer"]                      # peak_token declares neuron and resid only


def test_scorer_names_are_checked_against_the_registry():
    from autointerp.errors import UsageError
    from autointerp.pipeline import ExplainSettings

    with pytest.raises(UsageError, match=r"unknown scorer 'nope': use simulation, exact, detection, fuzzing, .*peak_token"):
        ExplainSettings(scorers=("nope",)).check()
    assert "peak_token" not in ExplainSettings().scorers           # registered with default=False


def test_backends_and_sae_architectures_are_registries():
    from autointerp.llm import BACKENDS, parse_spec
    from autointerp.models.sae_arch import ARCHITECTURES

    assert set(BACKENDS) >= {"embedded", "openai"} and parse_spec("openai:m") == ("openai", "m")
    assert set(ARCHITECTURES) >= {"standard", "jumprelu", "topk", "transcoder", "jumprelu_transcoder", "skip_transcoder"}
    assert [n for n, a in ARCHITECTURES.items() if a.transcoder][:3] == ["transcoder", "jumprelu_transcoder",
                                                                          "skip_transcoder"]
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5]])
    sae = type("S", (), {"k": 2, "threshold": torch.tensor([1.0, 1.0, 2.5, 0.0])})()
    assert ARCHITECTURES["topk"].activate(sae, pre.clone()).tolist() == [[3.0, 0.0, 2.0, 0.0]]
    assert ARCHITECTURES["jumprelu"].activate(sae, pre.clone()).tolist() == [[3.0, 0.0, 0.0, 0.5]]
