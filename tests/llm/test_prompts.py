from __future__ import annotations

import pytest

from autointerp.errors import UsageError
from autointerp.llm import load_prompt
from autointerp.llm.prompts import Prompt


def test_chat_sections_and_render():
    p = Prompt.from_text("t", "### system\nBe brief.\n### user\nHi $name, cost $$5\n### assistant\nok\n### user\n${x}!\n")
    assert p.is_chat and p.variables == ["name", "x"]
    assert p.render(name="Ann", x="go") == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi Ann, cost $5"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go!"}]
    with pytest.raises(UsageError, match=r"\$x"):
        p.render(name="Ann")


def test_completion_prefix_and_parts():
    p = Prompt.from_text("c", "few\nshot\nNeuron 3\nfind $explanation\n<start>\n$records<end>\n")
    assert not p.is_chat and p.prefix == "few\nshot\nNeuron 3\n"
    pre, head = p.parts("records", explanation="cats.")
    assert pre == p.prefix and head == "find cats.\n<start>\n"
    full = p.render(explanation="e", records="r\n")
    assert p.split_prefix(explanation="e", records="r\n") == (p.prefix, full[len(p.prefix):])


def test_hash_changes_with_text():
    assert Prompt.from_text("a", "x $y").hash != Prompt.from_text("a", "x  $y").hash


def test_shipped_prompts_load_and_render(tmp_path, monkeypatch):
    for name, vars in [("explain_completion", {"records": "<start>\nhi\t3\n<end>\n"}),
                       ("explain_chat", {"records": "<start>\nhi\t3\n<end>\n"}),
                       ("simulate_all_at_once", {"explanation": "cats.", "records": "a\tunknown\n"}),
                       ("simulate_json", {"explanation": "cats.", "n_tokens": 1, "tokens": "0\ta"})]:
        p = load_prompt(name)
        assert p.hash and set(p.variables) == set(vars)
        out = p.render(**vars)
        assert out
        if not p.is_chat:
            assert len(p.prefix) > 500 and out.startswith(p.prefix)  # a reusable few-shot preamble
    assert load_prompt("explain_completion").render(records="R").endswith("the main thing this neuron does is find")
    # a user's directory overrides by name and falls back for the rest
    (tmp_path / "explain_chat.txt").write_text("### user\nmine $records\n")
    assert load_prompt("explain_chat", tmp_path).render(records="r") == [{"role": "user", "content": "mine r"}]
    assert load_prompt("simulate_json", tmp_path).name == "simulate_json"
    from autointerp.llm.prompts import use_prompts_dir

    monkeypatch.setenv("AUTOINTERP_PROMPTS", str(tmp_path))   # the library reads no environment ...
    assert not load_prompt("explain_chat").text.startswith("### user\nmine")
    try:                                                      # ... the face resolves the setting and says where
        use_prompts_dir(tmp_path)
        assert load_prompt("explain_chat").text.startswith("### user\nmine")
    finally:
        use_prompts_dir(None)
    with pytest.raises(UsageError, match="no prompt named"):
        load_prompt("nope")


def test_extract_json_tolerates_prose_and_fences():
    from autointerp.llm import extract_json

    assert extract_json('Sure: {"a": [1, 2]} hope that helps') == {"a": [1, 2]}
    assert extract_json("```json\n[1, 2]\n```") == [1, 2]
    assert extract_json("x {bad} then {\"ok\": 1}") == {"ok": 1}
    with pytest.raises(ValueError):
        extract_json("nothing here")
