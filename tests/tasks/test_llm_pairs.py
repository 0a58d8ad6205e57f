"""LLM-written pairs with a stub LLM: the code composes and validates; bad templates are dropped."""

from __future__ import annotations

import pytest

from autointerp.store import Store
from autointerp.tasks import make_dataset
from autointerp.tasks.llm_pairs import TaskSpec, clean_spec, compose


class StubLLM:
    name = "stub"

    def __init__(self, spec: dict):
        self.spec = spec
        self.calls = []

    def structured(self, messages, schema, **kw):
        self.calls.append(messages)
        return schema.model_validate(self.spec)


SPEC = {"templates": ["the cat sat on the {X} and ran to the", "the { x } is big", "no slot here", "ends with {X}"],
        "fillers": [{"x": "mat", "answer": "park"}, {"x": "house", "answer": "tree"}, {"x": "store", "answer": "mat"},
                    {"x": "mat", "answer": "dog"}, {"x": "dog", "answer": "house"}]}


def test_clean_spec_and_compose():
    templates, fillers, dropped = clean_spec(TaskSpec.model_validate(SPEC))
    assert templates == ["the cat sat on the {X} and ran to the", "the {X} is big"]
    assert [f.x for f in fillers] == ["mat", "house", "store", "dog"]
    assert dropped == {"template_without_slot": 1, "template_ends_with_slot": 1, "filler_duplicate": 1}
    items = compose(templates, fillers, 100)
    assert len(items) == 2 * 4 * 3
    for it in items:
        assert it.answer != it.wrong and it.clean != it.corrupt


def test_make_dataset_from_a_described_task(tiny_gpt2, tmp_path):
    store = Store(tmp_path / "s.db")
    llm = StubLLM(SPEC)
    ds = make_dataset(store, tiny_gpt2, "where things are", n=5, llm=llm, margin=-1e9)
    assert ds.source == "llm" and 1 <= ds.n_items <= 5
    st = ds.stats
    assert st["candidates"] == st["accepted"] + sum(st["rejected"].values())
    assert st["llm_dropped"]["template_without_slot"] >= 1
    assert "where things are" in llm.calls[0][-1]["content"]
    stored = store.get_dataset(ds.name)
    assert stored["source"] == "llm" and stored["settings"]["templates"]


def test_described_task_without_llm_is_a_usage_error(tiny_gpt2, tmp_path):
    from autointerp.errors import UsageError

    with pytest.raises(UsageError, match="needs an LLM"):
        make_dataset(Store(tmp_path / "s.db"), tiny_gpt2, "something new", n=3)
