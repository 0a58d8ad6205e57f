"""Validation of counterfactual items on the subject model (batched).

An item is kept only if, checked in this order (the first failure is its rejection reason):
    duplicate                 the same (clean, corrupt, answer, wrong) was seen before
    answer_equals_wrong       answer and wrong are the same string
    identical                 clean and corrupt are the same string
    length_mismatch           clean and corrupt tokenise to different numbers of tokens
    misaligned                a token differs outside the characters the corruption edited
                              (the tokenisation shifted; needs a fast tokenizer for offsets)
    answer_not_single_token   clean + answer does not tokenise as clean's tokens + one token
    wrong_not_single_token    the same for the wrong answer
    clean_logit_diff_not_positive   logit(answer) - logit(wrong) <= 0 on the clean prompt
    corruption_too_weak       clean logit diff - corrupt logit diff < margin
"""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Sequence

import torch

from ..errors import DatasetError
from .items import PairItem

REASONS = ["duplicate", "answer_equals_wrong", "identical", "length_mismatch", "misaligned",
           "answer_not_single_token", "wrong_not_single_token", "clean_logit_diff_not_positive", "corruption_too_weak"]
# problems of the item itself (not of the model's behaviour): an error on import
STRUCTURAL = {"answer_equals_wrong", "identical", "length_mismatch", "misaligned", "answer_not_single_token",
              "wrong_not_single_token"}
# the reasons in words, for reports ("answer not one token: 14; clean LD below margin: 9")
REASON_WORDS = {
    "duplicate": "duplicate",
    "answer_equals_wrong": "answer equals wrong answer",
    "identical": "clean equals corrupt",
    "length_mismatch": "clean/corrupt token counts differ",
    "misaligned": "tokens differ outside the edit",
    "answer_not_single_token": "answer not one token",
    "wrong_not_single_token": "wrong answer not one token",
    "clean_logit_diff_not_positive": "clean LD not above 0",
    "corruption_too_weak": "corruption drops LD by less than the margin",
}
EXPLAIN = {
    "answer_equals_wrong": "answer and wrong answer are the same",
    "identical": "clean and corrupt are the same text",
    "length_mismatch": "clean and corrupt have different token counts ({a} vs {b})",
    "misaligned": "clean and corrupt tokens differ outside the edited characters",
    "answer_not_single_token": "answer {x!r} is not a single token after the clean prompt",
    "wrong_not_single_token": "wrong answer {x!r} is not a single token after the clean prompt",
}


def token_ids(hm, text: str) -> list[int]:
    return hm.tokenizer(text, add_special_tokens=False)["input_ids"]


def single_token_in_context(hm, prompt: str, continuation: str) -> int | None:
    """The token id of `continuation` if prompt + continuation tokenises as prompt's tokens + one."""
    a, b = token_ids(hm, prompt), token_ids(hm, prompt + continuation)
    if len(b) == len(a) + 1 and b[: len(a)] == a:
        return int(b[-1])
    return None


