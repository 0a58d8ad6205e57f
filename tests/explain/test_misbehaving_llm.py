"""A misbehaving LLM behind a real local HTTP server (OpenAI-compatible, chat only): prose
instead of an explanation, a 20,000-character reply, prose instead of JSON values and yes/no
answers. Nothing computed from unparseable output is stored as a score; nothing half-done is
left behind; the reason is said."""

import importlib.util
from pathlib import Path

import pytest

from autointerp.errors import LLMError
from autointerp.pipeline import ExplainSettings, explain_exemplars
from autointerp.score.splits import SplitSizes
from autointerp.store import Store

_spec = importlib.util.spec_from_file_location("_llm_conftest", Path(__file__).parents[1] / "llm" / "conftest.py")
_llm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_llm)

from test_explain_api import make_exemplars  # noqa: E402  (same directory)


@pytest.fixture
def srv():
    s = _llm.FakeServer()
    yield s
    s.close()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db")
    s.put_model("tiny", dict(family="llama", n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=16, vocab_size=50))
    return s


def _llm_for(srv, store, monkeypatch):
    from autointerp.llm import get_llm

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    llm = get_llm("openai:test", store=store, base_url=srv.url)
    return llm


SETTINGS = ExplainSettings(k=1, style="chat", simulator="json", n_boot=50, sizes=SplitSizes(n_train=4, n_calib=0, n_test=3))


@pytest.mark.parametrize("reply", ["Sure! Here is a poem about the sea instead: the waves...", "x" * 20000, "",
                                   "I'm sorry, I cannot help with that."])
def test_prose_explanation_is_refused_and_nothing_is_stored(reply, srv, store, rec, monkeypatch):
    srv.default["/v1/chat/completions"] = lambda body: _llm.chat_body([reply] * (body.get("n") or 1))
    llm = _llm_for(srv, store, monkeypatch)
    with pytest.raises(LLMError) as e:
        explain_exemplars(store, make_exemplars(rec), llm, settings=SETTINGS)
    assert "no usable explanation" in str(e.value) and "nothing was stored" in str(e.value)
    assert store.query("select count(*) n from explanations")[0]["n"] == 0     # no baseline left behind either
    assert store.query("select count(*) n from scores")[0]["n"] == 0
    assert srv.hits["/v1/chat/completions"] == 2                               # the sample, then one greedy retry


def test_prose_instead_of_values_gives_null_scores_with_reasons(srv, store, rec, monkeypatch):
    def chat(body):
        text = body["messages"][-1]["content"]
        if "activations" in str(body["messages"][0]).lower() or "tokens (" in text.lower():
            return _llm.chat_body(["Sure! I think the neuron likes animals."])       # no JSON values
        if "explanation" in str(body["messages"][0]).lower() and body.get("max_tokens") == 3:
            return _llm.chat_body(["Hmm, hard to say."])                            # neither yes nor no
        return _llm.chat_body(['the words "cat" and "dog"'] * (body.get("n") or 1))
    srv.default["/v1/chat/completions"] = chat
    llm = _llm_for(srv, store, monkeypatch)
    res = explain_exemplars(store, make_exemplars(rec), llm, settings=SETTINGS)
    assert res.explanation.text == 'the words "cat" and "dog"'
    for e in (res.explanation, res.baseline):
        sim = e.scores["simulation"]
        assert sim.value is None and sim.reason.startswith("unparseable")
        for task in ("detection", "fuzzing"):
            if task in e.scores:
                assert e.scores[task].value is None and e.scores[task].reason.startswith("unparseable")
    # the exact score of the baseline needs no LLM and is a real number
    assert res.baseline.scores["simulation_exact"].value > 0.9
    rows = store.query("select kind, value, reason from scores where value is null")
    assert rows and all(r["reason"] for r in rows)
