"""Exact simulation, planted-unit rules, null controls and null reasons: against hand-computed
values and brute force (no model)."""

import json
import random
import re

import numpy as np
import pytest

from autointerp.core.rules import Rule, rule_from_text
from autointerp.errors import UsageError
from autointerp.mine.planted import load_planted, mine_planted
from autointerp.score.metrics import bootstrap_auroc, paired_corr_margin, pearson, pooled_correlation
from autointerp.score.scorers import ClassificationScorer, ExactScorer, SimulationScorer
from autointerp.score.simulate import Simulation
from autointerp.score.splits import SplitSizes, split_records
from tinykit import make_rec

WORDS = ["the", " cat", " sat", " on", " a", " dog", " mat", " and", " ran", " home", " in", " May", " 12",
         ' "', "hi", '"', " (", "x", ")", " New", " York", " walking", " talked"]


def test_baseline_text_read_literally():
    r = rule_from_text('the tokens "istic", "hem", "ground" and "ine", often before "x" or "y"')
    assert r.tokens == ["istic", "hem", "ground", "ine"]
    assert r.values([" ground", "x", "istic", " Hem", "ine ", "y"]) == [10, 0, 10, 10, 10, 0]  # "x"/"y" are outputs
    assert rule_from_text("names of the months") is None
    assert rule_from_text("no particular tokens") is None


def _brute(rule: dict, toks):
    """The rule's meaning written the slow, obvious way."""
    out = []
    for i, t in enumerate(toks):
        ok = True
        if "tokens" in rule:
            ok &= t.strip().lower() in {x.lower() for x in rule["tokens"]}
        if "prev_tokens" in rule:
            ok &= i > 0 and toks[i - 1].strip().lower() in {x.lower() for x in rule["prev_tokens"]}
        if "regex" in rule:
            ok &= re.search(rule["regex"], t) is not None
        if "prev_regex" in rule:
            ok &= i > 0 and re.search(rule["prev_regex"], toks[i - 1]) is not None
        if "inside" in rule:
            o, c = rule["inside"]
            before = "".join(toks[:i])
            if o == c:
                ok &= before.count(o) % 2 == 1 and c not in t
            else:
                depth = 0
                for x in toks[:i]:
                    depth = max(0, depth + x.count(o) - x.count(c))
                ok &= depth > 0 and c not in t
        out.append(ok)
    return out


@pytest.mark.parametrize("rule", [{"tokens": ["cat", "DOG"]}, {"prev_tokens": ["the", "a"]}, {"regex": "[0-9]"},
                                  {"regex": "^ York$", "prev_regex": "^ New$"}, {"inside": ['"', '"']},
                                  {"inside": ["(", ")"]}, {"regex": "[a-z](ing|ed)$"}])
def test_planted_rules_match_brute_force(rule):
    rng = random.Random(0)
    r = Rule.model_validate(rule)
    for _ in range(300):
        toks = [rng.choice(WORDS) for _ in range(rng.randint(1, 20))]
        assert r.fires(toks) == _brute(rule, toks), toks


def _splits(n_top=6, n_rand=6, fire=("cat", "dog")):
    rng = random.Random(1)
    top, rand = [], []
    for i in range(12 + n_top):
        toks = [rng.choice(WORDS) for _ in range(10)]
        toks[3] = " cat"
        acts = [2.0 + 0.1 * i if t.strip() in fire else 0.05 * rng.random() for t in toks]
        top.append(make_rec(i, toks, acts))
    for i in range(n_rand + 4):
        toks = [rng.choice([w for w in WORDS if w.strip() not in fire]) for _ in range(10)]
        rand.append(make_rec(100 + i, toks, [0.05 * rng.random() for _ in toks], kind="random"))
    return split_records("L0/N0", top, rand, [], SplitSizes(n_train=4, n_calib=1, n_test=4))