def _edited_spans(a: str, b: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    sa, sb = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "equal":
            sa.append((i1, i2))
            sb.append((j1, j2))
    return sa, sb


def _touches(span: tuple[int, int], edits: list[tuple[int, int]]) -> bool:
    s, e = span
    return any(s <= e2 and i1 <= e for i1, e2 in edits)


def aligned(hm, clean: str, corrupt: str) -> bool | None:
    """True if clean/corrupt tokens differ only where the characters differ; None if the tokenizer
    gives no offsets."""
    tok = hm.tokenizer
    if not getattr(tok, "is_fast", False):
        return None
    ca = tok(clean, add_special_tokens=False, return_offsets_mapping=True)
    cb = tok(corrupt, add_special_tokens=False, return_offsets_mapping=True)
    if len(ca["input_ids"]) != len(cb["input_ids"]):
        return False
    ea, eb = _edited_spans(clean, corrupt)
    for k, (x, y) in enumerate(zip(ca["input_ids"], cb["input_ids"])):
        if x != y and not (_touches(ca["offset_mapping"][k], ea) and _touches(cb["offset_mapping"][k], eb)):
            return False
    return True


@torch.no_grad()
def final_logit_diffs(hm, texts: Sequence[str], answer_ids: Sequence[int], wrong_ids: Sequence[int],
                      batch_size: int = 32) -> list[float]:
    """logit(answer) - logit(wrong) at each text's last token (batched, right-padded)."""
    out: list[float] = []
    for s in range(0, len(texts), batch_size):
        ids, mask = hm.tokenize(list(texts[s:s + batch_size]))
        run = hm.forward(ids, mask, cache=["ln_final.out"], return_logits=False)
        last = mask.sum(1) - 1
        x = run.cache["ln_final.out"][torch.arange(ids.shape[0], device=ids.device), last]
        logits = hm.unembed(x).float()
        a = torch.as_tensor(answer_ids[s:s + batch_size], device=logits.device)
        w = torch.as_tensor(wrong_ids[s:s + batch_size], device=logits.device)
        r = torch.arange(len(a), device=logits.device)
        out += (logits[r, a] - logits[r, w]).tolist()
    return out


def validate_items(hm, items: Sequence[PairItem], *, margin: float = 1.0, batch_size: int = 32,
                   seen: set | None = None, strict_lines: Sequence[int] | None = None,
                   source: str = "<input>", examples: list | None = None) -> tuple[list[PairItem], dict]:
    """(kept items with their logit diffs filled in, stats). stats = {"candidates", "accepted",
    "rejected": {reason: count}, "margin"}; candidates == accepted + sum(rejected).

    strict_lines (one line number per item, for imports): a STRUCTURAL problem raises
    DatasetError naming the item's line instead of being counted. examples (a list): each
    rejected item is appended to it as (reason, item)."""
    rejected: Counter = Counter()
    seen = set() if seen is None else seen
    todo: list[tuple[PairItem, int, int]] = []
    for i, it in enumerate(items):
        reason = None
        if it.key() in seen:
            reason = "duplicate"
        elif it.answer == it.wrong:
            reason = "answer_equals_wrong"
        elif it.clean == it.corrupt:
            reason = "identical"
        if reason is None:
            ok = aligned(hm, it.clean, it.corrupt)
            if len(token_ids(hm, it.clean)) != len(token_ids(hm, it.corrupt)):
                reason = "length_mismatch"
            elif ok is False:
                reason = "misaligned"
        a = w = None
        if reason is None:
            a = single_token_in_context(hm, it.clean, it.answer)
            if a is None:
                reason = "answer_not_single_token"
        if reason is None:
            w = single_token_in_context(hm, it.clean, it.wrong)
            if w is None:
                reason = "wrong_not_single_token"
        seen.add(it.key())
        if reason in STRUCTURAL and strict_lines is not None:
            x = it.answer if reason.startswith("answer") else it.wrong
            msg = EXPLAIN[reason].format(a=len(token_ids(hm, it.clean)), b=len(token_ids(hm, it.corrupt)), x=x)
            raise DatasetError(f"{source} line {strict_lines[i]}: {msg} (as {hm.spec} tokenises it); nothing imported")
        if reason:
            rejected[reason] += 1
            if examples is not None:
                examples.append((reason, it))
        else:
            todo.append((it, a, w))
    kept: list[PairItem] = []
    if todo:
        a_ids = [a for _, a, _ in todo]
        w_ids = [w for _, _, w in todo]
        ld_clean = final_logit_diffs(hm, [it.clean for it, _, _ in todo], a_ids, w_ids, batch_size)
        ld_corr = final_logit_diffs(hm, [it.corrupt for it, _, _ in todo], a_ids, w_ids, batch_size)
        for (it, _, _), lc, lx in zip(todo, ld_clean, ld_corr):
            why = "clean_logit_diff_not_positive" if lc <= 0 else "corruption_too_weak" if lc - lx < margin else None
            if why:
                rejected[why] += 1
                if examples is not None:
                    examples.append((why, it.model_copy(update=dict(clean_logit_diff=round(lc, 4),
                                                                    corrupt_logit_diff=round(lx, 4)))))
            else:
                kept.append(it.model_copy(update=dict(clean_logit_diff=round(lc, 4), corrupt_logit_diff=round(lx, 4))))
    stats = {"candidates": len(items), "accepted": len(kept),
             "rejected": {r: rejected[r] for r in REASONS if rejected[r]}, "margin": margin}
    return kept, stats
