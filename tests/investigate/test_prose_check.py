"""The report's prose check (investigate/prose_check.py) against the facts the report itself prints
(investigate/report.py facts_text) for a hand-written summary: the code-written fallback prose
always passes; an LLM's sentence passes only with numbers measured for the units it names, with
the sign and the percent sign as measured; the model's name is no number; duplicates and
unfinished sentences go."""

import pytest

from autointerp.investigate.prose_check import allowed_values, check_prose, split_sentences
from autointerp.investigate.report import facts_text, template_prose

SM = {
    "task": "ioi", "model": "smollm2-135m", "dataset": {"name": "ioi-16", "n_items": 16},
    "clean_logit_diff": 3.214, "corrupt_logit_diff": -0.118,
    "components": [
        {"kind": "head", "component": "L9/H9", "activation_effect": 0.412, "direct_effect": 0.305,
         "role": "name mover"},
        {"kind": "head", "component": "L8/H1", "activation_effect": -0.207, "direct_effect": 0.011,
         "role": "s-inhibition"},
        {"kind": "mlp", "component": "blocks.7.mlp.out", "activation_effect": 0.093},
    ],
    "hypothesis": {"faithfulness": 0.624, "model_minus_circuit": 0.31},
    "backup": {"backup_heads": ["L10/H2"], "ablated": "L9/H9", "compensation": 0.17},
    "neurons": {"neurons": []},
}
PROTECTED = [SM["model"], SM["task"], SM["dataset"]["name"]]


@pytest.fixture(scope="module")
def facts():
    return facts_text(SM)


def test_the_fallback_prose_states_measured_numbers(facts):
    first = template_prose(SM)[0]
    assert check_prose(first, facts, PROTECTED) == {"kept": [first], "dropped": []}
    assert "3.21" in first and "-0.12" in first       # as the facts print them


@pytest.mark.xfail(strict=True, reason="the fallback prose counts the heads ('The 2 heads found'), a number the "
                   "facts do not print; the report uses the fallback unchecked")
def test_the_whole_fallback_prose_passes_the_check_of_its_own_facts(facts):
    r = check_prose(" ".join(template_prose(SM)), facts, PROTECTED, max_sentences=10)
    assert r["dropped"] == [] and r["kept"] == template_prose(SM)


def test_the_facts_number_set(facts):
    nums, units, layers = allowed_values(facts, PROTECTED)
    assert units == {"L9/H9", "L8/H1", "L10/H2"} and layers == {7, 8, 9, 10}
    assert {(3.21, False), (0.12, False), (0.41, False), (62.0, True), (0.31, False)} <= nums
    assert (135.0, False) not in nums                 # 'smollm2-135m' is a name, not a measurement


@pytest.mark.parametrize("sentence,reason", [
    ("SmolLM2-135M prefers the answer by 3.21 logits.", None),
    ("Head L9/H9 has a patching effect of 0.41.", None),
    ("Head L 9/h9 has a patching effect of 0.41.", None),           # an id as an LLM may write it
    ("Head L8/H1 works against the answer with -0.21.", None),
    ("Head L8/H1 adds +0.21 to the answer.", "number +0.21 is not measured for L8/H1"),   # the sign is measured
    ("Head L8/H1 has a patching effect of 0.41.", "number 0.41 is not measured for L8/H1"),  # another head's
    ("The circuit recovers 62% of the difference.", None),
    ("The circuit recovers 0.62 of the difference.", None),
    ("The circuit recovers 62 of the difference.", "number 62 is not a measured value"),  # a percent needs its %
    ("The circuit recovers 70% of the difference.", "number 70% is not a measured value"),
    ("Head L3/H3 matters.", "unit L3/H3 is not in the measurements"),
    ("MLP 7 helps a little.", None),
    ("MLP 5 helps a little.", "MLP 5 is not in the measurements"),
    ("Layer 9 holds the name mover.", None),
    ("Layer 4 holds the name mover.", "number 4 is not a measured value"),
    ("When L9/H9 is ablated, L10/H2 takes over 0.17.", None),
])
def test_one_sentence(facts, sentence, reason):
    r = check_prose(sentence, facts, PROTECTED, max_sentences=5)
    if reason is None:
        assert r["kept"] == [sentence] and r["dropped"] == []
    else:
        assert r["kept"] == [] and r["dropped"] == [{"sentence": sentence, "reason": reason}]


def test_duplicates_unfinished_sentences_and_the_cap(facts):
    text = ("Head L9/H9 moves the name. Head L9/H9 moves the name. It recovers 62%. The clean difference is 3.21. "
            "The corrupt one is -0.12. And then the model")
    r = check_prose(text, facts, PROTECTED, max_sentences=3)
    assert r["kept"] == ["Head L9/H9 moves the name.", "It recovers 62%.", "The clean difference is 3.21."]
    assert r["dropped"] == []                          # stopped at the cap before the rest was read
    r = check_prose(text, facts, PROTECTED, max_sentences=10)
    assert r["dropped"] == [{"sentence": "And then the model", "reason": "unfinished sentence"}]
    assert split_sentences("One  is 1.5. Two\nis 2! (Three) is 3?") == ["One is 1.5.", "Two is 2!", "(Three) is 3?"]