def test_exact_score_equals_hand_computed():
    sp = _splits()
    recs = ExactScorer(n_boot=100).score('the tokens "cat" and "dog"', sp, 3.0)
    (r,) = recs
    lit = [[10.0 if t.strip() in ("cat", "dog") else 0.0 for t in x.tokens] for x in sp.test]
    true = [x.acts for x in sp.test]
    flat_t = np.concatenate(true)
    flat_s = np.concatenate(lit)
    assert r.value == pytest.approx(float(np.corrcoef(flat_t, flat_s)[0, 1]), abs=1e-12)
    assert r.value > 0.95 and r.ci_low <= r.value <= r.ci_high
    assert r.details["simulated"] == lit
    # its control (each record's simulation against the next record's truth) is lower, and the
    # margin is value - control
    assert r.control < r.value and r.margin == pytest.approx(r.value - r.control)
    # free text has no rule: no exact score
    assert ExactScorer().score("cats and dogs", sp, 3.0) == []


class _Sim:
    """A simulator that knows the answer for one explanation and guesses for the rest."""
    scorer, method = "toy", "toy"

    class template:
        hash = "t"

    def __init__(self):
        self.calls = []

    def simulate(self, text, records):
        self.calls.append((text, tuple(r.ctx_idx for r in records)))
        if "cat" in text:
            exp = [[10.0 if t.strip() in ("cat", "dog") else 0.0 for t in r.tokens] for r in records]
        else:
            rng = random.Random(len(text))
            exp = [[rng.random() for _ in r.tokens] for r in records]
        return Simulation(method="toy", scorer="toy", template_hash="t", expected=exp)


def test_control_uses_the_same_records_and_margin_is_paired():
    sp = _splits()
    sim = _Sim()
    recs = SimulationScorer(sim, n_boot=200).score('"cat" and "dog"', sp, 3.0, control="recipes for chocolate cake")
    main = recs[0]
    assert [c[1] for c in sim.calls] == [tuple(r.ctx_idx for r in sp.test)] * 2   # same records, both
    assert sim.calls[1][0] == "recipes for chocolate cake"
    ctl_sim = main.details["control"]["simulated"]
    assert main.control == pytest.approx(pooled_correlation([r.acts for r in sp.test], ctl_sim), abs=1e-4)
    assert main.margin == pytest.approx(main.value - main.control, abs=1e-6)
    assert main.margin_low <= main.margin <= main.margin_high and main.margin_low > 0.5
    # a wrong explanation scored against a wrong control: the margin interval includes 0
    wrong = SimulationScorer(_Sim(), n_boot=200).score("zzz", sp, 3.0, control="yyyyy")[0]
    assert wrong.margin_low < 0 < wrong.margin_high


def test_paired_margin_vs_slow_bootstrap():
    rng = np.random.default_rng(0)
    true = [rng.random(8) for _ in range(12)]
    a = [t + rng.normal(0, 0.3, 8) for t in true]
    b = [rng.random(8) for _ in true]
    m, lo, hi = paired_corr_margin(true, a, b, n_boot=400, seed=3)
    assert m == pytest.approx(pooled_correlation(true, a) - pooled_correlation(true, b))
    # the same resamples, done slowly
    idx = np.random.default_rng(3).integers(0, 12, size=(400, 12))
    d = [pooled_correlation([true[i] for i in row], [a[i] for i in row]) -
         pooled_correlation([true[i] for i in row], [b[i] for i in row]) for row in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])), abs=1e-9)


class _Judge:
    scorer = "toy"

    class template:
        hash = "j"

    def __init__(self, answer):
        self.answer = answer

    def p_yes(self, text, texts):
        return [self.answer(t) for t in texts], 0


def test_constant_judge_is_null_with_reason():
    sp = _splits()
    recs = ClassificationScorer(_Judge(lambda t: 0.9), "detection", n_boot=50).score("anything", sp, 3.0, control="x")
    assert recs[0].value is None and recs[0].reason.startswith("constant judge: answered yes to all")
    # a judge with signal gets a value, a control and a margin
    good = ClassificationScorer(_Judge(lambda t: 0.9 if "cat" in t else 0.1), "detection", n_boot=50)
    r = good.score("cats", sp, 3.0, control="x")[0]
    assert r.value is not None and r.reason is None and r.margin == pytest.approx(r.value - r.control)


