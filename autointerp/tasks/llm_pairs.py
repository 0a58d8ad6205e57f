"""LLM-written counterfactual pairs, the small-model way: the LLM gives what a small model can
give, the code does the rest.

The LLM is asked (prompts/pairs_chat.txt, structured output: the schema is enforced where the
backend can) for a small object:

    {"slot": "name",
     "templates": ["After {name} got home from work,", ...],           # one named slot in braces
     "groups": [{"answer": "she", "values": ["Mary", "Anna"]}, {"answer": "he", "values": ["John", "Tom"]}]}

The answer is a function of the slot's value (the groups map name -> " she" / " he").
The code expands every template with every ordered pair of values (v1, v2) whose answers differ:
clean = template(v1), corrupt = template(v2), answer =
" " + answer(v1), wrong = " " + answer(v2). Each candidate is validated on the subject model
(aligned tokens, single-token answers, clean logit difference > 0, corruption drop >= margin).

The command is bounded: at most `max_llm_calls` LLM calls and `time_budget` seconds, and it
stops early, with the reasons, when the first LLM answer yields no valid item.
"""

from __future__ import annotations

import random
import re
import time
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from ..errors import BudgetExceeded, DatasetError, LLMError
from .items import PairItem
from .validate import REASON_WORDS, token_ids, validate_items

_SLOT = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_ ]{0,23}?)\s*\}")


class Value(BaseModel):
    value: str = Field(max_length=32)       # what fills the key slot
    answer: str = Field(max_length=20)      # the word that comes next when the slot holds `value`


# The schema's counts (minItems/maxItems) and uniqueItems bind a constrained decoder only;
# pydantic does not check them, and a free-form reply is cut and cleaned by clean_spec instead.
# No `pattern`s: lm-format-enforcer caches no allowed-token list for a string under a pattern,
# so every token of such a string walks the whole vocabulary in Python (seconds a token for
# SmolLM2's 49k tokens; a TaskSpec reply took > 3 minutes). Free strings take its fast path.


class Group(BaseModel):
    answer: str = Field(max_length=20)      # the next word when the key slot holds any of `values`
    values: list[Annotated[str, Field(max_length=32)]] = Field(
        max_length=6, json_schema_extra={"minItems": 1, "maxItems": 3, "uniqueItems": True})

    @field_validator("values", mode="before")
    @classmethod
    def _cap(cls, v):   # a free-form reply (no schema enforced) with more values is cut, not refused
        return v[:6] if isinstance(v, list) else v


class TaskSpec(BaseModel):
    """What the LLM is asked for. The answer is a function of the key slot's value, given as
    groups (answer -> the values that take it): a small model lists names for " she" and names
    for " he" more reliably than it alternates pairs. Under a constrained decoder: 2-3 templates,
    2-4 groups of 1-3 values (a short reply), and no template, value or answer twice
    (uniqueItems, read by the embedded decoder as distinct across the whole reply)."""

    slot: str = Field(max_length=20)
    templates: list[Annotated[str, Field(max_length=72)]] = Field(
        max_length=5, json_schema_extra={"minItems": 2, "maxItems": 3, "uniqueItems": True})
    groups: list[Group] = Field(max_length=8, json_schema_extra={"minItems": 2, "maxItems": 4, "uniqueItems": True})

    @field_validator("templates", "groups", mode="before")
    @classmethod
    def _cap(cls, v, info):   # a free-form reply (no schema enforced) longer than the bounds is cut, not refused
        cap = {"templates": 5, "groups": 8}[info.field_name]
        if isinstance(v, list) and info.field_name == "templates":
            v = [x[:72] if isinstance(x, str) else x for x in v]
        return v[:cap] if isinstance(v, list) else v


class Plan(BaseModel):
    """What is left of a TaskSpec once the unusable parts are dropped."""

    templates: list[str]                    # the slot normalised to {name}: each holds the key slot once
    slot: str
    values: list[Value]


def _norm(name: str) -> str:
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


def clean_spec(spec: TaskSpec) -> tuple[Plan, dict[str, int]]:
    """The usable plan, and counts of what was dropped and why (in words)."""
    dropped: dict[str, int] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    key = _norm(spec.slot) or "x"
    values, seen = [], set()
    for x, a in ((v, g.answer) for g in spec.groups for v in g.values):
        x, a = x.strip(), a.strip().split("\n")[0].strip()
        if not x or not a:
            drop("value or answer empty")
        elif x.lower() in seen:
            drop("value repeated")
        else:
            seen.add(x.lower())
            values.append(Value(value=x, answer=a))
    templates: list[str] = []
    for raw in spec.templates:
        t = _SLOT.sub(lambda m: "{" + _norm(m.group(1)) + "}", (raw or "").strip())
        names = _SLOT.findall(t)
        if len(names) == 1:                 # the one slot is the key, whatever it is called
            t = t.replace("{" + names[0] + "}", "{" + key + "}")
        elif not names:                     # a concrete sentence: the one listed value it holds becomes the slot
            t, names = _slot_from_value(t, values, key)
        if not names:
            drop("template without the {slot}")
        elif len(names) > 1:
            drop("template with more than one slot")
        elif t.endswith("}"):
            drop("template ends with a slot")
        elif t in templates:
            drop("template repeated")
        else:
            templates.append(t)
    if len({v.answer.lower() for v in values}) < 2 and values:
        drop("all values have the same answer")
    return Plan(templates=templates, slot=key, values=values), dropped


