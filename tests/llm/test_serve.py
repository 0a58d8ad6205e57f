"""`autointerp llm serve` (a real OpenAI-compatible HTTP server over the embedded SmolLM2) and the
OpenAI-compatible backend against it, in each mode, through the `openai` client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import openai
import pytest

from autointerp.errors import LLMError
from autointerp.llm import LogprobsUnsupported, load_prompt
from autointerp.llm.check import check_llm
from autointerp.llm.openai_backend import OpenAILLM, public_url

pytestmark = pytest.mark.slow

CANDS = [str(v) for v in range(11)]
NAME = "smollm2-135m"


def client_llm(srv, **kw):
    kw.setdefault("timeout", 30.0)
    return OpenAILLM(NAME, base_url=srv.url, **kw)


def sim_inputs(tokens):
    p = load_prompt("simulate_all_at_once")
    prefix, head = p.parts("records", explanation="words about animals.")
    tail = prefix[-350:]
    prefix = tail[tail.index("\n") + 1:]
    return prefix, [head + tokens[0] + "\t"] + ["unknown\n" + t + "\t" for t in tokens[1:]]


def test_vllm_mode_candidates_equal_embedded(served, smol_llm):
    llm = client_llm(served["vllm"])
    assert llm.supports_prompt_logprobs and llm.capabilities()["top_k"] == 20
    # " 5" is " " + "5" for SmolLM2: only the appended-candidate route gets it right
    tok = smol_llm.tok
    assert len(tok(" 5", add_special_tokens=False)["input_ids"]) == 2
    want = smol_llm.prompt_logprobs("Counting: 1, 2, 3,", [" 4,"], [" 5", " 6"])
    got = llm.prompt_logprobs("Counting: 1, 2, 3,", [" 4,"], [" 5", " 6"])
    assert want[0, 0] == pytest.approx(0.941, abs=0.01)
    np.testing.assert_allclose(got, want, atol=1e-3)
    # a simulation-shaped batch: "10" is "1" + "0", digits at every slot, two rows of different length
    prefix, segs = sim_inputs(["The", " cat", " sat"])
    _, segs2 = sim_inputs(["A", " dog"])
    want = smol_llm.prompt_logprobs_batch(prefix, [segs, segs2], CANDS)
    got = llm.prompt_logprobs_batch(prefix, [segs, segs2], CANDS)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-3)
    assert (got[0][:, 10] > 0).all() and (got[0][:, 1] >= got[0][:, 10]).all()


def test_vllm_mode_through_the_openai_client(served):
    c = openai.OpenAI(base_url=served["vllm"].url, api_key="x", max_retries=0, timeout=30)
    models = c.models.list().data
    assert [m.id for m in models] == [NAME]
    prompt = "The capital of France is"
    r = c.completions.create(model=NAME, prompt=[prompt, "1, 2, 3"], max_tokens=1, temperature=0, echo=True, logprobs=3)
    assert len(r.choices) == 2
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith(prompt) and "".join(lp.tokens) == r.choices[0].text
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset[0] == 0 and all(len(t) <= 4 for t in lp.top_logprobs[1:])
    for t, v, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
        if t in top:
            assert top[t] == pytest.approx(v, abs=1e-5)
    greedy = c.completions.create(model=NAME, prompt=prompt, max_tokens=4, temperature=0)
    assert greedy.choices[0].text and not greedy.choices[0].text.startswith(prompt)
    ch = c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Say hi"}], max_tokens=5, temperature=0,
                                   logprobs=True, top_logprobs=2)
    assert ch.choices[0].message.content and len(ch.choices[0].logprobs.content) >= 1
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model=NAME, prompt=prompt, max_tokens=1, echo=True, logprobs=50)


def test_llamacpp_mode_falls_back_to_json_simulator(served):
    from autointerp.score.simulate import JsonSimulator, get_simulator

    srv = served["llamacpp"]
    c = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=30)
    r = c.completions.create(model=NAME, prompt="1, 2, 3,", max_tokens=2, temperature=0, echo=True, logprobs=2)
    assert not r.choices[0].text.startswith("1, 2")  # echo ignored
    assert len(r.choices[0].logprobs.tokens) == 2 and r.choices[0].logprobs.text_offset[0] == len("1, 2, 3,")
    llm = client_llm(srv)
    info = check_llm(llm)
    assert info["prompt_logprobs"] is False and info["simulator"] == "json" and info["judge"] == "chat"
    assert "only the generated tokens" in info["prompt_logprobs_note"]
    assert llm.supports_prompt_logprobs is False
    with pytest.raises(LogprobsUnsupported):
        llm.prompt_logprobs("1, 2,", [" 3,"], [" 4"])
    sim = get_simulator(llm, "auto")
    assert isinstance(sim, JsonSimulator)
    out = sim.simulate("the word cat", [SimpleNamespace(tokens=["The", " cat", " sat"])])
    assert out.method == "json" and len(out.expected) == 1 and len(out.expected[0]) == 3


def test_chat_only_mode(served):
    srv = served["chat-only"]
    c = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=30)
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model=NAME, prompt="hi", max_tokens=1)
    llm = client_llm(srv)
    info = check_llm(llm)
    assert info["capabilities"]["completions"] is False and info["prompt_logprobs"] is False
    assert info["simulator"] == "json" and "chat-only" in info["simulator_note"]
    assert llm.chat([{"role": "user", "content": "Say hi"}], max_tokens=4)[0]


def test_429_with_retry_after_then_200_is_retried(smol_llm, store):
    from autointerp.llm.serve import start_server

    with start_server(llm=smol_llm) as srv:
        srv.fail_next(1, status=429, retry_after=0.4, path="chat/completions")
        llm = client_llm(srv, store=store, retry_wait=0.01, retry_wait_max=0.05)
        t0 = time.perf_counter()
        assert llm.chat([{"role": "user", "content": "Say hi"}], max_tokens=3)[0]
        assert time.perf_counter() - t0 >= 0.4  # what the server asked for, not the tiny backoff
        assert srv.stats()["by_path"]["/v1/chat/completions"] == 2
        srv.fail_next(2, status=503, path="chat/completions")
        assert llm.chat([{"role": "user", "content": "Say hello"}], max_tokens=3)[0]
        rows = store.query("select kind, error from llm_calls where kind = 'chat' order by id")
        assert [r["error"] is None for r in rows] == [False, True, False, False, True]
        assert "HTTP 429" in rows[0]["error"] and "HTTP 503" in rows[2]["error"]


def test_hanging_server_times_out_without_piling_up(smol_llm, store):
    from autointerp.llm.serve import start_server

    with start_server(llm=smol_llm) as srv:
        srv.hang_next(5, seconds=2.5, path="chat/completions")
        llm = client_llm(srv, store=store, timeout=0.3, max_attempts=5, retry_wait=0.01, retry_wait_max=0.02)
        t0 = time.perf_counter()
        with pytest.raises(LLMError, match=r"timed out \(waited 0.3s, 0.6s; 2 attempts"):
            llm.chat([{"role": "user", "content": "Say hi"}], max_tokens=3)
        took = time.perf_counter() - t0
        assert 0.9 <= took < 1.6
        # 5 attempts were allowed, but a timed-out request is not re-sent at the same timeout:
        # one retry with twice the time, then the total time (4 x timeout) is spent
        assert srv.stats()["by_path"]["/v1/chat/completions"] == 2
        rows = store.query("select error from llm_calls order by id")
        assert len(rows) == 2 and "read timeout" in rows[0]["error"] and "timed out" in rows[1]["error"]


def test_cache_keys_differ_by_base_url(smol_llm, served, store):
    from autointerp.llm.serve import start_server

    a = client_llm(served["vllm"], store=store)
    with start_server(llm=smol_llm, served_name=NAME) as other:
        b = client_llm(other, store=store)
        assert a.cache_identity() != b.cache_identity()
        assert a.cache_identity()[2:] == (NAME, "smollm2-135m")  # model name and the server's own id
        msg = [{"role": "user", "content": "Name a colour."}]
        a.chat(msg, max_tokens=3)
        before = other.stats()["requests"]
        b.chat(msg, max_tokens=3)  # same model name, other server: asked, not answered from a's cache
        assert other.stats()["requests"] == before + 1
        client_llm(served["vllm"], store=store).chat(msg, max_tokens=3)  # same server: cached
        hits = store.query("select cache_hit from llm_calls where kind = 'chat' order by id")
        assert [h["cache_hit"] for h in hits] == [0, 0, 1]
    creds = OpenAILLM(NAME, base_url=served["vllm"].url.replace("http://", "http://user:pw@"))
    assert public_url(creds.base_url) == served["vllm"].url and "pw" not in json.dumps(creds.info())
    assert public_url("https://h.example/v1?api-version=2&api_key=s3") == "https://h.example/v1?api-version=2"


def test_llm_check_cli_against_each_mode(served, tmp_path, capsys):
    from tinykit import run_cli

    def run(*args):
        return run_cli(capsys, *args)

    db = tmp_path / "check.db"
    code, out, err = run("llm", "check", "--llm", f"openai:{NAME}", "--llm-base-url", served["vllm"].url, "--store", str(db),
                         "--llm-timeout", "30")
    assert code == 0, err
    assert "prompt logprobs: yes, top-20" in out and "P(' 5' after '1, 2, 3, 4,') = 0.94" in out
    assert "simulator: logprobs" in out and "judge: logprobs" in out
    from autointerp.store import Store

    with Store(db) as s:
        kinds = [r["kind"] for r in s.query("select kind from llm_calls")]
    assert "probe" in kinds and "chat" in kinds and "logprobs" in kinds
    code, out, err = run("llm", "check", "--llm", f"openai:{NAME}", "--llm-base-url", served["llamacpp"].url)
    assert code == 0, err
    assert "prompt logprobs: no" in out and "simulator: json" in out and "judge: chat" in out


def test_serve_command_prints_url_and_serves():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "autointerp", "llm", "serve", "--port", "0", "--device", "cpu",
                          "--mode", "chat-only", "--latency", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert "chat-only mode" in line and "http://127.0.0.1:" in line
        url = line.split(" at ")[-1].strip()
        with urllib.request.urlopen(url + "/models", timeout=10) as r:
            assert json.load(r)["data"][0]["id"] == NAME
        t0 = time.perf_counter()
        req = urllib.request.Request(url + "/completions", data=b'{"model": "smollm2-135m", "prompt": "x"}',
                                     headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 404 and time.perf_counter() - t0 >= 0.2
    finally:
        p.terminate()
        p.wait(timeout=10)
