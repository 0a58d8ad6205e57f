"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from pydantic import BaseModel

from autointerp.errors import BudgetExceeded, LLMError
from autointerp.llm import Budget, LogprobsUnsupported, map_chat
from autointerp.llm.prompts import Prompt

from .conftest import SECRET, chat_body, echo_logprobs_body

MSG = [{"role": "user", "content": "Say hi"}]


def rows(store):
    return store.query("select * from llm_calls order by id")


def test_chat_success_recorded(make_llm, server, store):
    llm = make_llm(store=store, model="gpt-4o-mini")
    tmpl = Prompt.from_text("greet", "### user\nSay hi\n")
    assert llm.chat(MSG, max_tokens=5, template=tmpl) == ["hello 0"]
    assert llm.chat(MSG, max_tokens=5, n=2, temperature=0.7) == ["hello 0", "hello 1"]
    r = rows(store)
    assert len(r) == 2
    assert r[0]["backend"] == "openai" and r[0]["model"] == "gpt-4o-mini" and r[0]["kind"] == "chat"
    assert r[0]["template"] == "greet" and r[0]["template_hash"] == tmpl.hash
    assert r[0]["prompt_tokens"] == 12 and r[0]["completion_tokens"] == 3
    assert r[0]["cost_usd"] == pytest.approx((12 * 0.15 + 3 * 0.6) / 1e6)
    assert r[0]["error"] is None and r[0]["cache_hit"] == 0 and r[0]["latency_s"] >= 0
    chat = [q for q in server.requests if q["path"] == "/v1/chat/completions"]
    assert chat[0]["auth"] == f"Bearer {SECRET}"  # the key is sent, and only there
    assert chat[0]["body"]["max_tokens"] == 5


def test_complete(make_llm, server):
    assert make_llm().complete("Once upon", max_tokens=3) == [" done"]
    assert server.hits["/v1/completions"] == 1


def test_429_then_success_honours_retry_after(make_llm, server, store):
    server.queue("chat/completions", 429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"})
    llm = make_llm(store=store)
    t0 = time.perf_counter()
    assert llm.chat(MSG) == ["hello 0"]
    assert time.perf_counter() - t0 >= 0.3  # waited what the server asked, not the tiny backoff
    assert server.hits["/v1/chat/completions"] == 2
    errs = [r["error"] for r in rows(store)]
    assert len(errs) == 2 and "attempt 1 failed (HTTP 429" in errs[0] and errs[1] is None  # the failed attempt is kept


def test_500_until_retries_run_out(make_llm, server, store):
    server.queue("chat/completions", 500, {"error": {"message": "boom"}}, times=10)
    llm = make_llm(store=store, max_attempts=3)
    with pytest.raises(LLMError, match="HTTP 500 after 3 attempts"):
        llm.chat(MSG)
    assert server.hits["/v1/chat/completions"] == 3
    r = rows(store)
    assert len(r) == 3 and all("HTTP 500" in x["error"] for x in r) and r[-1]["cache_hit"] == 0
    assert [x["error"].startswith("attempt") for x in r] == [True, True, False]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_no_retry_on_client_errors(make_llm, server, store, status):
    server.queue("chat/completions", status, {"error": {"message": f"nope {status}"}}, times=5)
    with pytest.raises(LLMError, match=f"HTTP {status}"):
        make_llm(store=store).chat(MSG)
    assert server.hits["/v1/chat/completions"] == 1
    assert [f"HTTP {status}" in r["error"] for r in rows(store)] == [True]


def test_timeout(make_llm, server, store):
    server.queue("chat/completions", 200, chat_body(["late"]), delay=1.0, times=2)
    llm = make_llm(store=store, timeout=0.2, max_attempts=2)
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="timed out"):
        llm.chat(MSG)
    assert time.perf_counter() - t0 < 3
    r = rows(store)
    assert "read timeout" in r[0]["error"] and "timed out (waited 0.2s, 0.4s; 2 attempts" in r[-1]["error"]
    assert server.hits["/v1/chat/completions"] == 2


def test_unreachable_endpoint(api_key, store):
    import socket

    from autointerp.llm.openai_backend import OpenAILLM

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    llm = OpenAILLM("m", base_url=f"http://127.0.0.1:{port}/v1", store=store, max_attempts=2, retry_wait=0.01, retry_wait_max=0.02)
    with pytest.raises(LLMError, match="cannot reach"):
        llm.chat(MSG)


def test_malformed_json_body(make_llm, server, store):
    server.queue("chat/completions", 200, b"{this is not json", times=5)
    with pytest.raises(LLMError, match="malformed"):
        make_llm(store=store).chat(MSG)
    assert "malformed" in rows(store)[0]["error"]
    server.queue("chat/completions", 200, {"unexpected": True}, times=5)
    with pytest.raises(LLMError, match="malformed"):
        make_llm(store=store).chat(MSG)