def test_mostly_unparseable_simulation_is_null():
    class Bad(_Sim):
        def simulate(self, text, records):
            return Simulation(method="json", scorer="toy", template_hash="t", n_bad=sum(len(r.tokens) for r in records),
                              expected=[[0.0] * len(r.tokens) for r in records])
    r = SimulationScorer(Bad()).score("x", _splits(), 3.0, control="y")[0]
    assert r.value is None and r.reason.startswith("unparseable")


def test_bootstrap_auroc_groups():
    labels = [True, False, False] * 4
    scores = [0.9, 0.1, 0.2, 0.8, 0.3, 0.1, 0.7, 0.2, 0.75, 0.95, 0.5, 0.4]
    a, lo, hi = bootstrap_auroc(labels, scores, groups=[i // 3 for i in range(12)], n_boot=200)
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    assert a == pytest.approx(sum(p > n for p in pos for n in neg) / (len(pos) * len(neg))) == 31 / 32
    assert lo <= a <= hi < 1.0 + 1e-12


def test_planted_file_errors_are_one_line(tmp_path):
    bad = [("[]", "non-empty list"), ("{", "not valid JSON"),
           (json.dumps([{"name": "a", "explanation": "x"}]), "unit 'a': rule: Field required"),
           (json.dumps([{"name": "a", "explanation": "x", "rule": {"regex": "("}}]), "bad regular expression"),
           (json.dumps([{"name": "a", "explanation": "x", "rule": {}}]), "a rule needs"),
           (json.dumps([{"name": "a", "explanation": "x", "rule": {"tokens": ["y"]}, "colour": 1}]), "colour")]
    for i, (text, msg) in enumerate(bad):
        p = tmp_path / f"u{i}.json"
        p.write_text(text)
        with pytest.raises(UsageError) as e:
            load_planted(p)
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(UsageError, match="no such file"):
        load_planted(tmp_path / "missing.json")
    assert len(load_planted()) >= 7                       # the built-ins load


def test_mine_planted_records():
    units = load_planted()
    months = next(u for u in units if u.name == "months")
    ctxs = [(i, [" In", " March", " we", " left"] if i % 5 == 0 else [" We", " left", " on", " time"]) for i in range(60)]
    ex = mine_planted([months], ctxs, top_k=8, n_random=6)["months"]
    assert len(ex.top) == 8 and all(r.ctx_idx % 5 == 0 and r.acts[1] > 0.99 for r in ex.top)
    assert len(ex.random) == 6 and not {r.ctx_idx for r in ex.random} & {r.ctx_idx for r in ex.top}
    assert ex.stats.max_act > 0.99
    # deterministic
    again = mine_planted([months], ctxs, top_k=8, n_random=6)["months"]
    assert [r.ctx_idx for r in again.random] == [r.ctx_idx for r in ex.random]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_sparse_latents_count_any_positive_activation_as_active():
    """delphi's rule for SAE latents: a weak (quantile) activation is still a positive for
    detection, and fuzzing marks every firing token; a neuron keeps the frac * max threshold."""
    from autointerp.score.classify import detection_items, fuzzing_items

    toks = ["a", " cat", " sat", " on", " the", " mat"]
    strong = make_rec(1, toks, [0, 4.0, 0, 0, 0, 0])
    weak = make_rec(2, toks, [0, 0.3, 0, 0.2, 0, 0], kind="quantile")
    off = make_rec(3, toks, [0] * 6, kind="random")
    recs = [strong, weak, off]
    assert [i.label for i in detection_items(recs, 4.0)] == [True, False, False]
    assert [i.label for i in detection_items(recs, 4.0, sparse=True)] == [True, True, False]
    fz = fuzzing_items(recs, 4.0, sparse=True)
    assert [(i.ctx_idx, i.label, i.marked) for i in fz if i.label] == [(1, True, [1]), (2, True, [1, 3])]
    assert all(len(i.marked) == 2 for i in fz if i.ctx_idx == 2)
    assert [i.ctx_idx for i in fuzzing_items(recs, 4.0)] == [1, 1]
    # the split knows from the unit id: features are sparse, neurons are not
    sp_f = split_records("L1/F3@res", [strong, weak], [off])
    sp_n = split_records("L1/N3", [strong, weak], [off])
    assert sp_f.sparse and not sp_n.sparse
