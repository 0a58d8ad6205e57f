"""The task pipeline's verbs: make a validated dataset (built-in or LLM-written), import, export, load."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from ..errors import DatasetError, UsageError
from ..core.keys import content_hash
from .builtin import builtin_name, generate_builtin
from .io import export_items, read_items
from .items import Dataset, PairItem
from .validate import STRUCTURAL, token_ids, validate_items


def dataset_hash(items: list[PairItem]) -> str:
    return content_hash([list(it.key()) for it in items])


def _tokenize_fn(hm):
    return functools.partial(token_ids, hm)


def _merge_stats(total: dict | None, s: dict) -> dict:
    if total is None:
        return dict(s)
    total["candidates"] += s["candidates"]
    total["accepted"] += s["accepted"]
    for r, c in s["rejected"].items():
        total["rejected"][r] = total["rejected"].get(r, 0) + c
    return total


def builtin_pairs(hm, task: str, n: int, *, seed: int = 0, margin: float = 1.0, batch_size: int = 32,
                  max_rounds: int = 4) -> tuple[list[PairItem], dict]:
    """n validated items of a built-in task (fewer if the model rejects too many), and the stats."""
    tok = _tokenize_fn(hm)
    kept: list[PairItem] = []
    stats, done = None, 0
    want = 2 * n + 16
    seen: set = set()
    for _ in range(max_rounds):
        cands = generate_builtin(task, want, seed=seed, tokenize=tok)[done:]
        if not cands:
            break
        done += len(cands)
        k, s = validate_items(hm, cands, margin=margin, batch_size=batch_size, seen=seen)
        kept += k
        stats = _merge_stats(stats, s)
        if len(kept) >= n:
            break
        want *= 2
    stats = stats or {"candidates": 0, "accepted": 0, "rejected": {}, "margin": margin}
    stats["kept"] = min(n, len(kept))
    return kept[:n], stats


def slugify(text: str, max_len: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:max_len].rstrip("-") or "task"


def make_dataset(store, hm, task: str, n: int = 100, *, name: str | None = None, seed: int = 0, margin: float = 1.0,
                 llm=None, batch_size: int = 32, replace: bool = False, max_llm_calls: int = 6,
                 time_budget: float | None = 300.0, progress=None) -> Dataset:
    """Make, validate on `hm` and store a dataset. A built-in task name (`ioi`, `greater_than`,
    `pronouns`, `successor`, `capitals`) uses the hand-written generator; any other text is a task
    description given to the LLM (which writes templates with named slots and the answer for each
    slot value; the code composes and validates items), bounded by `max_llm_calls` and
    `time_budget` seconds (see tasks/llm_pairs.py)."""
    if n < 1:
        raise UsageError("--n must be at least 1")
    bname = builtin_name(task)
    settings: dict[str, Any] = {"seed": seed, "margin": margin, "n": n}
    if bname is not None:
        items, stats = builtin_pairs(hm, bname, n, seed=seed, margin=margin, batch_size=batch_size)
        source, task_name = "builtin", bname
    else:
        if llm is None:
            raise UsageError(f"{task!r} is not a built-in task ({', '.join(_builtins())}); "
                             "a described task needs an LLM (--llm)")
        from .llm_pairs import llm_pairs

        items, stats, extra = llm_pairs(hm, llm, task, n, seed=seed, margin=margin, batch_size=batch_size,
                                        max_llm_calls=max_llm_calls, time_budget=time_budget, progress=progress)
        settings.update(extra)
        source, task_name = "llm", task
    name = name or (bname or slugify(task))
    if not items:
        raise DatasetError(f"no item of {task_name!r} passed validation on {hm.spec} "
                           f"(rejections: {stats['rejected']}); try a lower --margin or another task")
    store.put_model(hm.spec, hm.info())
    h = dataset_hash(items)
    store.put_dataset(name, task_name, source, items, model_id=hm.spec, stats=stats, settings=settings, hash=h,
                      replace=replace)
    return Dataset(name=name, task=task_name, source=source, model_id=hm.spec, items=items, stats=stats)


def _builtins() -> list[str]:
    from .builtin import BUILTIN_TASKS

    return list(BUILTIN_TASKS)


def import_dataset(store, hm, path: str | Path, *, name: str | None = None, margin: float | None = None,
                   batch_size: int = 32, replace: bool = False) -> Dataset:
    """Import a .jsonl or auto-circuit file, validated on `hm`, as one transaction.

    A malformed line, or an item whose clean/corrupt prompts do not line up (token counts,
    tokens changed outside the edit, multi-token answers) is a DatasetError naming its line and
    nothing is stored. Items the model does not get right (clean logit diff <= 0, or a corruption
    that moves it by less than `margin`; margin None = 0, i.e. any drop) are dropped and counted."""
    path = Path(path)
    items, lines, fmt = read_items(path)
    kept, stats = validate_items(hm, items, margin=0.0 if margin is None else margin, batch_size=batch_size,
                                 strict_lines=lines, source=str(path))
    stats["kept"] = len(kept)
    if not kept:
        raise DatasetError(f"{path}: no item passed validation on {hm.spec} (rejections: {stats['rejected']})")
    name = name or slugify(path.stem)
    store.put_model(hm.spec, hm.info())
    store.put_dataset(name, "import:" + path.name, "import", kept, model_id=hm.spec, stats=stats,
                      settings={"file": str(path), "format": fmt, "margin": margin}, hash=dataset_hash(kept),
                      replace=replace)
    return Dataset(name=name, task="import:" + path.name, source="import", model_id=hm.spec, items=kept, stats=stats)


def get_dataset(store, name: str) -> Dataset:
    d = store.get_dataset(name)
    if d is None:
        names = [r["name"] for r in store.list_datasets()]
        raise DatasetError(f"no dataset {name!r} in {store.path}" + (f" (have: {', '.join(names[:10])})" if names else
                                                                     " (make one with `autointerp pairs --task ioi`)"))
    items = [PairItem(clean=r["clean"], corrupt=r["corrupt"], answer=r["answer"], wrong=r["wrong"], meta=r["meta"],
                      clean_logit_diff=r["clean_logit_diff"], corrupt_logit_diff=r["corrupt_logit_diff"]) for r in d["items"]]
    return Dataset(name=d["name"], task=d["task"], source=d["source"], model_id=d["model_id"], items=items,
                   stats=d["stats"], created_at=d["created_at"])


def resolve_dataset(store, hm, name_or_file: str) -> Dataset:
    """A stored dataset by name, or a file imported (validated on hm) under a name derived from its content."""
    if store.get_dataset(name_or_file) is not None:
        return get_dataset(store, name_or_file)
    p = Path(name_or_file)
    if p.is_file():
        items, _, _ = read_items(p)
        name = f"{slugify(p.stem)}-{dataset_hash(items)[:8]}"
        if store.get_dataset(name) is not None:
            return get_dataset(store, name)
        return import_dataset(store, hm, p, name=name)
    return get_dataset(store, name_or_file)   # raises with the list of names


def export_dataset(ds: Dataset, path: str | Path, fmt: str = "jsonl", force: bool = False) -> Path:
    return export_items(ds.items, path, fmt, force=force)


__all__ = ["make_dataset", "import_dataset", "export_dataset", "get_dataset", "resolve_dataset", "builtin_pairs",
           "dataset_hash", "STRUCTURAL"]
