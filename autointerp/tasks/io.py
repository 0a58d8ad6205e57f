"""Export and import of counterfactual datasets.

Formats:
    jsonl          one item per line: {"clean", "corrupt", "answer", "wrong", "meta"?, ...}
    auto-circuit   one JSON document {"prompts": [{"clean", "corrupt", "answers": [..], "wrong_answers": [..]}]}
                   (the format of the auto-circuit library; one answer and one wrong answer per prompt)

Parsing errors name the line (of the file) where the bad item starts; nothing is returned from a
file that has any bad line, so an import is all or nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from pydantic import ValidationError

from ..errors import DatasetError, UsageError
from .items import PairItem

FORMATS = ("jsonl", "auto-circuit")


def item_to_json(it: PairItem) -> dict:
    d = {"clean": it.clean, "corrupt": it.corrupt, "answer": it.answer, "wrong": it.wrong}
    if it.meta:
        d["meta"] = it.meta
    if it.clean_logit_diff is not None:
        d["clean_logit_diff"] = it.clean_logit_diff
        d["corrupt_logit_diff"] = it.corrupt_logit_diff
    return d


def dumps(items: Iterable[PairItem], fmt: str = "jsonl") -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(item_to_json(it), ensure_ascii=False) + "\n" for it in items)
    if fmt == "auto-circuit":
        prompts = [{"clean": it.clean, "corrupt": it.corrupt, "answers": [it.answer], "wrong_answers": [it.wrong]}
                   for it in items]
        return json.dumps({"prompts": prompts}, indent=1, ensure_ascii=False) + "\n"
    raise UsageError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")


def export_items(items: Iterable[PairItem], path: str | Path, fmt: str = "jsonl") -> Path:
    path = Path(path)
    text = dumps(items, fmt)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _item(obj, where: str) -> PairItem:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object with clean, corrupt, answer, wrong; got {type(obj).__name__}")
    d = dict(obj)
    for key, single in (("answers", "answer"), ("wrong_answers", "wrong")):
        if key in d and single not in d:
            v = d.pop(key)
            if not isinstance(v, list) or len(v) != 1:
                n = len(v) if isinstance(v, list) else "not a list of"
                raise DatasetError(f"{where}: {key!r} has {n} entries; autointerp uses exactly one answer and one wrong answer per item")
            d[single] = v[0]
    missing = [k for k in ("clean", "corrupt", "answer", "wrong") if k not in d]
    if missing:
        raise DatasetError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    known = {k: d[k] for k in ("clean", "corrupt", "answer", "wrong", "meta", "clean_logit_diff", "corrupt_logit_diff") if k in d}
    extra = {k: v for k, v in d.items() if k not in known}
    if extra:
        known["meta"] = {**(known.get("meta") or {}), **extra}
    try:
        return PairItem.model_validate(known)
    except ValidationError as e:
        err = e.errors()[0]
        raise DatasetError(f"{where}: field {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def parse_jsonl(text: str, name: str = "<input>") -> tuple[list[PairItem], list[int]]:
    items, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{name} line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
        items.append(_item(obj, f"{name} line {n}"))
        lines.append(n)
    if not items:
        raise DatasetError(f"{name}: no items")
    return items, lines


def parse_auto_circuit(text: str, name: str = "<input>") -> tuple[list[PairItem], list[int]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{name} line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("prompts"), list):
        raise DatasetError(f"{name} line 1: an auto-circuit file is {{\"prompts\": [...]}}")
    # find the line where each prompt starts
    dec = json.JSONDecoder()
    pos = text.index("[", text.index('"prompts"'))  + 1
    starts: list[int] = []
    while len(starts) < len(doc["prompts"]):
        while text[pos] in " \t\r\n,":
            pos += 1
        starts.append(text.count("\n", 0, pos) + 1)
        _, pos = dec.raw_decode(text, pos)
    items = [_item(p, f"{name} line {ln} (prompts[{i}])") for i, (p, ln) in enumerate(zip(doc["prompts"], starts))]
    if not items:
        raise DatasetError(f"{name}: no prompts")
    return items, starts


def read_items(path: str | Path) -> tuple[list[PairItem], list[int], str]:
    """(items, the line where each starts, format) from a .jsonl or auto-circuit .json file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such file {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if (isinstance(doc, dict) and "prompts" in doc) or (doc is None and not _parses(first) and '"prompts"' in text[:300]):
        return (*parse_auto_circuit(text, str(path)), "auto-circuit")
    return (*parse_jsonl(text, str(path)), "jsonl")


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False