def _slot_from_value(t: str, values: list[Value], key: str) -> tuple[str, list[str]]:
    """A template written as a concrete sentence ("The capital of France is") with the one listed
    value it holds, once and as whole words, replaced by the slot; else (t, [])."""
    hits = [(v, list(re.finditer(r"(?<!\w)" + re.escape(v.value) + r"(?!\w)", t, re.I))) for v in values]
    hits = [(v, m) for v, m in hits if m]
    if len(hits) != 1 or len(hits[0][1]) != 1:
        return t, []
    m = hits[0][1][0]
    return t[:m.start()] + "{" + key + "}" + t[m.end():], [key]


def compose(plan: Plan, n: int, seed: int = 0, *, n_tokens=None, dropped: dict | None = None) -> list[PairItem]:
    """Up to n candidate items: a random sample of template x ordered value pairs with different
    answers. With `n_tokens` (text -> its token count under the subject model's tokenizer), pairs
    whose clean and corrupt prompts differ in token count are skipped before validation (counted
    in `dropped`), so the sample is spent on pairs that can pass."""
    vals = plan.values
    combos = [(ti, i, j) for ti in range(len(plan.templates)) for i in range(len(vals)) for j in range(len(vals))
              if i != j and vals[i].answer.lower() != vals[j].answer.lower()]
    rng = random.Random(seed)
    rng.shuffle(combos)
    out: list[PairItem] = []
    counts: dict[tuple[int, int], int] = {}
    key = "{" + plan.slot + "}"
    for ti, i, j in combos:
        if len(out) >= n:
            break
        t = plan.templates[ti]
        a, b = vals[i], vals[j]
        clean, corrupt = t.replace(key, a.value), t.replace(key, b.value)
        if n_tokens is not None:
            if (ti, i) not in counts:
                counts[(ti, i)] = n_tokens(clean)
            if (ti, j) not in counts:
                counts[(ti, j)] = n_tokens(corrupt)
            if counts[(ti, i)] != counts[(ti, j)]:
                if dropped is not None:
                    r = "pair with different token counts (subject tokenizer)"
                    dropped[r] = dropped.get(r, 0) + 1
                continue
        out.append(PairItem(clean=clean, corrupt=corrupt, answer=" " + a.answer, wrong=" " + b.answer,
                            meta={"template": ti, "x": a.value, "x_corrupt": b.value, "source": "llm"}))
    return out


def ask_spec(llm, task: str, *, n_templates: int = 3, n_values: int = 8, seed: int = 0) -> TaskSpec:
    from ..llm import load_prompt

    p = load_prompt("pairs_chat")
    msgs = p.render(task=task.strip(), n_templates=n_templates, n_values=n_values)
    return llm.structured(msgs, TaskSpec, template=p, max_tokens=200, seed=seed, temperature=0.0 if seed == 0 else 0.7)


def describe(counts: dict[str, int]) -> str:
    """'answer not one token: 14; clean LD below margin: 9' (largest first)."""
    return "; ".join(f"{REASON_WORDS.get(r, r)}: {c}" for r, c in sorted(counts.items(), key=lambda x: -x[1])) or "none"


def _advice(stats: dict) -> str:
    rej = stats["rejected"]
    tips = []
    if rej.get("answer_not_single_token") or rej.get("wrong_not_single_token"):
        tips.append("name answers that are single common words")
    if rej.get("clean_logit_diff_not_positive") or rej.get("corruption_too_weak"):
        tips.append("a lower --margin, or a task the subject model already does")
    if not stats["candidates"]:
        tips.append("say what the next word depends on, with an example (e.g. 'the pronoun after a name: she for Mary, "
                    "he for John')")
    tips.append("a stronger --llm (an endpoint: --llm-base-url), or write items and `pairs --import` them")
    return "; ".join(tips)


def failure_message(task: str, stats: dict, spent: str) -> str:
    parts = [f"no item of {task!r} passed validation ({spent})"]
    if stats.get("llm_error"):
        parts.append(f"LLM: {stats['llm_error']}")
    if stats["llm_dropped"]:
        parts.append(f"dropped from the LLM's answer: {describe(stats['llm_dropped'])}")
    parts.append(f"{stats['candidates']} candidates rejected: {describe(stats['rejected'])}")
    for ex in stats["examples"][:3]:
        parts.append(f"e.g. {ex['clean']!r} -> {ex['answer']!r} vs {ex['wrong']!r}: {ex['why']}")
    parts.append(f"try: {_advice(stats)}")
    return "\n  ".join(parts)


