"""LLM-written counterfactual pairs: the LLM supplies what it is good at, the code does the rest.

The LLM is asked (prompts/pairs_chat.txt, structured output) for a small JSON object:
    {"templates": ["The capital of {X} is", ...], "fillers": [{"x": "France", "answer": "Paris"}, ...]}
The code composes items from every template and every ordered pair of fillers (x1, x2) whose
answers differ: clean = template(x1), corrupt = template(x2), answer = " " + answer(x1), wrong =
" " + answer(x2) (the corrupt prompt's own answer, so the corruption flips the preference).
Candidates are then validated on the subject model like any other item. Small local models
(SmolLM2-135M) manage this small schema; ill-formed templates and fillers are dropped and counted.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import BaseModel, Field

from ..errors import LLMError
from .items import PairItem
from .validate import validate_items

SLOT = "{X}"


class Filler(BaseModel):
    x: str
    answer: str


class TaskSpec(BaseModel):
    templates: list[str] = Field(default_factory=list)
    fillers: list[Filler] = Field(default_factory=list)


def clean_spec(spec: TaskSpec) -> tuple[list[str], list[Filler], dict[str, int]]:
    """Usable templates and fillers, and counts of what was dropped and why."""
    dropped: dict[str, int] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    templates = []
    for t in spec.templates:
        t = re.sub(r"\{\s*[xX]\s*\}", SLOT, (t or "").strip())
        t = t.rstrip()
        if SLOT not in t:
            drop("template_without_slot")
        elif t.endswith(SLOT):
            drop("template_ends_with_slot")
        elif t in templates:
            drop("template_duplicate")
        else:
            templates.append(t)
    fillers, seen = [], set()
    for f in spec.fillers:
        x, a = f.x.strip(), f.answer.strip().split("\n")[0].strip()
        if not x or not a:
            drop("filler_empty")
        elif x.lower() in seen:
            drop("filler_duplicate")
        else:
            seen.add(x.lower())
            fillers.append(Filler(x=x, answer=a))
    return templates, fillers, dropped


def compose(templates: list[str], fillers: list[Filler], n: int, seed: int = 0) -> list[PairItem]:
    """Up to n candidate items (random sample of template x ordered filler pairs with different answers)."""
    combos = [(ti, i, j) for ti in range(len(templates)) for i in range(len(fillers)) for j in range(len(fillers))
              if i != j and fillers[i].answer.lower() != fillers[j].answer.lower()]
    random.Random(seed).shuffle(combos)
    out = []
    for ti, i, j in combos[:n]:
        t, a, b = templates[ti], fillers[i], fillers[j]
        out.append(PairItem(clean=t.replace(SLOT, a.x), corrupt=t.replace(SLOT, b.x), answer=" " + a.answer,
                            wrong=" " + b.answer, meta={"template": ti, "x": a.x, "x_corrupt": b.x, "source": "llm"}))
    return out


def ask_spec(llm, task: str, *, n_templates: int = 4, n_fillers: int = 10, seed: int = 0) -> TaskSpec:
    from ..llm import load_prompt

    p = load_prompt("pairs_chat")
    msgs = p.render(task=task.strip(), n_templates=n_templates, n_fillers=n_fillers)
    return llm.structured(msgs, TaskSpec, template=p, max_tokens=700, seed=seed)


def llm_pairs(hm, llm, task: str, n: int, *, seed: int = 0, margin: float = 1.0, batch_size: int = 32,
              rounds: int = 3, n_templates: int = 4, n_fillers: int = 10) -> tuple[list[PairItem], dict, dict[str, Any]]:
    """(validated items, stats, settings) for a task described in words. Asks the LLM up to `rounds`
    times (different seeds) until n items pass validation."""
    kept: list[PairItem] = []
    stats: dict[str, Any] = {"candidates": 0, "accepted": 0, "rejected": {}, "margin": margin}
    all_templates: list[str] = []
    all_fillers: list[Filler] = []
    dropped_total: dict[str, int] = {}
    seen: set = set()
    errors = []
    for r in range(rounds):
        try:
            spec = ask_spec(llm, task, n_templates=n_templates, n_fillers=n_fillers, seed=seed + r)
        except LLMError as e:
            errors.append(str(e))
            continue
        templates, fillers, dropped = clean_spec(spec)
        for k, v in dropped.items():
            dropped_total[k] = dropped_total.get(k, 0) + v
        all_templates += [t for t in templates if t not in all_templates]
        known = {f.x.lower() for f in all_fillers}
        all_fillers += [f for f in fillers if f.x.lower() not in known]
        cands = [c for c in compose(all_templates, all_fillers, 3 * n + 16, seed=seed + r) if c.key() not in seen]
        k, s = validate_items(hm, cands, margin=margin, batch_size=batch_size, seen=seen)
        kept += k
        stats["candidates"] += s["candidates"]
        stats["accepted"] += s["accepted"]
        for reason, c in s["rejected"].items():
            stats["rejected"][reason] = stats["rejected"].get(reason, 0) + c
        if len(kept) >= n:
            break
    if not all_templates and errors:
        raise LLMError(f"the LLM gave no usable templates for {task!r}: {errors[-1]}")
    stats["kept"] = min(n, len(kept))
    stats["llm_dropped"] = dropped_total
    settings = {"llm": getattr(llm, "name", None) or type(llm).__name__, "templates": all_templates,
                "fillers": [f.model_dump() for f in all_fillers], "prompt": "pairs_chat"}
    return kept[:n], stats, settings
