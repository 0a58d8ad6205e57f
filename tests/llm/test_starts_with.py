"""prompt_logprobs means P(text starts with candidate), whatever the tokenizer does with "10"."""

import numpy as np

from autointerp.llm.base import starts_with as _starts_with
from autointerp.score.simulate import expected_values

CANDS = [str(v) for v in range(11)]


def test_single_token_ten_is_added_to_one():
    # a GPT-2-like tokenizer: "10" is a token of its own (id 110), not "1" then "0"
    cids = [[100 + v] for v in range(11)]
    own = np.zeros((1, 11))
    own[0, 1], own[0, 10] = 0.2, 0.6          # P(token "1"), P(token "10")
    p = _starts_with(own, CANDS, cids)
    assert p[0, 1] == 0.2 + 0.6 and p[0, 10] == 0.6
    assert expected_values(p)[0] == (1 * 0.2 + 10 * 0.6) / 0.8


def test_split_ten_is_left_alone():
    # SmolLM2: "10" is "1","0", so the product for "1" already counts it
    cids = [[100 + v] for v in range(10)] + [[101, 100]]
    own = np.zeros((1, 11))
    own[0, 1], own[0, 10] = 0.8, 0.6          # P("1") includes P("1","0")
    p = _starts_with(own, CANDS, cids)
    assert p[0, 1] == 0.8
    assert expected_values(p)[0] == (1 * 0.2 + 10 * 0.6) / 0.8


def test_rows_with_their_own_tokens_match_row_by_row_bit_for_bit():
    # the endpoint backend's slots: most read "10" off the top-k as one token, some asked "1","0"
    from autointerp.llm.base import starts_with_rows

    rng = np.random.default_rng(0)
    own = rng.random((40, 11)) / 11
    one = [(c,) for c in CANDS]
    split = [(c,) for c in CANDS[:10]] + [("1", "0")]
    cids = [one if i % 3 else split for i in range(40)]
    got = starts_with_rows(own, CANDS, cids)
    want = np.concatenate([_starts_with(own[i:i + 1], CANDS, cids[i]) for i in range(40)])
    assert np.array_equal(got, want) and not np.array_equal(got, own)
    assert np.array_equal(got[1, 1], own[1, 1] + own[1, 10]) and got[0, 1] == own[0, 1]
