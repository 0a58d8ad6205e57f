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

from ..core.files import write_output
from ..core.lines import bounded_lines, decode_utf8, json_lines
from ..errors import DatasetError, UsageError
from .items import PairItem

FORMATS = ("jsonl", "auto-circuit")
MAX_LINE_BYTES = 1 << 20          # a JSONL item line
MAX_DOC_BYTES = 64 << 20          # an auto-circuit document (parsed whole)
MAX_TEXT_CHARS = 20_000           # one prompt or answer


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


def export_items(items: Iterable[PairItem], path: str | Path, fmt: str = "jsonl", force: bool = False) -> Path:
    """Write the items to `path` (never over an existing file unless force; core/files.py)."""
    return write_output(path, dumps(items, fmt), force=force, option="--out")


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
    for k in ("clean", "corrupt", "answer", "wrong"):
        if isinstance(d[k], str) and len(d[k]) > MAX_TEXT_CHARS:
            raise DatasetError(f"{where}: field {k} has {len(d[k]):,} characters, over the {MAX_TEXT_CHARS:,} limit")
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
    return _parse_lines(enumerate(text.splitlines(), 1), name)


def _parse_lines(lines, name: str) -> tuple[list[PairItem], list[int]]:
    items, nums = [], []
    for n, obj in json_lines(lines, lambda n: f"{name} line {n}"):
        items.append(_item(obj, f"{name} line {n}"))
        nums.append(n)
    if not items:
        raise DatasetError(f"{name}: no items")
    return items, nums


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


def _file_lines(path: Path):
    """(line number, line) of a JSONL file; a line over MAX_LINE_BYTES is refused without being read whole."""
    def too_long(n):
        return DatasetError(f"{path} line {n}: longer than {MAX_LINE_BYTES >> 10} kB; a pair item is four short "
                            "texts (a longer prompt would not fit the model anyway)")
    with open(path, "rb") as f:
        for n, _pos, raw in bounded_lines(f, MAX_LINE_BYTES, too_long):
            yield n, decode_utf8(raw, f"{path} line {n}")


def read_items(path: str | Path) -> tuple[list[PairItem], list[int], str]:
    """(items, the line where each starts, format) from a .jsonl or auto-circuit .json file.
    Memory is bounded: JSONL is read a line at a time with lines capped at MAX_LINE_BYTES, an
    auto-circuit document (parsed whole) is capped at MAX_DOC_BYTES, and each text at MAX_TEXT_CHARS."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such file {path}")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    text_head = head.decode("utf-8", errors="ignore")
    first = next((ln for ln in text_head.splitlines() if ln.strip()), "")
    first_doc = _loads(first)
    if (isinstance(first_doc, dict) and "prompts" in first_doc) or \
            (first_doc is None and '"prompts"' in text_head[:300]):
        size = path.stat().st_size
        if size > MAX_DOC_BYTES:
            raise DatasetError(f"{path}: an auto-circuit file of {size >> 20} MB is over the {MAX_DOC_BYTES >> 20} MB "
                               "limit; use JSON lines (.jsonl), which are read a line at a time")
        with open(path, "rb") as f:
            text = decode_utf8(f.read(), str(path))
        return (*parse_auto_circuit(text, str(path)), "auto-circuit")
    return (*_parse_lines(_file_lines(path), str(path)), "jsonl")


def _loads(line: str):
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
