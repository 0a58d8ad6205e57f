"""LLM-written pairs, the small-model way: a frame (templates with a named slot, slot values),
then the answer after each value's sentence; the code expands and validates them on the subject
model, reports the rejections by reason with examples, stops early when the first round yields
nothing, and is bounded by --max-llm-calls and a time budget."""

from __future__ import annotations

import time

import pytest
from tinykit import tiny_json_llm

from autointerp.errors import DatasetError, UsageError
from autointerp.store import Store
from autointerp.tasks import make_dataset
from autointerp.tasks.llm_pairs import (Frame, answer_keys, clean_frame, compose, describe, example_templates,
                                        plan_from)


class ScriptedLLM:
    """Replays a fixed frame and value -> answer map through the same `structured` interface (the
    composing and validating code under test is real; the LLM's answers are fixed so the counts
    are known). The answers request is answered per key: the answer of the value in the sentence."""

    name = "scripted"

    def __init__(self, spec: dict):
        self.frame = {k: spec[k] for k in ("slot", "templates", "values")}
        self.answers = spec["answers"]
        self.calls = []

    def structured(self, messages, schema, **kw):
        self.calls.append(messages)
        if schema is Frame:
            return Frame.model_validate(self.frame)
        keys = schema["required"]
        assert list(schema["properties"]) == keys
        return {k: next((a for v, a in sorted(self.answers.items(), key=lambda x: -len(x[0])) if v in k), "") for k in keys}

    def structured_support(self):
        return "constrained"


SPEC = {"slot": "place",
        "templates": ["the cat sat on the {Place} and ran to the", "when mary went to the { thing } then", "no slot here",
                      "ends with {place}", "the {place} by the {where} is"],
        "values": ["mat", "house", "store", "Mat", "dog", "a {b}"],
        "answers": {"mat": "park", "house": "tree", "store": "big house", "dog": "house"}}


def plan_of(spec: dict, answers: list | None = None):
    key, tmpl, vals, dropped = clean_frame(Frame.model_validate({k: spec[k] for k in ("slot", "templates", "values")}))
    ans = answers if answers is not None else [spec["answers"].get(v, "") for v in vals]
    return plan_from(key, tmpl, vals, ans, dropped), dropped


def test_clean_frame_and_compose():
    plan, dropped = plan_of(SPEC)
    assert plan.slot == "place"
    # the one slot of a template is the key, whatever it is called
    assert plan.templates == ["the cat sat on the {place} and ran to the", "when mary went to the {place} then"]
    assert [v.value for v in plan.values] == ["mat", "house", "store", "dog"]
    assert dropped == {"template without the {slot}": 1, "template ends with a slot": 1,
                       "template with more than one slot": 1, "value repeated": 1,
                       "value with braces, brackets, quotes or a colon": 1}
    items = compose(plan, 1000)
    assert len(items) == 2 * 4 * 3
    for it in items:
        assert it.answer != it.wrong and it.clean != it.corrupt and "{" not in it.clean
    by_x = {v.value: v.answer for v in plan.values}
    assert all(it.answer == " " + by_x[it.meta["x"]] and it.wrong == " " + by_x[it.meta["x_corrupt"]] for it in items)


def test_values_without_an_answer_are_dropped_and_counted():
    plan, dropped = plan_of(SPEC, ["park", None, "", "  \n"])      # mat, house, store, dog
    assert [(v.value, v.answer) for v in plan.values] == [("mat", "park")]
    assert dropped["answer empty"] == 3 and dropped["all values have the same answer"] == 1
    assert compose(plan, 100) == []


def test_rejections_by_reason_with_examples(tiny_gpt2, tmp_path):
    store = Store(tmp_path / "s.db")
    llm = ScriptedLLM(SPEC)
    ds = make_dataset(store, tiny_gpt2, "where things are", n=5, llm=llm, margin=-1e9, max_llm_calls=2)
    st = ds.stats
    assert ds.source == "llm" and 1 <= ds.n_items <= 5
    assert st["candidates"] == st["accepted"] + sum(st["rejected"].values())
    assert st["rejected"]["answer_not_single_token"] >= 1           # " big house"
    assert "answer not one token: " in describe(st["rejected"])
    assert len(st["examples"]) == 3 and st["examples"][0]["reason"] in st["rejected"]
    assert {e["reason"] for e in st["examples"]} >= {"answer_not_single_token"}
    assert st["llm_calls"] == 2 and st["llm_dropped"]["template without the {slot}"] == 1
    assert "where things are" in llm.calls[0][-1]["content"] and "where things are" in llm.calls[1][-1]["content"]
    # the second request lists the first template filled with each usable value
    assert "the cat sat on the store and ran to the" in llm.calls[1][-1]["content"]
    assert st["map"] and all(st["map"][it.meta["x"]] == it.answer.strip() for it in ds.items)
    stored = store.get_dataset(ds.name)
    assert stored["settings"]["slot"] == "place" and stored["settings"]["structured"] == "constrained"


def test_early_stop_when_the_first_answer_yields_nothing(tiny_gpt2, tmp_path):
    bad = {**SPEC, "values": ["mat", "dog", "house"], "answers": {"mat": "big house", "dog": "red tree", "house": "small cat"}}
    llm = ScriptedLLM(bad)
    store = Store(tmp_path / "s.db")
    with pytest.raises(DatasetError) as e:
        make_dataset(store, tiny_gpt2, "where things are", n=5, llm=llm, max_llm_calls=4)
    msg = str(e.value)
    assert len(llm.calls) == 2                                          # stopped after the first round
    assert "answer not one token: 12" in msg and msg.count("\n  e.g. ") == 3 and "try: " in msg
    assert store.list_datasets() == []


