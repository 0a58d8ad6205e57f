"""LLM explanations: the prompt from the train records (pure), k samples from the LLM, and the
pick of the best on the calibration split (never the test split).

Templates (prompts/): `explain_completion` (few-shot completion prompt, for small local base or
instruction models through the embedded backend: the model continues an explanation line) and
`explain_chat` (for instruction models behind a chat endpoint). Both get $records (the train
records as `token<TAB>value` blocks, values 0..10), $nonzero (only the active token/value
lines), $promoted (tokens the unit promotes), $unit and $max_act.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..core.format import format_records, nonzero_summary


def choose_style(llm, style: str = "auto") -> str:
    """'completion' or 'chat'. auto: completion for the embedded backend (small local models do
    better continuing a few-shot prompt), chat for remote endpoints."""
    if style in ("completion", "chat"):
        return style
    if style != "auto":
        from ..errors import UsageError

        raise UsageError(f"unknown explain style {style!r}: use auto, completion or chat")
    return "completion" if getattr(llm, "backend", "") == "embedded" else "chat"


def explain_vars(records: Sequence, unit_max: float, *, window_size: int | None = 32, promoted: Sequence = (),
                 unit: str = "", n_promoted: int = 5) -> dict:
    prom = [p[0] if isinstance(p, (list, tuple)) else p for p in promoted][:n_promoted]
    return {
        "records": format_records(records, unit_max, window_size=window_size),
        "nonzero": nonzero_summary(records, unit_max, window_size=window_size),
        "promoted": ", ".join(repr(t) for t in prom) if prom else "(none)",
        "unit": unit,
        "max_act": f"{unit_max:.3g}",
    }


def build_explain_prompt(template, records: Sequence, unit_max: float, **kw):
    """The explainer prompt (text for a completion template, messages for a chat one)."""
    return template.render(**explain_vars(records, unit_max, **kw))


_LEAD = re.compile(r"^(the main thing this neuron does is find|this neuron (fires on|activates on|detects|finds)|explanation:)\s*", re.I)


def parse_explanation(text: str) -> str:
    """The explanation in an LLM reply: its first non-empty line, without a leading
    'Explanation:' or 'the main thing this neuron does is find', quotes and a final period."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            break
    else:
        return ""
    line = _LEAD.sub("", line).strip().strip("*`").strip()
    if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'" and line[0] not in line[1:-1]:
        line = line[1:-1].strip()  # a wholly quoted reply
    return line[:-1].rstrip() if line.endswith(".") and not line.endswith("..") else line


def sample_explanations(llm, template, prompt, *, k: int, seed: int = 0, temperature: float = 0.7,
                        max_tokens: int = 40, raw: bool = False) -> list[str]:
    """k explanations sampled in one call (temperature > 0, seeded); empty ones and duplicates
    dropped, order kept. raw=True keeps every reply (a multi-line reply whole, for the caller's
    check) instead of dropping empty ones."""
    if isinstance(prompt, list):
        outs = llm.chat(prompt, temperature=temperature, max_tokens=max_tokens, n=k, seed=seed, template=template)
    else:
        outs = llm.complete(prompt, temperature=temperature, max_tokens=max_tokens, n=k, seed=seed, stop=["\n"],
                            template=template)
    if raw:
        if not isinstance(prompt, list):  # a completion stops at the first line break
            outs = [(o or "").lstrip("\n").split("\n")[0] for o in outs]
        lines = [[ln for ln in (o or "").strip().splitlines() if ln.strip()] for o in outs]
        return [(o or "").strip() if len(ls) > 1 else parse_explanation(o or "") for o, ls in zip(outs, lines)]
    seen, out = set(), []
    for o in outs:
        e = parse_explanation(o)
        if e and e.lower() not in seen:
            seen.add(e.lower())
            out.append(e)
    return out