def test_prompt_logprobs(make_llm, server, store):
    llm = make_llm(store=store)
    assert llm.supports_prompt_logprobs
    assert llm.capabilities()["top_k"] == 4  # the width the server really gave
    segs = ["the\t", "unknown\ncat\t", "unknown\n"]
    a = llm.prompt_logprobs("Preamble\n", segs, ["0", "1", "7", "10"])
    assert a.shape == (3, 4)
    # "0", "7" and "10" are tokens in the top-k, read off it; "1" is not, so it is asked as its
    # own prompt (exp(-4)); "10" is a token of its own, so P(starts with "1") counts it too
    np.testing.assert_allclose(a[0], [np.exp(-0.5), np.exp(-4.0) + np.exp(-2.0), np.exp(-1.5), np.exp(-2.0)])
    echo = [q["body"] for q in server.requests if q["path"] == "/v1/completions"]
    assert echo[1]["echo"] is True and echo[1]["logprobs"] == 4 and echo[1]["prompt"] == ["Preamble\n" + "".join(segs)]
    ctx = "Preamble\nthe\t"
    assert echo[2]["prompt"][0] == ctx + "1" and len(echo[2]["prompt"]) == 3 and len(echo) == 3  # one request
    assert [r["kind"] for r in rows(store)] == ["probe", "logprobs"]


def _completions(server):
    return [q["body"] for q in server.requests if q["path"] == "/v1/completions"]


def test_a_slot_at_the_prompt_end_is_read_without_echo(make_llm, server, store):
    # a yes/no judge's rows: one slot each, at the prompt's end. The distribution there is the
    # generated token's top-k, so the request goes without echo (a few bytes, not a top-k list per
    # prompt token); "1" is not in the top-k, so it is asked as its own prompt, as before
    from autointerp.llm.openai_backend import forget_endpoints

    segs = [["the cat\n"], ["a dog\n"]]
    got = make_llm(store=store).prompt_logprobs_batch("Judge:\n", segs, ["0", "1", "7"])
    sent = _completions(server)
    assert [b["echo"] for b in sent] == [True, False, True]
    assert sent[1]["prompt"] == ["Judge:\nthe cat\n", "Judge:\na dog\n"] and sent[1]["logprobs"] == 4
    assert sent[2]["prompt"] == ["Judge:\nthe cat\n1", "Judge:\na dog\n1"] and sent[2]["logprobs"] == 1
    want = [np.exp(-0.5), np.exp(-4.0), np.exp(-1.5)]
    for a in got:
        np.testing.assert_allclose(a, [want])
    # the same values, bit for bit, as reading the slot off the echo (an endpoint found not to
    # answer without echo)
    forget_endpoints()
    llm = make_llm()
    llm.capabilities()["next_logprobs"] = False
    echoed = llm.prompt_logprobs_batch("Judge:\n", segs, ["0", "1", "7"])
    assert [b["echo"] for b in _completions(server)[3:]] == [True, True, True]
    assert all(np.array_equal(a, b) for a, b in zip(got, echoed))
    # rows with slots inside the prompt are echoed: one request, as before
    make_llm().prompt_logprobs_batch("Judge:\n", [["a\t", "b\t"], ["c\t"]], ["0", "7"])
    assert [b["echo"] for b in _completions(server)[6:]] == [True]


def test_an_endpoint_that_echoes_anyway_is_echoed(make_llm, server):
    # a server that ignores echo=false and echoes the prompt's logprobs: the answer is not one
    # generated token, so those rows are echoed (same values) and the endpoint is not asked so again
    server.default["/v1/completions"] = lambda body: echo_logprobs_body(body["prompt"])
    llm = make_llm()
    a = llm.prompt_logprobs_batch("Judge:\n", [["the cat\n"]], ["0", "7"])
    np.testing.assert_allclose(a[0], [[np.exp(-0.5), np.exp(-1.5)]])
    assert [b["echo"] for b in _completions(server)] == [True, False, True]
    make_llm().prompt_logprobs_batch("Judge:\n", [["a dog\n"]], ["0", "7"])
    assert [b["echo"] for b in _completions(server)][3:] == [True]
    assert llm.capabilities()["next_logprobs"] is False


def test_missing_logprobs_raises_unsupported(make_llm, server, store):
    server.default["/v1/completions"] = lambda body: echo_logprobs_body(body["prompt"], with_logprobs=False)
    llm = make_llm(store=store)
    with pytest.raises(LogprobsUnsupported):
        llm.prompt_logprobs("p\n", ["a\t"], ["0"])
    assert llm.supports_prompt_logprobs is False
    assert "without logprobs" in llm.capabilities()["note"]
    assert "LogprobsUnsupported" in [r for r in rows(store) if r["kind"] == "logprobs"][0]["error"]


