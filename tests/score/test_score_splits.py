"""Splits: disjoint by context, deterministic, 1:1 top:random in test and calibration."""

from autointerp.score.splits import SplitSizes, records_hash, split_records


def _unit_records(rec, n_top=20, n_rand=20, overlap=3):
    top = [rec(i, ["a", "b"], [0.1, 10 - i * 0.3]) for i in range(n_top)]
    # a few random records share contexts with top records (a context can be mined as both)
    rand = [rec(100 + i if i >= overlap else i, ["c", "d"], [0.0, 0.2], kind="random") for i in range(n_rand)]
    quant = [rec(200 + i, ["e", "f"], [0.0, 2.0], kind="quantile", bin=i % 4) for i in range(6)] + [rec(0, ["a", "b"], [0, 1], kind="quantile")]
    return top, rand, quant


def test_disjoint_and_sized(rec):
    top, rand, quant = _unit_records(rec)
    s = split_records("L3/N42", top, rand, quant, SplitSizes(n_train=8, n_calib=2, n_test=5))
    sets = s.ctx_sets()
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sets[a] & sets[b], (a, b)
    assert len(s.train) == 8
    assert len(s.test_top) == len(s.test_random) == 5
    assert len(s.calib_top) == len(s.calib_random) == 2
    assert all(r.kind == "top" for r in s.train + s.test_top + s.calib_top)
    assert all(r.kind == "random" for r in s.test_random + s.calib_random)
    assert 0 not in sets["spare"]  # context 0 is a top record
    # train holds the strongest record, and test gets strong ones too (dealt in a cycle)
    assert s.train[0].ctx_idx == 0 and s.test_top[0].ctx_idx == 1


def test_deterministic_and_order_independent(rec):
    top, rand, quant = _unit_records(rec)
    a = split_records("L3/N42", top, rand, quant)
    b = split_records("L3/N42", list(reversed(top)), list(reversed(rand)), quant)
    assert records_hash(a.test) == records_hash(b.test)
    assert records_hash(a.train) == records_hash(b.train)


def test_short_supply_keeps_one_to_one(rec):
    top, rand, _ = _unit_records(rec, n_top=4, n_rand=10, overlap=0)
    s = split_records("L0/N1", top, rand, sizes=SplitSizes(n_train=8, n_calib=2, n_test=5))
    assert len(s.test_top) == len(s.test_random) >= 1
    assert len(s.calib_top) == len(s.calib_random)
    assert len(s.train) >= 1
    top, rand, _ = _unit_records(rec, n_top=20, n_rand=3, overlap=0)
    s = split_records("L0/N1", top, rand)
    assert len(s.test_top) == len(s.test_random) == 3 and len(s.calib_top) == 0


def test_small_corpus_where_every_context_is_a_top_record(rec):
    # 32 contexts, all of them top records and all of them random records too
    top = [rec(i, ["a"], [1.0 - i / 64]) for i in range(32)]
    rand = [rec(i, ["a"], [1.0 - i / 64], kind="random") for i in range(31, -1, -1)]
    s = split_records("L3/N42", top, rand, sizes=SplitSizes(n_train=8, n_calib=2, n_test=5))
    assert len(s.train) == 8 and len(s.test_top) == len(s.test_random) == 5 and len(s.calib_top) == len(s.calib_random) == 2
    sets = s.ctx_sets()
    assert not (sets["train"] & sets["test"]) and not (sets["test"] & sets["calibration"]) and not (sets["train"] & sets["calibration"])
    # very small: 10 contexts -> quotas shrink, 1:1 kept
    s = split_records("L3/N42", top[:10], rand[:10], sizes=SplitSizes(n_train=8, n_calib=2, n_test=5))
    assert len(s.test_top) == len(s.test_random) >= 1 and len(s.calib_top) == len(s.calib_random)
    sets = s.ctx_sets()
    assert not (sets["train"] & sets["test"]) and not (sets["test"] & sets["calibration"])
