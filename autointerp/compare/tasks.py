"""Built-in tasks on two models: clean logit difference and accuracy of A vs B, per-item outliers.

Items are the task generator's candidates (tokenised for A, so fillers have A's token counts),
kept when they are well-formed for *both* models (answer and wrong answer single tokens after the
clean prompt) and not filtered on either model's behaviour, so neither model is favoured:
validating on A would make A's accuracy 1 by construction.

    LD      = logit(answer) - logit(wrong) at the clean prompt's last token
    accuracy = fraction of items with LD > 0
    outliers = the items where LD_B - LD_A is largest in size, with both values
"""

from __future__ import annotations

import functools

from pydantic import BaseModel

from ..errors import UsageError
from ..tasks import BUILTIN_TASKS, builtin_name, final_logit_diffs, generate_builtin
from ..tasks.validate import single_token_in_context, token_ids


class TaskDiff(BaseModel):
    task: str
    n_items: int
    logit_diff_a: float
    logit_diff_b: float
    accuracy_a: float
    accuracy_b: float
    outliers: list[dict]        # {clean, answer, wrong, ld_a, ld_b, delta}, largest |delta| first


def check_tasks(names: list[str]) -> list[str]:
    out = []
    for n in names:
        t = builtin_name(n)
        if t is None:
            raise UsageError(f"--tasks: unknown task {n!r}: use {', '.join(BUILTIN_TASKS)}")
        out.append(t)
    return out


def compare_task(hm_a, hm_b, task: str, *, n: int = 32, seed: int = 0, n_outliers: int = 5,
                 batch_size: int = 32) -> TaskDiff:
    """One built-in task on both models (module doc)."""
    task = builtin_name(task) or task          # "IOI " is ioi: one name in the result and the store
    tok = functools.partial(token_ids, hm_a)
    items, ids = [], []
    for it in generate_builtin(task, 3 * n + 8, seed=seed, tokenize=tok):
        got = [single_token_in_context(hm, it.clean, w) for hm in (hm_a, hm_b) for w in (it.answer, it.wrong)]
        if None in got or got[0] == got[1] or got[2] == got[3]:
            continue
        items.append(it)
        ids.append(got)
        if len(items) >= n:
            break
    if not items:
        raise UsageError(f"task {task}: no item is well-formed for both models (answers not single tokens)")
    cleans = [it.clean for it in items]
    ld_a = final_logit_diffs(hm_a, cleans, [g[0] for g in ids], [g[1] for g in ids], batch_size)
    ld_b = final_logit_diffs(hm_b, cleans, [g[2] for g in ids], [g[3] for g in ids], batch_size)
    rows = [{"clean": it.clean, "answer": it.answer, "wrong": it.wrong, "ld_a": round(a, 4), "ld_b": round(b, 4),
             "delta": round(b - a, 4)} for it, a, b in zip(items, ld_a, ld_b)]
    rows.sort(key=lambda r: -abs(r["delta"]))
    N = len(items)
    return TaskDiff(task=task, n_items=N, logit_diff_a=round(sum(ld_a) / N, 4), logit_diff_b=round(sum(ld_b) / N, 4),
                    accuracy_a=round(sum(x > 0 for x in ld_a) / N, 4), accuracy_b=round(sum(x > 0 for x in ld_b) / N, 4),
                    outliers=rows[:n_outliers])
