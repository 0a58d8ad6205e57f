"""LLM-written pairs, the small-model way: templates with named slots, slot values with their
answers; the code expands and validates them on the subject model, reports the rejections by
reason with examples, stops early when the first answer yields nothing, and is bounded by
--max-llm-calls and a time budget."""

from __future__ import annotations

import time

import pytest
from tinykit import tiny_json_llm

from autointerp.errors import DatasetError
from autointerp.store import Store
from autointerp.tasks import make_dataset
from autointerp.tasks.llm_pairs import TaskSpec, clean_spec, compose, describe


class ScriptedLLM:
    """Replays a fixed TaskSpec through the same `structured` interface (the composing and
    validating code under test is real; the LLM's answer is fixed so the counts are known)."""

    name = "scripted"

    def __init__(self, spec: dict):
        self.spec = spec
        self.calls = []

    def structured(self, messages, schema, **kw):
        self.calls.append(messages)
        return schema.model_validate(self.spec)

    def structured_support(self):
        return "constrained"


SPEC = {"slot": "place",
        "templates": ["the cat sat on the {Place} and ran to the", "when mary went to the { thing } then", "no slot here",
                      "ends with {place}", "the {place} by the {where} is"],
        "groups": [{"answer": "park", "values": ["mat"]}, {"answer": "tree", "values": ["house"]},
                   {"answer": "big house", "values": ["store"]}, {"answer": "dog", "values": ["mat"]},
                   {"answer": "house", "values": ["dog"]}]}


def test_clean_spec_and_compose():
    plan, dropped = clean_spec(TaskSpec.model_validate(SPEC))
    assert plan.slot == "place"
    # the one slot of a template is the key, whatever it is called
    assert plan.templates == ["the cat sat on the {place} and ran to the", "when mary went to the {place} then"]
    assert [v.value for v in plan.values] == ["mat", "house", "store", "dog"]
    assert dropped == {"template without the {slot}": 1, "template ends with a slot": 1,
                       "template with more than one slot": 1, "value repeated": 1}
    items = compose(plan, 1000)
    assert len(items) == 2 * 4 * 3
    for it in items:
        assert it.answer != it.wrong and it.clean != it.corrupt and "{" not in it.clean
    by_x = {v.value: v.answer for v in plan.values}
    assert all(it.answer == " " + by_x[it.meta["x"]] and it.wrong == " " + by_x[it.meta["x_corrupt"]] for it in items)


def test_rejections_by_reason_with_examples(tiny_gpt2, tmp_path):
    store = Store(tmp_path / "s.db")
    llm = ScriptedLLM(SPEC)
    ds = make_dataset(store, tiny_gpt2, "where things are", n=5, llm=llm, margin=-1e9, max_llm_calls=1)
    st = ds.stats
    assert ds.source == "llm" and 1 <= ds.n_items <= 5
    assert st["candidates"] == st["accepted"] + sum(st["rejected"].values())
    assert st["rejected"]["answer_not_single_token"] >= 1           # " big house"
    assert "answer not one token: " in describe(st["rejected"])
    assert len(st["examples"]) == 3 and st["examples"][0]["reason"] in st["rejected"]
    assert {e["reason"] for e in st["examples"]} >= {"answer_not_single_token"}
    assert st["llm_calls"] == 1 and st["llm_dropped"]["template without the {slot}"] == 1
    assert "where things are" in llm.calls[0][-1]["content"]
    stored = store.get_dataset(ds.name)
    assert stored["settings"]["slot"] == "place" and stored["settings"]["structured"] == "constrained"


def test_early_stop_when_the_first_answer_yields_nothing(tiny_gpt2, tmp_path):
    bad = {**SPEC, "groups": [{"answer": "big house", "values": ["mat"]}, {"answer": "red tree", "values": ["dog"]},
                              {"answer": "small cat", "values": ["house"]}]}
    llm = ScriptedLLM(bad)
    store = Store(tmp_path / "s.db")
    with pytest.raises(DatasetError) as e:
        make_dataset(store, tiny_gpt2, "where things are", n=5, llm=llm, max_llm_calls=4)
    msg = str(e.value)
    assert len(llm.calls) == 1                                          # stopped after the first answer
    assert "answer not one token: 12" in msg and msg.count("\n  e.g. ") == 3 and "try: " in msg
    assert store.list_datasets() == []


def test_max_llm_calls_and_time_budget_bound_the_command(tiny_gpt2, tmp_path):
    store = Store(tmp_path / "s.db")
    llm = ScriptedLLM(SPEC)
    ds = make_dataset(store, tiny_gpt2, "where things are", n=500, llm=llm, margin=-1e9, max_llm_calls=3)
    assert len(llm.calls) == 3 and ds.stats["stopped"] == "--max-llm-calls 3 reached"
    llm2 = ScriptedLLM(SPEC)
    ds = make_dataset(store, tiny_gpt2, "where things are", n=500, llm=llm2, margin=-1e9, max_llm_calls=9,
                      time_budget=1e-6, name="again")
    assert len(llm2.calls) == 1 and ds.stats["stopped"].startswith("time budget")


def test_a_real_llm_writing_noise_stops_early_with_reasons(tiny_gpt2, tmp_path):
    """A random-init LLM under constrained decoding: its answer parses, nothing in it is usable,
    and the command says so after one call, in seconds."""
    t0 = time.monotonic()
    with pytest.raises(DatasetError) as e:
        make_dataset(Store(tmp_path / "s.db"), tiny_gpt2, "gendered pronoun after a name", n=24, llm=tiny_json_llm(),
                     max_llm_calls=4)
    msg = str(e.value)
    assert "no item of 'gendered pronoun after a name' passed validation (1 LLM call(s)" in msg
    assert "try: " in msg and time.monotonic() - t0 < 60