def test_generated_only_logprobs_are_not_prompt_logprobs(make_llm, server):
    # llama.cpp-like: echo ignored, logprobs only for the generated token, offsets after the prompt
    def gen_only(body):
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        return {"id": "c", "object": "text_completion", "created": 0, "model": "m",
                "choices": [{"index": i, "text": "7", "finish_reason": "length",
                             "logprobs": {"tokens": ["7"], "token_logprobs": [-0.1], "top_logprobs": [{"7": -0.1}],
                                          "text_offset": [len(p)]}} for i, p in enumerate(prompts)]}

    server.default["/v1/completions"] = gen_only
    llm = make_llm()
    assert llm.supports_prompt_logprobs is False
    assert "only the generated tokens" in llm.capabilities()["note"]
    with pytest.raises(LogprobsUnsupported, match="JSON simulator"):
        llm.prompt_logprobs("p\n", ["a\t"], ["0"])


def test_no_completions_route_is_unsupported(make_llm, server):
    del server.default["/v1/completions"]  # the fake answers 404 for unknown routes
    llm = make_llm()
    assert llm.supports_prompt_logprobs is False
    with pytest.raises(LogprobsUnsupported):
        llm.prompt_logprobs("p\n", ["a\t"], ["0"])


def test_budget_cap_keeps_earlier_rows(make_llm, server, store):
    budget = Budget(max_tokens=30)  # each call is 15 tokens
    llm = make_llm(store=store, budget=budget)
    for i in range(2):
        llm.chat([{"role": "user", "content": f"q{i}"}])
    with pytest.raises(BudgetExceeded, match="budget"):
        llm.chat([{"role": "user", "content": "q2"}])
    assert server.hits["/v1/chat/completions"] == 2
    assert len(rows(store)) == 2 and budget.tokens == 30
    cost = Budget(max_cost_usd=1e-9)
    llm2 = make_llm(store=store, budget=cost, model="gpt-4o")
    llm2.chat(MSG)
    with pytest.raises(BudgetExceeded):
        llm2.chat([{"role": "user", "content": "again"}])


def test_cache_hit_on_rerun(make_llm, server, store):
    llm = make_llm(store=store)
    first = llm.chat(MSG, max_tokens=7)
    again = make_llm(store=store).chat(MSG, max_tokens=7)
    assert again == first and server.hits["/v1/chat/completions"] == 1
    make_llm(store=store).chat(MSG, max_tokens=7, temperature=0.9)  # sampled, no seed: not cached
    make_llm(store=store).chat(MSG, max_tokens=7, temperature=0.9)
    assert server.hits["/v1/chat/completions"] == 3
    make_llm(store=store).chat(MSG, max_tokens=7, temperature=0.9, seed=1)
    make_llm(store=store).chat(MSG, max_tokens=7, temperature=0.9, seed=1)  # seeded: cached
    assert server.hits["/v1/chat/completions"] == 4
    a = llm.prompt_logprobs("p\n", ["a\t"], ["0", "7"])
    b = llm.prompt_logprobs("p\n", ["a\t"], ["0", "7"])
    np.testing.assert_allclose(a, b)
    assert server.hits["/v1/completions"] == 2  # the probe and the one request; then cached
    hits = [r for r in rows(store) if r["cache_hit"]]
    assert len(hits) == 3 and all(r["cost_usd"] == 0 for r in hits)


def test_structured_reasks_on_bad_json(make_llm, server, store):
    class Pair(BaseModel):
        clean: str
        corrupt: str

    # the structured-output probe: this server ignores response_format and guided_json
    server.queue("chat/completions", 200, chat_body(["Hello!"]), times=2)
    server.queue("chat/completions", 200, chat_body(["Sure! here it is: {broken"]))
    server.queue("chat/completions", 200, chat_body(['Here:\n```json\n{"clean": "a b", "corrupt": "a c"}\n```\nDone.']))
    out = make_llm(store=store).structured(MSG, Pair)
    assert out == Pair(clean="a b", corrupt="a c")
    second = [q for q in server.requests if q["path"] == "/v1/chat/completions"][3]["body"]["messages"]
    assert second[-1]["role"] == "user" and "could not be used" in second[-1]["content"]
    assert [r["kind"] for r in rows(store)] == ["probe", "structured_parse", "structured_parse"]
    server.queue("chat/completions", 200, chat_body(["no json at all"]), times=3)
    with pytest.raises(LLMError, match="valid Pair JSON after 2 tries"):
        make_llm().structured([{"role": "user", "content": "x"}], Pair, retries=1)


