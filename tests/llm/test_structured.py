"""Structured output: constrained decoding on a random-init tiny model always gives schema-valid
JSON in one call; the test server's `structured` mode honours a schema and the capability probe
finds it; a server without it falls back to parse-and-retry, recorded as such; the schema is part
of the cache key."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field
from tinykit import tiny_json_llm

from autointerp.errors import LLMError
from autointerp.llm.openai_backend import OpenAILLM, forget_endpoints
from autointerp.llm.serve import start_server
from autointerp.store import Store
from autointerp.tasks.llm_pairs import Frame, answers_schema

MSGS = [{"role": "user", "content": "Give JSON."}]


class Pet(BaseModel):
    name: str = Field(max_length=12)
    kind: Literal["cat", "dog"]
    good: bool


class Owner(BaseModel):
    who: str = Field(max_length=10)
    pets: list[Pet] = Field(min_length=1, max_length=3)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=2)


@pytest.fixture(scope="module")
def tiny():
    return tiny_json_llm()


def calls(store):
    return [dict(r) for r in store.db.query("SELECT kind, error FROM llm_calls ORDER BY id")]


@pytest.mark.parametrize("schema", [Owner, Frame])
def test_constrained_decoding_always_parses_on_a_random_model(tiny, schema, tmp_path):
    assert tiny.structured_support() == "constrained"
    # unconstrained, this model writes noise: nothing parses
    free = tiny.chat(MSGS, max_tokens=40, temperature=1.0, seed=0)[0]
    with pytest.raises(ValueError):
        __import__("json").loads(free)
    store = Store(tmp_path / "s.db")
    tiny.store = store
    try:
        for seed in range(4):
            out = tiny.structured(MSGS, schema, max_tokens=600, temperature=1.0, seed=seed)
            assert isinstance(out, schema)
            schema.model_validate(out.model_dump())
        rows = calls(store)
        assert [r["kind"] for r in rows] == ["structured"] * 4 and not any(r["error"] for r in rows)  # one call each, no retry
    finally:
        tiny.store = None


def test_cut_off_by_max_tokens_is_one_error_without_retry(tiny, tmp_path):
    store = Store(tmp_path / "s.db")
    tiny.store = store
    try:
        with pytest.raises(LLMError, match="not complete JSON"):
            tiny.structured(MSGS, Owner, max_tokens=3, temperature=1.0, seed=1)
        assert [r["kind"] for r in calls(store)] == ["structured"]
    finally:
        tiny.store = None


def test_schema_is_part_of_the_cache_key(tiny, tmp_path):
    store = Store(tmp_path / "s.db")
    tiny.store = store
    try:
        a = tiny.structured(MSGS, Owner, max_tokens=400, seed=3, temperature=1.0)
        b = tiny.structured(MSGS, Pet, max_tokens=400, seed=3, temperature=1.0)
        again = tiny.structured(MSGS, Owner, max_tokens=400, seed=3, temperature=1.0)
        assert isinstance(a, Owner) and isinstance(b, Pet) and again == a
        hits = [r["cache_hit"] for r in store.db.query("SELECT cache_hit FROM llm_calls ORDER BY id")]
        assert hits == [0, 0, 1]
    finally:
        tiny.store = None


@pytest.fixture(scope="module")
def servers(tiny):
    forget_endpoints()
    with start_server(llm=tiny, mode="structured") as s, start_server(llm=tiny, mode="vllm") as v:
        yield {"structured": s, "vllm": v}
    forget_endpoints()


def test_probe_finds_structured_output_on_the_structured_mode(servers, tmp_path):
    store = Store(tmp_path / "s.db")
    llm = OpenAILLM("tiny-json", base_url=servers["structured"].url, store=store, timeout=60)
    assert llm.structured_support() == "json_schema"
    # a real request through response_format: the served random model is held to the schema
    for seed in range(2):
        out = llm.structured(MSGS, Owner, max_tokens=400, temperature=1.0, seed=seed)
        assert isinstance(out, Owner)
    kinds = [r["kind"] for r in calls(store)]
    assert kinds == ["probe", "structured", "structured"]


def test_guided_json_is_honoured_too(servers):
    llm = OpenAILLM("tiny-json", base_url=servers["structured"].url, timeout=60)
    r = llm._structured(MSGS, Pet.model_json_schema(), "guided_json", temperature=1.0, max_tokens=200, n=1, seed=2, stop=None)
    assert isinstance(Pet.model_validate_json(r.value[0]), Pet)


def test_a_server_without_it_falls_back_to_parse_and_retry(servers, tmp_path):
    store = Store(tmp_path / "s.db")
    llm = OpenAILLM("tiny-json", base_url=servers["vllm"].url, store=store, timeout=60)
    assert llm.structured_support() is None
    with pytest.raises(LLMError, match="did not return valid Pet JSON after 2 tries"):
        llm.structured(MSGS, Pet, retries=1, max_tokens=20, temperature=1.0, seed=0)
    assert [r["kind"] for r in calls(store)] == ["probe", "structured_parse", "structured_parse"]


def test_json_simulator_uses_the_schema(tiny, tmp_path):
    from tinykit import make_rec

    from autointerp.score.simulate import JsonSimulator

    store = Store(tmp_path / "s.db")
    tiny.store = store
    try:
        recs = [make_rec(0, ["The", " cat", " sat"], [0, 3, 0]), make_rec(1, ["A", " dog"], [1, 0])]
        sim = JsonSimulator(tiny).simulate("cats.", recs)
        assert [len(e) for e in sim.expected] == [3, 2]
        assert all(v in range(11) for e in sim.expected for v in e)    # every value an integer 0..10
        assert [r["kind"] for r in calls(store)] == ["structured", "structured"]
    finally:
        tiny.store = None


def test_uniqueItems_strings_are_distinct_across_the_reply(tiny):
    """Three slots from a three-word enum, in two arrays of one name: without the decoder's
    take-back, the random model repeats itself (checked); with uniqueItems every word appears once."""
    from autointerp.llm.structured import JsonConstraint

    word = {"type": "string", "enum": ["red", "green", "blue"]}
    schema = {"type": "object", "required": ["a", "b"],
              "properties": {"a": {"type": "object", "required": ["w"], "properties": {"w": {"type": "array", "items": word,
                                                                                           "minItems": 2, "maxItems": 2}}},
                             "b": {"type": "object", "required": ["w"], "properties": {"w": {"type": "array", "items": word,
                                                                                           "minItems": 1, "maxItems": 1}}}}}
    unique = json.loads(json.dumps(schema))
    for k in ("a", "b"):
        unique["properties"][k]["properties"]["w"]["uniqueItems"] = True
    ids = tiny._ids("Give JSON.")
    repeats = 0
    for seed in range(6):
        _, free, _ = tiny.generate_structured(ids, JsonConstraint(tiny.tok, schema), temperature=1.0, max_tokens=80, seed=seed)
        words = json.loads(free)["a"]["w"] + json.loads(free)["b"]["w"]
        repeats += len(set(words)) < 3
        _, text, _ = tiny.generate_structured(ids, JsonConstraint(tiny.tok, unique), temperature=1.0, max_tokens=80, seed=seed)
        words = json.loads(text)["a"]["w"] + json.loads(text)["b"]["w"]
        assert sorted(words) == ["blue", "green", "red"], text
    assert repeats >= 2


def test_forced_tokens_cost_no_forward_pass(tiny):
    """Keys under the fixed field order and the brackets are forced: the decoder appends them
    without running the model, so it runs fewer forward passes than it writes tokens."""
    from autointerp.llm.structured import JsonConstraint

    calls = []
    h = tiny.hf.register_forward_hook(lambda m, a, kw, out: calls.append(1), with_kwargs=True)
    try:
        gen, text, reason = tiny.generate_structured(tiny._ids("Give JSON."), JsonConstraint(tiny.tok, Owner.model_json_schema()),
                                                     temperature=1.0, max_tokens=400, seed=0)
    finally:
        h.remove()
    assert reason == "stop" and isinstance(Owner.model_validate_json(text), Owner)
    assert len(calls) < 0.8 * len(gen)


def test_json_strings_and_closings():
    from autointerp.llm.structured import closings, first_repeat, json_strings

    t = '{"slot": "x", "t": ["a\\"b", "c"], "g": [{"answer": "he", "values": ["Tom", "Bob"]}, {"answer": "He", "values": ["tom", "Ma'
    strings, open_ = json_strings(t)
    assert open_ and [(r, c) for r, c, _, _ in strings] == [("slot", "x"), ("t", 'a\\"b'), ("t", "c"), ("answer", "he"),
                                                             ("values", "Tom"), ("values", "Bob"), ("answer", "He"),
                                                             ("values", "tom")]
    assert t[slice(*first_repeat(t, {"answer"}, 0))] == "He"
    assert first_repeat(t, {"slot", "t"}, 0) is None
    first = next(closings(t))
    assert json.loads(first)["g"][1] == {"answer": "He", "values": ["tom"]}


def test_a_cut_off_reply_is_closed_after_its_last_complete_element():
    from autointerp.llm.structured import parse_strict

    frame = parse_strict('{"slot": "name", "templates": ["When {name} came home,", "Then {name} said"], '
                         '"values": ["Mary", "Anna", "To', Frame)
    assert frame.values == ["Mary", "Anna"]
    with pytest.raises(ValueError, match="not complete JSON"):
        parse_strict('{"slot": "name", "templ', Frame)


def test_the_answers_request_forces_every_key_and_the_model_writes_only_the_answers(tiny):
    """pairs' second request: one key per filled template. Under the constraint a random model
    returns exactly those keys, in order, each with a short string, in one call."""
    sentences = ["When Mary came home,", "When Tom came home,", "The capital of Peru is"]
    for seed in range(3):
        out = tiny.structured(MSGS, answers_schema(sentences), max_tokens=120, temperature=1.0, seed=seed)
        assert list(out) == sentences and all(isinstance(v, str) and len(v) <= 20 for v in out.values())


def test_the_answers_request_has_room_for_long_keys(tiny):
    """Forced keys count as generated tokens: eight 70-character sentences under a byte-level
    tokenizer need ~600 tokens (a fixed 16 a sentence cut the reply before its last keys)."""
    from autointerp.tasks.llm_pairs import ask_answers

    sentences = [f"In the story number {i}, the little old man who lived by the long river said" for i in range(8)]
    out = ask_answers(tiny, "a task", sentences)
    assert list(out) == sentences


def test_a_dead_end_of_the_constraint_ends_the_decode_instead_of_crashing(tiny):
    """A constraint that allows no token (lm-format-enforcer has such dead ends: a key holding
    ': ') used to index the logits with an empty float tensor (IndexError) and fail the call."""
    class DeadEnd:
        eos, distinct = tiny.tok.eos_token_id, set()

        def __init__(self, allowed):
            self.steps = [allowed, allowed, []]

        def allowed(self, ids):
            return self.steps.pop(0) if self.steps else []

    a, b = tiny._ids("{")[0], tiny._ids("}")[0]
    gen, text, reason = tiny.generate_structured(tiny._ids("Give JSON."), DeadEnd([a, b]), max_tokens=20)
    assert reason == "dead end" and len(gen) == 2 and set(gen) <= {a, b}


def test_no_retry_on_a_cut_off_reply_from_a_structured_endpoint(servers, tmp_path):
    """Where the endpoint enforces the schema, a reply that does not parse is one error, not a re-ask."""
    store = Store(tmp_path / "s.db")
    llm = OpenAILLM("tiny-json", base_url=servers["structured"].url, store=store, timeout=60)
    with pytest.raises(LLMError, match="json_schema structured output.*not complete JSON"):
        llm.structured(MSGS, Owner, max_tokens=3, temperature=1.0, seed=1)
    assert [r["kind"] for r in calls(store)] == ["probe", "structured"]
