"""The test server's echo path (`llm serve --mode vllm`, completions with echo + logprobs) returns
the served model's own logprobs: every prompt token's logprob and the top-k at every position are
those of a plain forward pass of that prompt alone, whatever else is in the request. Runs the real
server over a random-init tiny Llama with a byte-level BPE tokenizer (tests/tinykit.py)."""

from __future__ import annotations

import json
import urllib.request

import pytest
import torch

from tinykit import tiny_json_llm

from autointerp.llm.serve import Engine, _lp_block, start_server


@pytest.fixture(scope="module")
def llm():
    return tiny_json_llm(seed=3, spec="tiny-echo")


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_echoed_logprobs_are_the_models_own(llm):
    prompts = ['{"a": [1, 2, 3], "b": "x"}', '{"a": [1, 2, 3], "c": null, "d": [true, false]}', '[4, 5]']
    k = 5
    with start_server(llm=llm, mode="vllm", served_name="tiny-echo") as srv:
        out = _post(srv.url + "/completions", {"model": "tiny-echo", "prompt": prompts, "max_tokens": 1, "temperature": 0,
                                               "echo": True, "logprobs": k})
    assert len(out["choices"]) == len(prompts)
    table = Engine(llm).table
    for prompt, ch in zip(prompts, out["choices"]):
        lp = ch["logprobs"]
        ids = llm.tok(prompt, add_special_tokens=True)["input_ids"]
        assert "".join(lp["tokens"][: len(ids)]) == prompt
        assert lp["text_offset"][: len(ids)] == [len("".join(lp["tokens"][:i])) for i in range(len(ids))]
        with torch.inference_mode():
            ref = torch.log_softmax(llm.hf(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        for i in range(1, len(ids)):
            assert lp["token_logprobs"][i] == pytest.approx(float(ref[i - 1, ids[i]]), abs=1e-4)
            v, ix = ref[i - 1].topk(k)
            want: dict = {}
            for t, x in zip(ix.tolist(), v.tolist()):
                want.setdefault(table[t], x)
            got = lp["top_logprobs"][i]
            assert list(got) == list(want)                                   # pieces, highest first
            assert list(got.values()) == pytest.approx(list(want.values()), abs=1e-4)
        # the generated token after the prompt: the argmax of the last position
        assert ch["text"] == prompt + table[int(ref[len(ids) - 1].argmax())]


def test_without_echo_the_generated_tokens_logprobs_are_the_echos_last(llm):
    """The client reads a slot at the prompt's end off a request without echo (a yes/no judge's
    rows): its one generated token's logprob and top-k are exactly the echo's last entry."""
    prompts = ['{"a": [1, 2, 3], "b": "x"}', '{"a": [1, 2, 3], "c": null}', '[4, 5]']
    body = {"model": "tiny-echo", "prompt": prompts, "max_tokens": 1, "temperature": 0, "logprobs": 5}
    with start_server(llm=llm, mode="vllm", served_name="tiny-echo") as srv:
        echoed = _post(srv.url + "/completions", {**body, "echo": True})
        plain = _post(srv.url + "/completions", {**body, "echo": False})
    for prompt, e, p in zip(prompts, echoed["choices"], plain["choices"]):
        assert e["text"] == prompt + p["text"] and p["text"]
        assert {k: v[-1:] for k, v in e["logprobs"].items()} == p["logprobs"]   # bit for bit, offset included
        assert len(p["logprobs"]["tokens"]) == 1 and p["logprobs"]["top_logprobs"][0]   # (pieces shared by ids: one key)


def test_a_prefix_kept_from_an_earlier_request_gives_the_same_answer(llm):
    """The server keeps a shared prefix's forward pass for later requests (as vLLM's prefix caching
    does): a request answered over a kept prefix is the same, bit for bit, as on a fresh server."""
    head = '{"task": "judge", "rules": [1, 2, 3, 4, 5, 6, 7, 8], "text": '
    first = {"model": "tiny-echo", "prompt": [head + '"a b"}', head + '"c"}'], "max_tokens": 1, "temperature": 0,
             "echo": True, "logprobs": 4}
    second = {**first, "prompt": [head + '"d e f"}', head + '"g h"}', head + '"i"}']}
    with start_server(llm=llm, mode="vllm", served_name="tiny-echo") as srv:
        _post(srv.url + "/completions", first)
        kept = _post(srv.url + "/completions", second)
        plain = _post(srv.url + "/completions", {**second, "echo": False})
        assert len(srv.engine._prefixes) == 1          # one prefix, computed once, used three times
    with start_server(llm=llm, mode="vllm", served_name="tiny-echo") as srv:
        fresh = _post(srv.url + "/completions", second)
    with start_server(llm=llm, mode="vllm", served_name="tiny-echo") as srv:
        fresh_plain = _post(srv.url + "/completions", {**second, "echo": False})
    assert kept["choices"] == fresh["choices"] and plain["choices"] == fresh_plain["choices"]
    assert kept["choices"][0]["logprobs"]["top_logprobs"][5]     # the prefix's positions are there


def test_top_k_pieces_shared_by_several_ids_keep_the_highest_logprob(llm):
    """Byte-level tokens of incomplete UTF-8 all decode to U+FFFD: one key in the top-k dict,
    with the best of their logprobs, in the place of its first (highest) occurrence."""
    eng = Engine(llm)
    same = [i for i, p in enumerate(eng.table) if p == "\ufffd"][:3]
    other = next(i for i, p in enumerate(eng.table) if p == "a")
    assert len(same) == 3
    ids, vals = [same[0], other, same[1], same[2]], [-0.25, -0.5, -1.0, -2.0]
    block = _lp_block(["x", "yz"], [None, (-0.75, (ids, vals))], 10, eng)
    assert block == {"tokens": ["x", "yz"], "token_logprobs": [None, -0.75],
                     "top_logprobs": [None, {"\ufffd": -0.25, "a": -0.5}], "text_offset": [10, 11]}


def test_aligned_tokens_place_the_echo_on_the_prompt():
    """The client's reading of an echo (llm/openai_backend.aligned_tokens): tokens that start
    inside the prompt must spell it exactly; a leading BOS not in the text is skipped; generated
    tokens after it are kept; a token that runs past the prompt's end or spells other text is not
    this prompt's echo."""
    from autointerp.llm.openai_backend import aligned_tokens

    top = {"a": -0.1}
    lp = {"tokens": ["<s>", "ab", "c", "d"], "token_logprobs": [None, -1.0, -2.0, -3.0], "top_logprobs": [None, top, top, top]}
    assert aligned_tokens(lp, "abc") == [(0, "ab", -1.0, top), (2, "c", -2.0, top), (3, "d", -3.0, top)]
    assert aligned_tokens(lp, "abcd") == aligned_tokens(lp, "abc")
    assert aligned_tokens(lp, "ab") == [(0, "ab", -1.0, top), (2, "c", -2.0, top), (3, "d", -3.0, top)]
    assert aligned_tokens(lp, "a") is None            # "ab" runs past the prompt's end
    assert aligned_tokens(lp, "abx") is None          # another text
    assert aligned_tokens(lp, "abcde") is None        # the echo stops short of the prompt
    assert aligned_tokens({**lp, "top_logprobs": None}, "abc")[0] == (0, "ab", -1.0, None)
    assert aligned_tokens({**lp, "token_logprobs": [None, -1.0]}, "abc") is None