def test_structured_uses_response_format_where_the_probe_finds_it_and_never_retries(make_llm, server, store):
    class Pair(BaseModel):
        clean: str
        corrupt: str

    server.queue("chat/completions", 200, chat_body(['{"probe": "autointerp-structured"}']))
    server.queue("chat/completions", 200, chat_body(['{"clean": "a b", "corrupt": "a c"}']))
    llm = make_llm(store=store)
    assert llm.structured(MSG, Pair) == Pair(clean="a b", corrupt="a c")
    chats = [q["body"] for q in server.requests if q["path"] == "/v1/chat/completions"]
    rf = chats[1]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["additionalProperties"] is False
    assert rf["json_schema"]["schema"]["required"] == ["clean", "corrupt"]
    # a reply cut short (max_tokens) is one clear error: no re-ask where the server enforces the schema
    server.queue("chat/completions", 200, chat_body(['{"clean": "a b", "corr']))
    with pytest.raises(LLMError, match="json_schema structured output.*not complete JSON"):
        llm.structured([{"role": "user", "content": "again"}], Pair)
    assert [r["kind"] for r in rows(store)] == ["probe", "structured", "structured"]
    assert len([q for q in server.requests if q["path"] == "/v1/chat/completions"]) == 3


def test_map_chat_concurrent_and_errors_in_slots(make_llm, server, store):
    server.queue("chat/completions", 400, {"error": {"message": "bad"}})
    llm = make_llm(store=store, concurrency=3)
    msgs = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    out = map_chat(llm, msgs, max_tokens=4)
    errs = [o for o in out if isinstance(o, LLMError)]
    assert len(errs) == 1 and sum(isinstance(o, list) for o in out) == 5
    assert len(rows(store)) == 6
    out2 = map_chat(llm, msgs, max_tokens=4)  # second run in a new event loop; ok items now cached
    assert sum(isinstance(o, list) for o in out2) == 6


def test_rate_limit_spaces_requests(make_llm, server):
    llm = make_llm(rpm=600)  # 10 per second, bucket starts empty of burst beyond capacity
    llm.limiter._req = (0.0, time.monotonic())  # start with an empty bucket
    t0 = time.perf_counter()
    map_chat(llm, [[{"role": "user", "content": f"r{i}"}] for i in range(3)], concurrency=3)
    assert time.perf_counter() - t0 >= 0.25


def test_api_key_never_stored_or_shown(make_llm, server, store, capsys):
    # a server that echoes the Authorization header back in its error body
    server.queue("chat/completions", 401, lambda body: {"error": {"message": f"bad key {SECRET}"}})
    server.queue("chat/completions", 500, {"error": {"message": f"internal {SECRET}"}}, times=5)
    llm = make_llm(store=store)
    for _ in range(2):
        with pytest.raises(LLMError) as ei:
            llm.chat([{"role": "user", "content": "k"}])
        assert SECRET not in str(ei.value) and SECRET not in repr(ei.value)
    llm.chat(MSG)
    dump = json.dumps(store.query("select * from llm_calls")) + json.dumps(store.query("select * from llm_cache"))
    assert SECRET not in dump
    raw = store.path.read_bytes() + (store.path.with_name(store.path.name + "-wal").read_bytes()
                                     if store.path.with_name(store.path.name + "-wal").exists() else b"")
    assert SECRET.encode() not in raw
    assert SECRET not in repr(llm) and SECRET not in json.dumps(llm.info())
    cap = capsys.readouterr()
    assert SECRET not in cap.out + cap.err


def test_missing_key_for_openai_proper(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("AUTOINTERP_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    from autointerp.llm.openai_backend import OpenAILLM

    with pytest.raises(LLMError, match="OPENAI_API_KEY is not set"):
        OpenAILLM("gpt-4o-mini")


def test_get_llm_spec_and_errors(server, api_key):
    from autointerp.errors import UsageError
    from autointerp.llm import get_llm

    llm = get_llm("openai:test", base_url=server.url)
    assert llm.name == "openai:test" and llm.backend == "openai" and llm.model == "test"
    for bad in ("gpt-4", "foo:bar", "openai:"):
        with pytest.raises(UsageError):
            get_llm(bad)


def test_an_endpoint_judge_sends_its_texts_in_one_request(make_llm, server):
    # a yes/no judge on an endpoint asks `echo_batch` texts a request (their answers are one
    # generated token each), not 8; the embedded backend keeps 8 texts a call
    from autointerp.score.classify import YesNoJudge

    llm = make_llm(echo_batch=32)
    judge = YesNoJudge(llm, "detection")
    assert judge.use_logprobs and judge.batch_size == 32
    p, bad = judge.p_yes("fires on animals", [f"text {i}" for i in range(20)])
    assert len(p) == 20 and bad == 0
    plain = [b for b in _completions(server) if not b["echo"]]
    assert len(plain) == 1 and len(plain[0]["prompt"]) == 20
