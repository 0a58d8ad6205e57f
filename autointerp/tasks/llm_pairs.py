"""LLM-written counterfactual pairs, the small-model way: the LLM gives what a small model can
give, the code does the rest.

Two short structured requests (the schema is enforced where the backend can), each in the
direction a small model writes well:

1. the frame (prompts/pairs_frame_chat.txt): what varies and the sentences it varies in,

       {"slot": "name", "values": ["Mary", "John", "Anna", "Tom", ...],           # what fills it
        "templates": ["After {name} got home from work,", ...]}                 # one named slot

2. the answers (prompts/pairs_answers_chat.txt): the first usable template filled with each value
   is a key the schema forces, and the LLM writes the next word right after it,

       {"After Mary got home from work,": "she", "After John got home from work,": "he", ...}

The answer is a function of the slot's value. Asked forward like this (value, then its answer),
small models name the right answer far more often than when asked for groups (an answer, then
the values that take it: Qwen2.5-0.5B wrote "English: Spanish, French, German").

The code expands every template with every ordered pair of values (v1, v2) whose answers differ:
clean = template(v1), corrupt = template(v2), answer = " " + answer(v1), wrong = " " + answer(v2).
Each candidate is validated on the subject model (aligned tokens, single-token answers, clean
logit difference > 0, corruption drop >= margin).

The command is bounded: at most `max_llm_calls` LLM calls, in rounds of CALLS_PER_ROUND (the
frame and its answers), and `time_budget` seconds, and it stops early, with the reasons, when the first
round yields no valid item.
"""

from __future__ import annotations

import random
import re
import time
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from ..errors import BudgetExceeded, DatasetError, LLMError, UsageError
from .items import PairItem
from .validate import REASON_WORDS, token_ids, validate_items

_SLOT = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_ ]{0,23}?)\s*\}")
_MARKUP = re.compile(r'[{}\[\]"\n:\\]')   # a value holding these is not a word or a name (and breaks the answers' keys)
MAX_VALUE, MAX_ANSWER, MAX_TEMPLATE = 32, 20, 72


class Value(BaseModel):
    value: str = Field(max_length=MAX_VALUE)     # what fills the key slot
    answer: str = Field(max_length=MAX_ANSWER)   # the word that comes next when the slot holds `value`


# The schema's counts (minItems/maxItems) and uniqueItems bind a constrained decoder only;
# pydantic does not check them, and a free-form reply is cut and cleaned by clean_frame instead.
# No `pattern`s: lm-format-enforcer caches no allowed-token list for a string under a pattern,
# so every token of such a string walks the whole vocabulary in Python (seconds a token for
# SmolLM2's 49k tokens; a reply took > 3 minutes). Free strings take its fast path.


class Frame(BaseModel):
    """What the LLM is asked for first: the slot, 6-8 values for it, 2-3 templates holding it
    (under a constrained decoder; uniqueItems: no value or template twice). The values come
    right after the slot's name: written after the templates, Qwen2.5-0.5B listed what the
    sentences lead to (languages for a slot named "country") instead of what fills them."""

    slot: str = Field(max_length=20)
    values: list[Annotated[str, Field(max_length=MAX_VALUE)]] = Field(
        max_length=10, json_schema_extra={"minItems": 6, "maxItems": 8, "uniqueItems": True})
    templates: list[Annotated[str, Field(max_length=MAX_TEMPLATE)]] = Field(
        max_length=5, json_schema_extra={"minItems": 2, "maxItems": 3, "uniqueItems": True})

    @field_validator("templates", "values", mode="before")
    @classmethod
    def _cap(cls, v, info):   # a free-form reply (no schema enforced) longer than the bounds is cut, not refused
        cap, width = {"templates": (5, MAX_TEMPLATE), "values": (10, MAX_VALUE)}[info.field_name]
        if isinstance(v, list):
            v = [x[:width] if isinstance(x, str) else x for x in v[:cap]]
        return v


def answers_schema(sentences: list[str]) -> dict:
    """The second request's schema: one key per filled template (in order, so the decoder forces
    each key and the LLM writes only the answers), each a short string."""
    return {"title": "Answers", "type": "object",
            "properties": {s: {"type": "string", "maxLength": MAX_ANSWER} for s in sentences},
            "required": list(sentences), "additionalProperties": False}


class Plan(BaseModel):
    """What is left once the unusable parts are dropped."""

    templates: list[str]                    # the slot normalised to {name}: each holds the key slot once
    slot: str
    values: list[Value]


def _norm(name: str) -> str:
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


def _drop(dropped: dict[str, int], reason: str, n: int = 1) -> None:
    dropped[reason] = dropped.get(reason, 0) + n