def test_max_llm_calls_and_time_budget_bound_the_command(tiny_gpt2, tmp_path):
    store = Store(tmp_path / "s.db")
    llm = ScriptedLLM(SPEC)
    ds = make_dataset(store, tiny_gpt2, "where things are", n=500, llm=llm, margin=-1e9, max_llm_calls=7)
    assert len(llm.calls) == 6 and ds.stats["stopped"] == "--max-llm-calls 7 reached"   # 3 rounds of 2 calls
    llm2 = ScriptedLLM(SPEC)
    ds = make_dataset(store, tiny_gpt2, "where things are", n=500, llm=llm2, margin=-1e9, max_llm_calls=9,
                      time_budget=1e-6, name="again")
    assert len(llm2.calls) == 2 and ds.stats["stopped"].startswith("time budget")
    with pytest.raises(UsageError, match="--max-llm-calls must be at least 2"):
        make_dataset(store, tiny_gpt2, "where things are", n=5, llm=ScriptedLLM(SPEC), max_llm_calls=1, name="one")


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
    # an endpoint without structured output can return more than the schema allows; the frame keeps the first ones
    frame = Frame.model_validate({"slot": "n", "templates": [f"T{i} {{n}} is" for i in range(7)],
                                  "values": [str(i) for i in range(12)] + ["x" * 40]})
    assert len(frame.templates) == 5 and frame.values == [str(i) for i in range(10)]
    _, tmpl, vals, _ = clean_frame(frame)
    assert len(tmpl) == 5 and len(vals) == 10


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
    spec = {"slot": "country",
            "templates": ["The capital of France is", "France and Japan are far apart, said", "No value here is",
                          "I flew to japan and landed in", "Paris is the capital of France"],
            "values": ["France", "Japan"], "answers": {"France": "Paris", "Japan": "Tokyo"}}
    plan, dropped = plan_of(spec)
    assert plan.templates == ["The capital of {country} is", "I flew to {country} and landed in"]
    # two values in one sentence, none, or the value last: not a template
    assert dropped == {"template without the {slot}": 2, "template ends with a slot": 1}
    items = compose(plan, 100)
    assert {it.clean for it in items} >= {"The capital of France is", "I flew to Japan and landed in"}


def test_compose_skips_pairs_the_subject_tokenizer_splits_differently(tiny_gpt2):
    from autointerp.tasks.validate import token_ids

    spec = {"slot": "x", "templates": ["I saw the {x} and it was"], "values": ["cat", "dog", "big grey sea", "sky"],
            "answers": {"cat": "red", "dog": "red", "big grey sea": "blue", "sky": "blue"}}
    plan, _ = plan_of(spec)
    n_tok = lambda s: len(token_ids(tiny_gpt2, s))  # noqa: E731
    everything = compose(plan, 100)
    assert any(n_tok(it.clean) != n_tok(it.corrupt) for it in everything)   # the case exists
    dropped: dict = {}
    kept = compose(plan, 100, n_tokens=n_tok, dropped=dropped)
    assert kept and all(n_tok(it.clean) == n_tok(it.corrupt) for it in kept)
    assert dropped == {"pair with different token counts (subject tokenizer)": len(everything) - len(kept)}


def test_a_slot_written_twice_is_one_slot_and_both_places_change():
    spec = {"slot": "name", "values": ["Mary", "John"], "answers": {"Mary": "she", "John": "he"},
            "templates": ["{Name} said that {name} was late, so", "{name} met {other} and"]}
    plan, dropped = plan_of(spec)
    assert plan.templates == ["{name} said that {name} was late, so"]
    assert dropped == {"template with more than one slot": 1}
    assert {it.clean for it in compose(plan, 10)} == {"Mary said that Mary was late, so", "John said that John was late, so"}


def test_answer_keys_hold_no_double_quote():
    # lm-format-enforcer cannot force a key holding an escaped quote (a KeyError inside it)
    assert answer_keys('He said "hi" to {name}  and', "name", ["Mary", "Tom"]) == ["He said 'hi' to Mary and",
                                                                                 "He said 'hi' to Tom and"]


def test_a_copy_is_not_a_map_and_the_prompts_examples_are_not_templates():
    """The commonest failures of a small LLM: answering each value with itself (SmolLM2: Monday ->
    Monday for "the day of the week after a given day") and handing back the prompt's own
    example (the capital-city frame for the same task)."""
    shipped = example_templates()
    assert "the capital of {} is" in shipped and len(shipped) >= 6
    frame = Frame.model_validate({"slot": "day", "values": ["Monday", "Tuesday", "Friday"],
                                  "templates": ["The capital of {country} is", "The day after {day} is",
                                                "Tom said it was  not {Day} but"]})
    key, tmpl, vals, dropped = clean_frame(frame, shipped)
    assert tmpl == ["The day after {day} is"] and dropped == {"template copied from the prompt's examples": 2}
    plan = plan_from(key, tmpl, vals, ["Tuesday", "tuesday", "Saturday"], dropped)
    assert [(v.value, v.answer) for v in plan.values] == [("Monday", "Tuesday"), ("Friday", "Saturday")]
    assert dropped["answer repeats the value"] == 1