def llm_pairs(hm, llm, task: str, n: int, *, seed: int = 0, margin: float = 1.0, batch_size: int = 32,
              max_llm_calls: int = 4, time_budget: float | None = 300.0, n_templates: int = 3,
              n_values: int = 8, progress=None) -> tuple[list[PairItem], dict, dict[str, Any]]:
    """(validated items, stats, settings) for a task described in words. Asks the LLM (different
    seeds) until n items pass, `max_llm_calls` calls are made or `time_budget` seconds pass.
    Raises DatasetError with the rejection reasons, 3 rejected examples and what to try when the
    first answer yields no valid item (early stop) or when nothing passed at the end."""
    t0 = time.monotonic()
    kept: list[PairItem] = []
    stats: dict[str, Any] = {"candidates": 0, "accepted": 0, "rejected": {}, "margin": margin, "llm_calls": 0,
                             "llm_dropped": {}, "examples": [], "stopped": None}
    templates: list[str] = []
    values: list[Value] = []
    slot = None
    seen: set = set()
    examples: list[tuple[str, PairItem]] = []

    def spent() -> str:
        return f"{stats['llm_calls']} LLM call(s), {time.monotonic() - t0:.0f} s"

    for r in range(max(1, int(max_llm_calls))):
        if time_budget is not None and r > 0 and time.monotonic() - t0 >= time_budget:
            stats["stopped"] = f"time budget of {time_budget:g} s spent"
            break
        stats["llm_calls"] += 1
        try:
            spec = ask_spec(llm, task, n_templates=n_templates, n_values=n_values, seed=seed + r)
        except BudgetExceeded:
            raise
        except LLMError as e:
            stats["llm_error"] = str(e)
            if r == 0:      # nothing was validated: the LLM failed, not the items (one line, not exit 2)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise LLMError(f"pairs for {task!r}: the first LLM call failed ({spent()}): {first}") from None
            continue
        plan, dropped = clean_spec(spec)
        for k, v in dropped.items():
            stats["llm_dropped"][k] = stats["llm_dropped"].get(k, 0) + v
        if slot is None or plan.slot == slot:   # answers from later calls join when they name the same slot
            slot = plan.slot
            templates += [t for t in plan.templates if t not in templates]
            known = {v.value.lower() for v in values}
            values += [v for v in plan.values if v.value.lower() not in known]
        merged = Plan(templates=templates, slot=slot or plan.slot, values=values)
        cands = [c for c in compose(merged, 3 * (n - len(kept)) + 16, seed=seed + r,
                                    n_tokens=lambda text: len(token_ids(hm, text)), dropped=stats["llm_dropped"])
                 if c.key() not in seen]
        k, s = validate_items(hm, cands, margin=margin, batch_size=batch_size, seen=seen, examples=examples)
        kept += k
        stats["candidates"] += s["candidates"]
        stats["accepted"] += s["accepted"]
        for reason, c in s["rejected"].items():
            stats["rejected"][reason] = stats["rejected"].get(reason, 0) + c
        if progress is not None:
            progress(f"LLM call {r + 1}: {len(plan.templates)} templates, {len(plan.values)} values -> "
                     f"{len(cands)} candidates, {s['accepted']} valid ({spent()})")
        if len(kept) >= n:
            break
        if r == 0 and not kept:
            stats["stopped"] = "the first LLM answer yielded no valid item"
            raise DatasetError(failure_message(task, _public(stats, examples), spent()))
    else:
        if len(kept) < n:
            stats["stopped"] = f"--max-llm-calls {max_llm_calls} reached"
    stats = _public(stats, examples)
    if not kept:
        raise DatasetError(failure_message(task, stats, spent()))
    stats["kept"] = min(n, len(kept))
    stats["seconds"] = round(time.monotonic() - t0, 1)
    settings = {"llm": getattr(llm, "name", None) or type(llm).__name__, "slot": slot, "templates": templates,
                "values": [v.model_dump() for v in values], "prompt": "pairs_chat",
                "structured": _how(llm)}
    return kept[:n], stats, settings


def _how(llm) -> str | None:
    try:
        return llm.structured_support()
    except Exception:  # noqa: BLE001 - a stub or an unreachable endpoint: not known
        return None


def _lds(it: PairItem) -> str:
    if it.clean_logit_diff is None:
        return ""
    return f" (LD clean {it.clean_logit_diff:+.2f}, corrupt {it.corrupt_logit_diff:+.2f})"


def _public(stats: dict, examples: list[tuple[str, PairItem]]) -> dict:
    """stats with 3 rejected examples (one per reason first) in words."""
    picked, reasons = [], set()
    for why, it in examples:
        if why not in reasons:
            reasons.add(why)
            picked.append((why, it))
    picked += [e for e in examples if e not in picked]
    stats["examples"] = [{"clean": it.clean, "corrupt": it.corrupt, "answer": it.answer, "wrong": it.wrong,
                          "reason": why, "why": REASON_WORDS.get(why, why) + _lds(it)} for why, it in picked[:3]]
    return stats
