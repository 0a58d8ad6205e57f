"""The embedded backend with the real packaged SmolLM2 (slow: one model per session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autointerp.errors import BudgetExceeded
from autointerp.llm import Budget, get_llm, load_prompt

pytestmark = pytest.mark.slow

CANDS = [str(v) for v in range(11)]


@pytest.fixture(scope="module")
def llm(smol):
    from autointerp.llm.embedded import EmbeddedLLM

    model, tok = smol
    return EmbeddedLLM("smollm2-135m", model=model, tokenizer=tok, device="cpu")


def sim_inputs(explanation="words about animals.", tokens=("The", " cat", " sat", " on", " the", " dog"), short=True):
    p = load_prompt("simulate_all_at_once")
    prefix, head = p.parts("records", explanation=explanation)
    if short:  # the tail of the real preamble: the same shape at a fraction of the CPU time
        tail = prefix[-350:]
        prefix = tail[tail.index("\n") + 1:]
    segs = [head + tokens[0] + "\t"] + ["unknown\n" + t + "\t" for t in tokens[1:]]
    return prefix, segs


def manual(model, tok, prefix, segs, cands):
    ids, pos = list(tok(prefix)["input_ids"]), []
    for s in segs:
        ids += tok(s, add_special_tokens=False)["input_ids"]
        pos.append(len(ids) - 1)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    out = np.zeros((len(segs), len(cands)))
    for i, p in enumerate(pos):
        for j, c in enumerate(cands):
            cid = tok(c, add_special_tokens=False)["input_ids"]
            total = lp[p, cid[0]].item()
            ctx = ids[: p + 1]
            for k in range(1, len(cid)):
                ctx = ctx + [cid[k - 1]]
                with torch.no_grad():
                    total += torch.log_softmax(model(torch.tensor([ctx])).logits[0, -1].float(), -1)[cid[k]].item()
            out[i, j] = np.exp(total)
    return out


def test_chat_returns_text(llm, store):
    llm.store = store
    try:
        out = llm.chat([{"role": "user", "content": "Say hello."}], max_tokens=6)
        assert isinstance(out[0], str) and out[0].strip()
        r = store.query("select * from llm_calls")[0]
        assert r["backend"] == "embedded" and r["cost_usd"] == 0 and r["prompt_tokens"] > 5 and 0 < r["completion_tokens"] <= 6
        again = llm.chat([{"role": "user", "content": "Say hello."}], max_tokens=6)  # cached
        assert again == out and store.query("select cache_hit from llm_calls")[-1]["cache_hit"] == 1
    finally:
        llm.store = None


def test_sampling_seeded_and_batched(llm):
    msgs = [{"role": "user", "content": "Name an animal."}]
    a = llm.chat(msgs, max_tokens=3, temperature=1.0, n=2, seed=7)
    b = llm.chat(msgs, max_tokens=3, temperature=1.0, n=2, seed=7)
    assert len(a) == 2 and a == b


def test_prompt_logprobs_match_manual_forward(llm, smol):
    model, tok = smol
    prefix, segs = sim_inputs(tokens=("The", " cat", " sat"))
    got = llm.prompt_logprobs(prefix, segs, CANDS)
    want = manual(model, tok, prefix, segs, CANDS)
    assert got.shape == (3, 11)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    assert len(tok("10", add_special_tokens=False)["input_ids"]) == 2  # the multi-token path was exercised
    assert (got[:, 10] > 0).all() and (got[:, 1] >= got[:, 10]).all()


def test_prefix_reuse_same_as_no_reuse(llm):
    from autointerp.llm.embedded import _PREFIXES

    rows = [sim_inputs(tokens=t)[1] for t in [("A", " dog", " ran"), ("Big", " red", " apples", " fell", "!")]]
    prefix = sim_inputs()[0]
    llm.reuse_prefix = True
    with_reuse = llm.prompt_logprobs_batch(prefix, rows, CANDS)
    assert prefix in _PREFIXES[id(llm.hf)]
    llm.reuse_prefix = False
    try:
        without = llm.prompt_logprobs_batch(prefix, rows, CANDS)
    finally:
        llm.reuse_prefix = True
    for a, b in zip(with_reuse, without):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # the batched answer equals the one-row answer (padding does not leak)
    np.testing.assert_allclose(llm.prompt_logprobs(prefix, rows[0], CANDS), with_reuse[0], atol=1e-5)
    # the cached prefix is not mutated by use
    again = llm.prompt_logprobs_batch(prefix, rows, CANDS)
    for a, b in zip(again, with_reuse):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_complete_with_template_prefix(llm):
    p = load_prompt("explain_completion")
    text = p.render(records="<start>\nThe\t0\n cat\t10\n sat\t0\n<end>\n")
    llm.reuse_prefix = True
    a = llm.complete(text, max_tokens=4, stop=["\n"], template=p)
    llm.reuse_prefix = False
    try:
        c = llm.complete(text, max_tokens=4, stop=["\n"], template=p)  # no store, so no response cache
    finally:
        llm.reuse_prefix = True
    assert a == c and isinstance(a[0], str) and "\n" not in a[0]


def test_budget_and_shared_copy(llm, smol):
    from autointerp.llm.embedded import _MODELS

    llm2 = get_llm("embedded:smollm2-135m", device="cpu", budget=Budget(max_tokens=1))
    assert llm2.hf is llm.hf and ("smollm2-135m", "cpu", "float32") in _MODELS  # no second load
    llm2.chat([{"role": "user", "content": "hi"}], max_tokens=1)
    with pytest.raises(BudgetExceeded):
        llm2.chat([{"role": "user", "content": "hi again"}], max_tokens=1)