def test_described_task_without_llm_is_a_usage_error(tiny_gpt2, tmp_path):
    from autointerp.errors import UsageError

    with pytest.raises(UsageError, match="needs an LLM"):
        make_dataset(Store(tmp_path / "s.db"), tiny_gpt2, "something new", n=3)


def test_cli_pairs_for_a_task_in_words_stops_early_with_reasons(tiny_gpt2, tmp_path, capsys):
    """The whole command: a subject model directory, an embedded LLM directory (random weights,
    constrained decoding), one LLM call, exit 2 with the reasons and what to try; no dataset."""
    from tinykit import run_cli, save_model_dir

    subject = save_model_dir(tiny_gpt2, tmp_path / "subject")
    llm = tiny_json_llm()
    llm.hf.save_pretrained(tmp_path / "llm")
    llm.tok.save_pretrained(tmp_path / "llm")
    store = tmp_path / "s.db"
    t0 = time.monotonic()
    code, out, err = run_cli(capsys, "pairs", "--task", "gendered pronoun after a name", "--n", "24", "--model", subject,
                             "--llm", f"embedded:{tmp_path / 'llm'}", "--max-llm-calls", "3", "--store", store)
    assert code == 2 and time.monotonic() - t0 < 60
    assert "error: no item of 'gendered pronoun after a name' passed validation (1 LLM call(s)" in err
    assert "try: " in err
    assert Store(store).list_datasets() == []


def test_a_free_form_reply_longer_than_the_bounds_is_cut_not_refused():
    # an endpoint without structured output can return more than the schema allows; the spec keeps the first ones
    spec = TaskSpec.model_validate({"slot": "n", "templates": [f"T{i} {{n}} is" for i in range(7)],
                                    "groups": [{"answer": "even", "values": [str(2 * i) for i in range(9)]},
                                               {"answer": "odd", "values": ["1", "3"]}]})
    assert len(spec.templates) == 5
    assert spec.groups[0].values == ["0", "2", "4", "6", "8", "10"]
    plan, _ = clean_spec(spec)
    assert len(plan.values) == 8


class FailingLLM(ScriptedLLM):
    """Every call fails the way a backend reports a dead endpoint (after its retries)."""

    def structured(self, messages, schema, **kw):
        from autointerp.errors import LLMError

        self.calls.append(messages)
        raise LLMError("openai:test: HTTP 500 from http://127.0.0.1:9/v1 (after 3 attempts)\nsecond line")


def test_first_llm_call_failing_is_an_llm_error_not_a_validation_failure(tiny_gpt2, tmp_path):
    """A server error on the first call was reported as 'no item passed validation' with exit 2
    (a usage code) and tips about templates (scripts/probe_reliability.py, llm_faults)."""
    from autointerp.errors import LLMError

    llm = FailingLLM(SPEC)
    store = Store(tmp_path / "s.db")
    with pytest.raises(LLMError) as e:
        make_dataset(store, tiny_gpt2, "where things are", n=5, llm=llm, max_llm_calls=4)
    msg = str(e.value)
    assert not isinstance(e.value, DatasetError) and e.value.exit_code == 1
    assert "\n" not in msg and "first LLM call failed" in msg and "HTTP 500" in msg and "passed validation" not in msg
    assert len(llm.calls) == 1 and store.list_datasets() == []


def test_a_sentence_written_with_a_listed_value_becomes_a_template():
    # small models write "The capital of France is" instead of "The capital of {country} is"
    spec = TaskSpec.model_validate({
        "slot": "country",
        "templates": ["The capital of France is", "France and Japan are far apart, said", "No value here is",
                      "I flew to japan and landed in", "Paris is the capital of France"],
        "groups": [{"answer": "Paris", "values": ["France"]}, {"answer": "Tokyo", "values": ["Japan"]}]})
    plan, dropped = clean_spec(spec)
    assert plan.templates == ["The capital of {country} is", "I flew to {country} and landed in"]
    # two values in one sentence, none, or the value last: not a template
    assert dropped == {"template without the {slot}": 2, "template ends with a slot": 1}
    items = compose(plan, 100)
    assert {it.clean for it in items} >= {"The capital of France is", "I flew to Japan and landed in"}


def test_compose_skips_pairs_the_subject_tokenizer_splits_differently(tiny_gpt2):
    from autointerp.tasks.validate import token_ids

    spec = TaskSpec.model_validate({
        "slot": "x", "templates": ["I saw the {x} and it was"],
        "groups": [{"answer": "red", "values": ["cat", "dog"]},
                   {"answer": "blue", "values": ["big grey sea", "sky"]}]})
    plan, _ = clean_spec(spec)
    n_tok = lambda s: len(token_ids(tiny_gpt2, s))  # noqa: E731
    everything = compose(plan, 100)
    assert any(n_tok(it.clean) != n_tok(it.corrupt) for it in everything)   # the case exists
    dropped: dict = {}
    kept = compose(plan, 100, n_tokens=n_tok, dropped=dropped)
    assert kept and all(n_tok(it.clean) == n_tok(it.corrupt) for it in kept)
    assert dropped == {"pair with different token counts (subject tokenizer)": len(everything) - len(kept)}
