"""Simulator: expected values from candidate probabilities (hand-computed), prompt building, JSON
parsing; and (slow) the all-at-once simulator's expected values against a manual forward pass of
the real SmolLM2."""

import numpy as np
import pytest

from autointerp.llm.prompts import Prompt
from autointerp.score.simulate import (CANDIDATES, build_logprob_prompt, exclusive_probs, expected_values,
                                       parse_json_values)

TEMPLATE = Prompt.from_text("sim_test", (
    "We simulate a neuron. Activations go from 0 to 10.\n\n"
    "Explanation: the word \"cat\"\n<start>\nThe\t0\n cat\t10\n sat\t0\n<end>\n\n"
    "Explanation: $explanation\n<start>\n$records<end>\n"))


def test_exclusive_probs_subtracts_longer_candidates():
    p = np.zeros(11)
    p[1] = 0.5   # "starts with 1": includes "10"
    p[10] = 0.3  # "10"
    p[0] = 0.2
    ex = exclusive_probs(p[None])[0]
    assert ex[1] == pytest.approx(0.2) and ex[10] == pytest.approx(0.3) and ex[0] == pytest.approx(0.2)
    # E = (0*0.2 + 1*0.2 + 10*0.3) / 0.7
    assert expected_values(p[None])[0] == pytest.approx(3.2 / 0.7)


def test_expected_values_renormalise_and_empty_slot():
    p = np.zeros((2, 11))
    p[0, 5] = 0.1
    p[0, 0] = 0.1   # the rest of the mass went to other text ("unknown")
    assert expected_values(p).tolist() == pytest.approx([2.5, 0.0])
    ch = exclusive_probs(np.array([[0.6, 0.5, 0.2]]), ["a", "ab", "abc"])[0]
    assert ch.tolist() == pytest.approx([0.1, 0.3, 0.2])


def test_build_logprob_prompt_slots_end_after_each_tab():
    prefix, segs = build_logprob_prompt(TEMPLATE, "dogs", ["A", " dog", "\n"])
    assert prefix == TEMPLATE.prefix and "Explanation: $" not in prefix and prefix.endswith("\n\n")
    assert len(segs) == 3 and all(s.endswith("\t") for s in segs)
    assert segs[0] == "Explanation: dogs\n<start>\nA\t"
    assert segs[1:] == ["unknown\n dog\t", "unknown\n\\n\t"]


def test_parse_json_values_counts_bad():
    assert parse_json_values("[0, 3, 10]", 3) == ([0.0, 3.0, 10.0], 0)
    assert parse_json_values("Sure: ```json\n[1, \"x\", 11, 2]\n```", 3) == ([1.0, 0.0, 0.0], 2)
    assert parse_json_values('{"activations": [4]}', 2) == ([4.0, 0.0], 1)
    assert parse_json_values("no idea", 2) == ([0.0, 0.0], 2)


@pytest.mark.slow
def test_expected_values_match_manual_forward():
    import torch

    from autointerp.llm.embedded import EmbeddedLLM
    from autointerp.score.simulate import LogprobSimulator

    llm = EmbeddedLLM("smollm2-135m", device="cpu", dtype="float32")
    tokens = ["The", " cat", " sat", " on", " the", " mat"]
    acts = [0.0] * 6

    class R:
        pass

    r = R()
    r.tokens, r.acts, r.ctx_idx, r.kind = tokens, acts, 0, "top"
    sim = LogprobSimulator(llm, TEMPLATE).simulate('the word "cat"', [r])
    got = np.asarray(sim.expected[0])

    # manual: one plain forward of the whole prompt (tokenised as the backend does: prefix with BOS,
    # each segment on its own), then P(v) = P(first token) * P(second token | first) for "10"
    tok, hf = llm.tok, llm.hf
    prefix, segs = build_logprob_prompt(TEMPLATE, 'the word "cat"', tokens)
    ids = tok(prefix, add_special_tokens=True)["input_ids"]
    slots = []
    for s in segs:
        ids = ids + tok(s, add_special_tokens=False)["input_ids"]
        slots.append(len(ids) - 1)
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    cand = [tok("\n" + c, add_special_tokens=False)["input_ids"][len(nl):] for c in CANDIDATES]
    with torch.inference_mode():
        logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), -1)
        probs = np.zeros((len(slots), 11))
        for i, pos in enumerate(slots):
            for j, c in enumerate(cand):
                lp = logp[pos, c[0]].item()
                if len(c) > 1:
                    ext = torch.tensor([ids[: pos + 1] + c[:-1]])
                    lp2 = torch.log_softmax(hf(ext).logits[0].float(), -1)
                    for k in range(1, len(c)):
                        lp += lp2[pos + k, c[k]].item()
                probs[i, j] = np.exp(lp)
    want = expected_values(probs)
    assert got.shape == (6,)
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert 0 <= got.min() and got.max() <= 10