def clean_frame(frame: Frame, examples: set[str] = frozenset()) -> tuple[str, list[str], list[str], dict[str, int]]:
    """(slot, usable templates, usable values, counts of what was dropped and why in words).
    `examples`: the templates of the prompt's own few-shot answers, as _shape gives them (a small
    model copies them: SmolLM2 answered "the day of the week after a given day" with the
    capital-city example, Qwen2.5-0.5B wrote "Tom said it was not {day} but")."""
    dropped: dict[str, int] = {}
    key = _norm(frame.slot) or "x"
    values: list[str] = []
    seen: set[str] = set()
    for x in frame.values:
        x = (x or "").strip()
        if not x:
            _drop(dropped, "value empty")
        elif _MARKUP.search(x):
            _drop(dropped, "value with braces, brackets, quotes or a colon")
        elif x.lower() in seen:
            _drop(dropped, "value repeated")
        else:
            seen.add(x.lower())
            values.append(x)
    templates: list[str] = []
    for raw in frame.templates:
        if _shape(raw or "") in examples:
            _drop(dropped, "template copied from the prompt's examples")
            continue
        t = _SLOT.sub(lambda m: "{" + _norm(m.group(1)) + "}", (raw or "").strip())
        names = sorted(set(_SLOT.findall(t)))
        if len(names) == 1:                 # the one slot (maybe in two places) is the key, whatever it is called
            t = t.replace("{" + names[0] + "}", "{" + key + "}")
        elif not names:                     # a concrete sentence: the one listed value it holds becomes the slot
            t, names = _slot_from_value(t, values, key)
        if not names:
            _drop(dropped, "template without the {slot}")
        elif len(names) > 1:
            _drop(dropped, "template with more than one slot")
        elif t.endswith("}"):
            _drop(dropped, "template ends with a slot")
        elif t in templates:
            _drop(dropped, "template repeated")
        else:
            templates.append(t)
    return key, templates, values, dropped


def fill(template: str, slot: str, value: str) -> str:
    return template.replace("{" + slot + "}", value)


def answer_keys(template: str, slot: str, values: list[str]) -> list[str]:
    """The answers request's keys: the template filled with each value, a double quote written as
    a single one (lm-format-enforcer cannot force a key holding an escaped quote)."""
    return [" ".join(fill(template, slot, v).replace('"', "'").split()) for v in values]


def plan_from(slot: str, templates: list[str], values: list[str], answers: list,
              dropped: dict[str, int]) -> Plan:
    """The plan once the answers are in (answers[i]: the next word the LLM wrote after values[i]'s
    sentence, or None). Counts what is dropped in `dropped`."""
    out: list[Value] = []
    for x, a in zip(values, answers):
        a = a.strip().split("\n")[0].strip() if isinstance(a, str) else ""
        if not a:
            _drop(dropped, "answer empty")
        elif a.lower() == x.lower():        # a copy, not a map (SmolLM2: Monday -> Monday for "the day after")
            _drop(dropped, "answer repeats the value")
        else:
            out.append(Value(value=x, answer=a[:MAX_ANSWER]))
    if out and len({v.answer.lower() for v in out}) < 2:
        _drop(dropped, "all values have the same answer")
    return Plan(templates=templates, slot=slot, values=out)


def _slot_from_value(t: str, values: list[str], key: str) -> tuple[str, list[str]]:
    """A template written as a concrete sentence ("The capital of France is") with the one listed
    value it holds, once and as whole words, replaced by the slot; else (t, [])."""
    hits = [(v, list(re.finditer(r"(?<!\w)" + re.escape(v) + r"(?!\w)", t, re.I))) for v in values]
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
    for ti, i, j in combos:
        if len(out) >= n:
            break
        t = plan.templates[ti]
        a, b = vals[i], vals[j]
        clean, corrupt = fill(t, plan.slot, a.value), fill(t, plan.slot, b.value)
        if n_tokens is not None:
            if (ti, i) not in counts:
                counts[(ti, i)] = n_tokens(clean)
            if (ti, j) not in counts:
                counts[(ti, j)] = n_tokens(corrupt)
            if counts[(ti, i)] != counts[(ti, j)]:
                if dropped is not None:
                    _drop(dropped, "pair with different token counts (subject tokenizer)")
                continue
        out.append(PairItem(clean=clean, corrupt=corrupt, answer=" " + a.answer, wrong=" " + b.answer,
                            meta={"template": ti, "x": a.value, "x_corrupt": b.value, "source": "llm"}))
    return out


def _shape(template: str) -> str:
    """A template without its slot's name, lower case ("Tom said it was not {} but")."""
    return " ".join(_SLOT.sub("{}", template).lower().split())


def example_templates() -> set[str]:
    """The templates in the frame prompt's few-shot answers, as _shape gives them."""
    import json

    from ..llm import load_prompt

    out: set[str] = set()
    for role, body in load_prompt("pairs_frame_chat").sections:
        if role == "assistant":
            try:
                out |= {_shape(t) for t in json.loads(body).get("templates", []) if isinstance(t, str)}
            except (ValueError, AttributeError):
                continue
    return out


