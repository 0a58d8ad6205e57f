"""The explain stage: from a unit's train records, the LLM's candidate explanations and the
non-LLM baseline. It writes explanations only; scoring them is score/'s job, and the pipeline
(autointerp.pipeline) composes the two and stores the result.

An LLM reply is accepted as an explanation only when it is a plausible one (`check_explanation`):
non-empty, one line, at most MAX_CHARS characters, and not a refusal or chatter. Rejected replies
are returned with their reason, so the caller can record them and try the next sample.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..errors import UsageError
from .baseline import baseline_explanation
from .explainer import build_explain_prompt, choose_style, sample_explanations

__all__ = ["baseline_explanation", "check_explanation", "choose_style", "write_candidates", "MAX_CHARS", "pairs"]

MAX_CHARS = 300
_CHATTER = re.compile(
    r"^(sure|certainly|of course|okay|ok|here is|here's|i'm sorry|i am sorry|sorry|i cannot|i can't|as an ai|"
    r"i'm unable|i am unable|unfortunately|hello|hi there|thank you)\b", re.I)


def check_explanation(text: str, *, max_chars: int = MAX_CHARS) -> str | None:
    """Why `text` is not an acceptable explanation, or None when it is."""
    t = (text or "").strip()
    if not t:
        return "empty"
    if "\n" in t:
        return "more than one line"
    if len(t) > max_chars:
        return f"longer than {max_chars} characters ({len(t)})"
    if _CHATTER.match(t):
        return "a refusal or chatter, not an explanation"
    if not re.search(r"[A-Za-z]", t):
        return "no words"
    return None


def pairs(xs: Sequence) -> list:
    """Promoted/suppressed token lists as [[token, weight], ...]."""
    out = []
    for p in xs or []:
        if isinstance(p, (list, tuple)):
            out.append([p[0], float(p[1])] if len(p) > 1 else [p[0], None])
        elif isinstance(p, dict):
            out.append([p.get("token", str(p)), p.get("weight")])
        else:
            out.append([getattr(p, "token", str(p)), getattr(p, "weight", None)])
    return out


def write_candidates(llm, template, train: Sequence, unit_max: float, *, unit: str, promoted: Sequence = (), k: int = 3,
                     seed: int = 0, temperature: float = 0.8, max_tokens: int = 40, window: int | None = 24,
                     max_chars: int = MAX_CHARS) -> tuple[list[str], list[dict]]:
    """k explanations of a unit from its train records (greedy when k == 1), each checked by
    `check_explanation`. Returns (accepted candidates, rejected [{"text", "reason"}]). When none
    is accepted, one greedy retry is made before giving up (the caller raises)."""
    if k < 1:
        raise UsageError("k must be at least 1")
    prompt = build_explain_prompt(template, train, unit_max, window_size=window, promoted=promoted, unit=unit)
    temp = temperature if k > 1 else 0.0
    accepted: list[str] = []
    rejected: list[dict] = []
    for attempt in range(2):
        raw = sample_explanations(llm, template, prompt, k=k if attempt == 0 else 1, seed=seed + attempt,
                                  temperature=temp if attempt == 0 else 0.0, max_tokens=max_tokens, raw=True)
        for text in raw:
            why = check_explanation(text, max_chars=max_chars)
            if why is None and text.lower() not in {a.lower() for a in accepted}:
                accepted.append(text)
            elif why is not None:
                rejected.append({"text": text[:200], "reason": why})
        if accepted:
            break
    return accepted, rejected

