"""Token rules: a machine-readable statement of where a unit fires, evaluated on a record's tokens.

Planted units (mine.planted) are defined by a rule; explanations that carry one are simulated
exactly by it (score.exact). Pure: no model, no store.

    {"tokens": ["January", "February"]}     the token, stripped of spaces, is in the set
                                            (case-insensitive unless "case": true)
    {"regex": "^ ?[0-9]"}                   re.search on the raw token (spaces kept)
    {"regex": "...", "prev_regex": "..."}   ... and on the previous token (and/or "next_regex")
    {"prev_tokens": ["the"]}                the previous token (stripped) is in the set
    {"inside": ["(", ")"]}                  the token lies after an unclosed opening mark

Conditions in one rule are ANDed. `rule_from_text` reads the rule out of the non-LLM baseline's
text (`the tokens "a", "b" and "c", often before ...`).
"""

from __future__ import annotations

import re
from typing import Sequence

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

RULE_VERSION = "rule-v1"



class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[str] | None = None
    case: bool = False
    regex: str | None = None
    prev_regex: str | None = None
    next_regex: str | None = None
    prev_tokens: list[str] | None = None
    inside: tuple[str, str] | None = None

    @field_validator("regex", "prev_regex", "next_regex")
    @classmethod
    def _compiles(cls, v):
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"bad regular expression {v!r}: {e}") from None
        return v

    @model_validator(mode="after")
    def _not_empty(self):
        if not any([self.tokens, self.regex, self.prev_regex, self.next_regex, self.prev_tokens, self.inside]):
            raise ValueError("a rule needs at least one of tokens, regex, prev_regex, next_regex, prev_tokens, inside")
        return self

    def _norm(self, t: str) -> str:
        t = t.strip()
        return t if self.case else t.lower()

    def fires(self, tokens: Sequence[str]) -> list[bool]:
        """Per token: does the rule fire here? (the unit's planted behaviour)"""
        n = len(tokens)
        out = [True] * n
        if self.tokens:
            s = {self._norm(t) for t in self.tokens}
            out = [o and self._norm(t) in s for o, t in zip(out, tokens)]
        if self.prev_tokens:
            s = {self._norm(t) for t in self.prev_tokens}
            out = [o and i > 0 and self._norm(tokens[i - 1]) in s for i, o in enumerate(out)]
        for rx, shift in ((self.regex, 0), (self.prev_regex, -1), (self.next_regex, 1)):
            if rx:
                c = re.compile(rx)
                out = [o and 0 <= i + shift < n and c.search(tokens[i + shift]) is not None for i, o in enumerate(out)]
        if self.inside:
            opening, closing = self.inside
            depth, ins = 0, []
            for t in tokens:
                ins.append(depth > 0 and closing not in t)
                if opening == closing:
                    depth = (depth + t.count(opening)) % 2
                else:
                    depth = max(0, depth + t.count(opening) - t.count(closing))
            out = [o and i for o, i in zip(out, ins)]
        return out

    def values(self, tokens: Sequence[str]) -> list[float]:
        return [10.0 if f else 0.0 for f in self.fires(tokens)]


_BASELINE = re.compile(r'^the tokens? ((?:"[^"]*"(?:, | and )?)+)')


def rule_from_text(text: str) -> Rule | None:
    """The rule in a structured explanation (the baseline's token list), else None."""
    m = _BASELINE.match(text.strip())
    if not m:
        return None
    toks = [t for t in re.findall(r'"([^"]*)"', m.group(1)) if t.strip()]
    return Rule(tokens=toks) if toks else None
