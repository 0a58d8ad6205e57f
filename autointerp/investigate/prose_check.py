"""The LLM's prose, checked: every number (and every unit id) in it must be one of the measured
values as the facts print them; a sentence with any other number is dropped, and if nothing is
left a code-written template sentence stands in.

Numbers are extracted with a regex after masking unit ids (checked on their own: each must be a
unit the facts name) and the names given as `protected` (the model spec, the task, the dataset:
"SmolLM2-135M" has digits that are not measurements). Numbers compare by value (so 0.50 == 0.5);
an unsigned number may match a signed fact (a fact of -0.12 allows "drops by 0.12") but an
explicit sign must match; a percentage must appear as a percentage in the facts. Layer numbers
of the facts' units are allowed ("layer 9" for L9/H9). A sentence that names units may only use
the numbers of the fact sentences naming those units, or of fact sentences naming no unit (so a
number measured for one head cannot be attached to another).

It lives in investigate/, next to the report it checks (investigate/report.py writes the only
prose an LLM writes over measurements): a package of its own held this one module. It is a
verification with a definition and tests of its own (tests/investigate/test_prose_check.py): it
takes text and facts and returns kept and dropped sentences, and needs no model, store or LLM
(it imports only core, for unit ids). It is not patching (no model runs) and not score/ (score/
scores explanations of units against activations).
"""

from __future__ import annotations

import re
from typing import Iterable

from ..core.units import Unit

# unit ids as an LLM may write them (spaces, lower case); Unit formats what they name
UNIT_RE = re.compile(r"\bL\s?(\d+)\s?/\s?([HN])\s?(\d+)\b", re.I)
MLP_RE = re.compile(r"\bMLP\s?(?:layer\s)?(\d+)\b", re.I)
NUM_RE = re.compile(r"(?<![A-Za-z_\d.])[-+\u2212]?\d+(?:,\d{3})*(?:\.\d+)?\s?%?")
SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def _val(tok: str) -> tuple[float, bool] | None:
    """(|value|, is_percent)."""
    v = _signed(tok)
    return None if v is None else (abs(v[0]), v[1])


def _signed(tok: str) -> tuple[float, bool, bool] | None:
    """(value, is_percent, has_explicit_sign)."""
    t = tok.replace("\u2212", "-").replace(",", "").replace(" ", "")
    pct = t.endswith("%")
    t = t.rstrip("%")
    sign = t[:1] in "+-"
    try:
        return float(t), pct, sign
    except ValueError:
        return None


def _units_in(text: str) -> set[str]:
    return {Unit.from_match(m).id for m in UNIT_RE.finditer(text)}


def _numbers(text: str, protected: Iterable[str]) -> set[tuple[float, bool]]:
    """Signed (value, is_percent) of the numbers in a facts text."""
    masked = MLP_RE.sub(" ", UNIT_RE.sub(" ", _mask(text, protected)))
    out = set()
    for m in NUM_RE.finditer(masked):
        v = _signed(m.group())
        if v is not None:
            out.add((v[0], v[1]))
    return out


def scoped_values(facts: str, protected: Iterable[str] = ()) -> tuple[dict[str, set], set]:
    """({unit: numbers of the fact sentences naming it}, numbers of fact sentences naming no unit)."""
    protected = list(protected)
    per_unit: dict[str, set] = {}
    general: set = set()
    for line in facts.splitlines():
        for sent in split_sentences(line):
            units, nums = _units_in(sent), _numbers(sent, protected)
            if not units:
                general |= nums
            for u in units:
                per_unit.setdefault(u, set()).update(nums)
    return per_unit, general


def _matches(tok: str, allowed: set[tuple[float, bool]]) -> bool:
    v = _signed(tok)
    if v is None:
        return True
    val, pct, sign = v
    if sign:
        return (val, pct) in allowed or (val == 0 and (0.0, pct) in allowed)
    return (val, pct) in allowed or (-val, pct) in allowed


def _mask(text: str, protected: Iterable[str]) -> str:
    for p in sorted({p for p in protected if p}, key=len, reverse=True):
        text = re.sub(re.escape(p), " ", text, flags=re.I)
    return text


def allowed_values(facts: str, protected: Iterable[str] = ()) -> tuple[set[tuple[float, bool]], set[str], set[int]]:
    """(numbers as (|value|, is_percent), unit ids, layer numbers) printed in the facts."""
    units = _units_in(facts)
    layers = {int(m[1]) for m in UNIT_RE.finditer(facts)} | {int(m[1]) for m in MLP_RE.finditer(facts)}
    masked = MLP_RE.sub(" ", UNIT_RE.sub(" ", _mask(facts, protected)))
    nums = {v for v in (_val(m.group()) for m in NUM_RE.finditer(masked)) if v is not None}
    return nums, units, layers


def check_sentence(sentence: str, nums: set, units: set, layers: set, protected: Iterable[str] = (),
                   scoped: tuple[dict[str, set], set] | None = None) -> str | None:
    """None if the sentence is fine, else the reason it is dropped."""
    s = _mask(sentence, protected)
    for m in UNIT_RE.finditer(s):
        u = Unit.from_match(m).id
        if u not in units:
            return f"unit {u} is not in the measurements"
    for m in MLP_RE.finditer(s):
        if int(m[1]) not in layers:
            return f"MLP {m[1]} is not in the measurements"
    rest = MLP_RE.sub(" ", UNIT_RE.sub(" ", s))
    for m in NUM_RE.finditer(rest):
        v = _val(m.group())
        if v is None:
            continue
        if v in nums:
            continue
        if not v[1] and v[0] == int(v[0]) and int(v[0]) in layers and re.search(r"layer\s*$", rest[:m.start()], re.I):
            continue
        return f"number {m.group().strip()} is not a measured value"
    if scoped is not None:
        named = _units_in(s)
        per_unit, general = scoped
        allowed = set(general)
        for u in named:
            allowed |= per_unit.get(u, set())
        for m in NUM_RE.finditer(rest):
            v = _val(m.group())
            if v is None:
                continue
            if not v[1] and v[0] == int(v[0]) and int(v[0]) in layers and re.search(r"layer\s*$", rest[:m.start()], re.I):
                continue
            if not _matches(m.group(), allowed):
                return (f"number {m.group().strip()} is not measured for " + ", ".join(sorted(named))
                        if named else f"number {m.group().strip()} is measured for a unit the sentence does not name")
    return None


def split_sentences(text: str) -> list[str]:
    text = " ".join(text.split())
    return [s.strip() for s in SENT_RE.split(text) if s.strip()]


def check_prose(text: str, facts: str, protected: Iterable[str] = (), max_sentences: int = 4) -> dict:
    """{"kept": [sentences], "dropped": [{"sentence", "reason"}]} for the LLM's `text`."""
    protected = list(protected)
    nums, units, layers = allowed_values(facts, protected)
    scoped = scoped_values(facts, protected)
    kept, dropped = [], []
    seen: set[str] = set()
    for s in split_sentences(text):
        if len(kept) >= max_sentences:
            break
        if s.lower() in seen:
            continue
        seen.add(s.lower())
        why = check_sentence(s, nums, units, layers, protected, scoped)
        if why is None and not re.search(r"[A-Za-z]{3}", s):
            why = "no words"
        if why is None and not re.search(r"[.!?][\"')]*$", s):
            why = "unfinished sentence"
        if why is None:
            kept.append(s)
        else:
            dropped.append({"sentence": s, "reason": why})
    return {"kept": kept, "dropped": dropped}