def ask_frame(llm, task: str, *, n_templates: int = 3, n_values: int = 8, seed: int = 0) -> Frame:
    from ..llm import load_prompt

    p = load_prompt("pairs_frame_chat")
    msgs = p.render(task=task.strip(), n_templates=n_templates, n_values=n_values)
    return llm.structured(msgs, Frame, template=p, max_tokens=200, seed=seed, temperature=0.0 if seed == 0 else 0.7)


def ask_answers(llm, task: str, sentences: list[str], *, seed: int = 0) -> dict:
    """{sentence: the next word} for each sentence (greedy: the answers are facts, not variety)."""
    from ..llm import load_prompt

    p = load_prompt("pairs_answers_chat")
    msgs = p.render(task=task.strip(), sentences="\n".join(sentences))
    # the forced keys count as generated tokens: room for every key at a token a character (the
    # worst case, a byte-level tokenizer) plus its answer; the reply ends by itself when it closes
    return llm.structured(msgs, answers_schema(sentences), template=p,
                          max_tokens=sum(len(s) + 16 for s in sentences) + 32, seed=seed, temperature=0.0)


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


CALLS_PER_ROUND = 2   # the frame and its answers


def llm_pairs(hm, llm, task: str, n: int, *, seed: int = 0, margin: float = 1.0, batch_size: int = 32,
              max_llm_calls: int = 6, time_budget: float | None = 300.0, n_templates: int = 3,
              n_values: int = 8, progress=None) -> tuple[list[PairItem], dict, dict[str, Any]]:
    """(validated items, stats, settings) for a task described in words. Asks the LLM in rounds
    (a frame, then its answers; later rounds sample with other seeds) until n items pass, the next
    round would pass `max_llm_calls` calls, or `time_budget` seconds pass. Raises DatasetError
    with the rejection reasons, 3 rejected examples and what to try when the first round yields
    no valid item (early stop) or when nothing passed at the end."""
    if max_llm_calls < CALLS_PER_ROUND:
        raise UsageError(f"--max-llm-calls must be at least {CALLS_PER_ROUND} (the frame and its answers)")
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

    rounds = int(max_llm_calls) // CALLS_PER_ROUND
    copied = example_templates()
    for r in range(rounds):
        if time_budget is not None and r > 0 and time.monotonic() - t0 >= time_budget:
            stats["stopped"] = f"time budget of {time_budget:g} s spent"
            break
        try:
            stats["llm_calls"] += 1
            frame = ask_frame(llm, task, n_templates=n_templates, n_values=n_values, seed=seed + r)
            key, tmpl, vals, dropped = clean_frame(frame, copied)
            answers: list = []
            if tmpl and vals:
                stats["llm_calls"] += 1
                keys = answer_keys(tmpl[0], key, vals)
                got = ask_answers(llm, task, keys, seed=seed + r)
                answers = [got.get(k) for k in keys]
            elif vals:
                _drop(dropped, "value without a usable template", len(vals))
                vals = []
        except BudgetExceeded:
            raise
        except LLMError as e:
            stats["llm_error"] = str(e)
            if r == 0:      # nothing was validated: the LLM failed, not the items (one line, not exit 2)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                what = "first LLM call" if stats["llm_calls"] == 1 else "LLM call for the answers"
                raise LLMError(f"pairs for {task!r}: the {what} failed ({spent()}): {first}") from None
            continue
        plan = plan_from(key, tmpl, vals, answers, dropped)
        for k, v in dropped.items():
            _drop(stats["llm_dropped"], k, v)
        if slot is None or plan.slot == slot:   # answers from later rounds join when they name the same slot
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
            _drop(stats["rejected"], reason, c)
        if progress is not None:
            progress(f"round {r + 1}: {len(plan.templates)} templates, {len(plan.values)} values with answers -> "
                     f"{len(cands)} candidates, {s['accepted']} valid ({spent()})")
        if len(kept) >= n:
            break
        if r == 0 and not kept:
            stats["stopped"] = "the first round of LLM answers yielded no valid item"
            raise DatasetError(failure_message(task, _public(stats, examples), spent()))
    else:
        if len(kept) < n:
            stats["stopped"] = f"--max-llm-calls {max_llm_calls} reached"
    stats = _public(stats, examples)
    if not kept:
        raise DatasetError(failure_message(task, stats, spent()))
    stats["kept"] = min(n, len(kept))
    stats["seconds"] = round(time.monotonic() - t0, 1)
    # the LLM's value -> answer map behind the kept items: validation checks that the subject
    # follows it, not that it is true, so it is shown for a reader to check
    stats["map"] = {x: a for it in kept[:n] for x, a in ((it.meta["x"], it.answer.strip()),
                                                          (it.meta["x_corrupt"], it.wrong.strip()))}
    settings = {"llm": getattr(llm, "name", None) or type(llm).__name__, "slot": slot, "templates": templates,
                "values": [v.model_dump() for v in values], "prompts": ["pairs_frame_chat", "pairs_answers_chat"],
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
